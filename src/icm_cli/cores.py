"""Which examples the search labels (the cores) and which are labelled by transfer.

A core is a seeded sample of the data whose demonstrations fill a token budget; whole
consistency groups (and both orders of a pair) stay together, so every constraint binds
examples that are labelled together. A dataset smaller than one core is all core.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .config import CoreConfig
from .search import Problem
from .tasks import Task


@dataclass(frozen=True)
class Core:
    indices: tuple[int, ...]  # example indices in the task, ascending
    problem: Problem


@dataclass(frozen=True)
class RunPlan:
    cores: tuple[Core, ...]
    targets: tuple[int, ...]  # examples in no core, ascending: labelled by transfer

    def core_examples(self) -> int:
        return sum(len(c.indices) for c in self.cores)


def units(task: Task) -> list[list[int]]:
    """The examples that must be labelled together: a consistency group, else a row's examples."""
    out: dict[object, list[int]] = {}
    for i, ex in enumerate(task.examples):
        key = ("group", ex.group) if ex.group is not None else ("row", ex.row)
        out.setdefault(key, []).append(i)
    return list(out.values())


def demo_cost(task: Task, count_tokens: Callable[[str], int]) -> Callable[[int], int]:
    """Tokens example i takes as a demonstration (its input, the longest label, the separator)."""
    longest_word = max(count_tokens(" " + w) for w in task.label_words)
    return lambda i: count_tokens(task.examples[i].query) + longest_word + 2


def plan_run(task: Task, count_tokens: Callable[[str], int], core: CoreConfig, seed: int,
             with_cores: bool = True) -> RunPlan:
    """Fill `core.count` cores in turn from the units in seeded order, each up to
    `core.max_tokens` of demonstrations; what is left is transferred.

    Files are often sorted by label or source; a core must be a random sample of them.
    A unit larger than the whole budget still makes a core on its own (the backend then says
    the prompt does not fit the model's context).
    """
    if not with_cores:
        return RunPlan((), tuple(range(len(task.examples))))
    order = units(task)
    random.Random(seed).shuffle(order)
    cost = demo_cost(task, count_tokens)
    cores: list[list[int]] = []
    position = 0
    for _ in range(core.count):
        chosen: list[int] = []
        used = 0
        while position < len(order):
            size = sum(cost(i) for i in order[position])
            if chosen and used + size > core.max_tokens:
                break
            chosen.extend(order[position])
            used += size
            position += 1
        if chosen:
            cores.append(chosen)
    rest = sorted(i for unit in order[position:] for i in unit)
    return RunPlan(tuple(make_core(task, sorted(c)) for c in cores), tuple(rest))


def make_core(task: Task, indices: list[int]) -> Core:
    local = {g: k for k, g in enumerate(indices)}
    constraints = tuple(
        type(c)(local[c.i], local[c.j], c.kind) for c in task.constraints if c.i in local and c.j in local
    )
    groups = tuple(task.examples[i].group for i in indices)
    return Core(tuple(indices), Problem(len(indices), len(task.label_words), constraints, groups))
