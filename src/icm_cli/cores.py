"""Which examples the search labels (the cores); every other example is labelled by transfer.

A core is a seeded sample of the data whose demonstrations fill a token budget; whole
consistency groups (and both orders of a pair) stay together, so every constraint binds
examples that are labelled together. Units (a group, else a row) are drawn in a seeded order
from the row index, lazily: a core of thirty rows reads thirty rows of ten million, and the
same seed draws the same core. A dataset smaller than one core is all core.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

from .config import CoreConfig
from .row_index import RowIndex, seeded_order
from .search import Problem
from .tasks import Example, TaskShape, pair_constraints


@dataclass(frozen=True)
class Core:
    rows: tuple[int, ...]  # row numbers in the run, ascending
    examples: tuple[Example, ...]  # the rows' examples, in row order
    ids: tuple[int, ...]  # the examples' ids in the run (row * examples per row + k)
    fields: tuple[dict[str, Any], ...]  # the rows' input fields, for output and the monitor
    problem: Problem


@dataclass(frozen=True)
class RunPlan:
    cores: tuple[Core, ...]
    examples: int  # every example of the run

    def core_examples(self) -> int:
        return sum(len(c.ids) for c in self.cores)

    def core_rows(self) -> frozenset[int]:
        return frozenset(r for c in self.cores for r in c.rows)


def demo_cost(shape: TaskShape, count_tokens: Callable[[str], int]) -> Callable[[Example], int]:
    """Tokens an example takes as a demonstration (its input, the longest label, the separator)."""
    longest_word = max(count_tokens(" " + w) for w in shape.label_words)
    return lambda ex: count_tokens(ex.query) + longest_word + 2


def plan_run(index: RowIndex, shape: TaskShape, count_tokens: Callable[[str], int], core: CoreConfig,
             seed: int, with_cores: bool = True) -> RunPlan:
    """Fill `core.count` cores in turn from the units in seeded order, each up to
    `core.max_tokens` of demonstrations; what is left is transferred.

    Files are often sorted by label or source; a core must be a random sample of them.
    A unit larger than the whole budget still makes a core on its own (the backend then says
    the prompt does not fit the model's context).
    """
    total = index.count * shape.per_row
    if not with_cores:
        return RunPlan((), total)
    cost = demo_cost(shape, count_tokens)
    units = _Units(index, shape, seed)
    cores: list[Core] = []
    for _ in range(core.count):
        chosen: list[tuple[int, dict[str, Any], list[Example]]] = []
        used = 0
        while True:
            unit = units.peek()
            if unit is None:
                break
            size = sum(cost(ex) for _, _, examples in unit for ex in examples)
            if chosen and used + size > core.max_tokens:
                break
            chosen.extend(unit)
            used += size
            units.take()
        if chosen:
            cores.append(make_core(shape, chosen))
    return RunPlan(tuple(cores), total)


class _Units:
    """The units in seeded order, each read once: (row, fields, examples) per row."""

    def __init__(self, index: RowIndex, shape: TaskShape, seed: int):
        self.index, self.shape = index, shape
        self.order: Iterator[int] = seeded_order(index.units(), seed)
        self._next: Optional[list[tuple[int, dict[str, Any], list[Example]]]] = None

    def peek(self) -> Optional[list[tuple[int, dict[str, Any], list[Example]]]]:
        if self._next is None:
            unit = next(self.order, None)
            if unit is None:
                return None
            rows = self.index.unit_rows(unit)
            self._next = [(r, row.fields, self.shape.examples(r, row.fields))
                          for r, row in zip(rows, self.index.read(rows))]
        return self._next

    def take(self) -> None:
        self._next = None


def make_core(shape: TaskShape, chosen: Sequence[tuple[int, dict[str, Any], list[Example]]]) -> Core:
    ordered = sorted(chosen, key=lambda item: item[0])
    examples = tuple(ex for _, _, exs in ordered for ex in exs)
    ids = tuple(r * shape.per_row + k for r, _, exs in ordered for k in range(len(exs)))
    groups = tuple(shape.groups(examples))
    problem = Problem(len(examples), len(shape.label_words), pair_constraints(groups),
                      tuple(ex.group for ex in examples), groups)
    return Core(tuple(r for r, _, _ in ordered), examples, ids, tuple(f for _, f, _ in ordered), problem)
