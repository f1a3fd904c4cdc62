"""Which examples the search labels (the cores); every other example is labelled by transfer.

A core is a seeded sample of the data whose demonstrations fill a token budget; whole
consistency groups (and both orders of a pair) stay together, so every constraint binds
examples that are labelled together. Units (a group, else a row) are drawn in a seeded order
from the row index, lazily: a core of thirty rows reads thirty rows of ten million, and the
same seed draws the same core. A dataset smaller than one core is all core.

Rows a person labelled (`--fixed`) join every core on top of its sample, with their labels held:
the search never changes them, and they are demonstrations like the rest. They fill a budget of
their own (`core.fixed_tokens`, default `core.max_tokens`), taken in seeded order, so that many
corrections neither crowd the searched sample out nor make prompts grow without bound; those past
it keep their labels in the output but are no demonstrations. The sample never draws a fixed row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

from ..foundation.config import CoreConfig
from ..data.row_index import RowIndex, seeded_order
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
    # Example id -> the label a person gave, for every fixed row (a demonstration or not).
    fixed: Mapping[int, int] = field(default_factory=dict)
    fixed_demos: int = 0  # fixed rows each core holds as demonstrations

    def core_examples(self) -> int:
        """Examples not transferred: the cores' (a fixed row is in every core) and every fixed one."""
        return len({i for c in self.cores for i in c.ids} | set(self.fixed))

    def core_rows(self) -> frozenset[int]:
        return frozenset(r for c in self.cores for r in c.rows)


def demo_cost(shape: TaskShape, count_tokens: Callable[[str], int]) -> Callable[[Example], int]:
    """Tokens an example takes as a demonstration (its input, the longest label, the separator)."""
    longest_word = max(count_tokens(" " + w) for w in shape.label_words)
    return lambda ex: count_tokens(ex.query) + longest_word + 2


def plan_run(index: RowIndex, shape: TaskShape, count_tokens: Callable[[str], int], core: CoreConfig,
             seed: int, fixed: Optional[Mapping[int, int]] = None, count: Optional[int] = None) -> RunPlan:
    """Fill `count` cores (default: those `core` plans up front; 0: none, every row is transferred)
    in turn from the units in seeded order, each up to `core.budget(c)` of demonstrations, plus the
    fixed rows' demonstrations; what is left is transferred. `fixed`: row -> the label (a label
    word's index) a person gave the row.

    Files are often sorted by label or source; a core must be a random sample of them.
    A unit larger than the whole budget still makes a core on its own (the backend then says
    the prompt does not fit the model's context).
    """
    total = index.count * shape.per_row
    fixed = fixed or {}
    held = {r * shape.per_row + k: y for r, label in fixed.items() for k, y in enumerate(shape.example_labels(label))}
    if count == 0:
        return RunPlan((), total, held)
    cost = demo_cost(shape, count_tokens)
    budget = core.max_tokens if core.fixed_tokens is None else core.fixed_tokens
    demos = fixed_demonstrations(index, shape, fixed, cost, budget, seed)
    units = _Units(index, shape, seed, _all_fixed(index, fixed))
    cores: list[Core] = []
    for c in range(core.planned if count is None else count):
        chosen: list[tuple[int, dict[str, Any], list[Example]]] = []
        used = 0
        while True:
            unit = units.peek()
            if unit is None:
                break
            size = sum(cost(ex) for _, _, examples in unit for ex in examples)
            if chosen and used + size > core.budget(c):
                break
            chosen.extend(unit)
            used += size
            units.take()
        if chosen:
            cores.append(make_core(shape, chosen + demos, held))
    return RunPlan(tuple(cores), total, held, len(demos) if cores else 0)


Chosen = list[tuple[int, dict[str, Any], list[Example]]]  # (row, fields, examples) per row


def fixed_demonstrations(index: RowIndex, shape: TaskShape, fixed: Mapping[int, int],
                         cost: Callable[[Example], int], budget: int, seed: int) -> Chosen:
    """The fixed rows every core holds: in seeded order (not the corrections file's) while their
    demonstrations fit `budget` tokens."""
    rows = sorted(fixed)
    taken: Chosen = []
    used = 0
    for k in seeded_order(len(rows), seed):
        r = rows[k]
        fields = index.read([r])[0].fields
        examples = shape.examples(r, fields)
        size = sum(cost(ex) for ex in examples)
        if used + size > budget:
            break
        taken.append((r, fields, examples))
        used += size
    return taken


def _all_fixed(index: RowIndex, fixed: Mapping[int, int]) -> Callable[[int], bool]:
    """Whether every row of a unit is fixed: the sample never draws it (it is in the core
    already, or past the fixed rows' budget)."""
    units = {index.unit_of(r) for r in fixed}
    return lambda unit: unit in units and all(r in fixed for r in index.unit_rows(unit))


class _Units:
    """The units in seeded order, each read once: (row, fields, examples) per row."""

    def __init__(self, index: RowIndex, shape: TaskShape, seed: int,
                 skip: Callable[[int], bool] = lambda _: False):
        self.index, self.shape = index, shape
        self.order: Iterator[int] = seeded_order(index.units(), seed, skip)
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


def make_core(shape: TaskShape, chosen: Sequence[tuple[int, dict[str, Any], list[Example]]],
              held: Optional[Mapping[int, int]] = None) -> Core:
    """A core of the chosen rows (a row chosen twice, fixed and in a drawn group, once);
    `held`: example id -> the label a person gave."""
    ordered = sorted({item[0]: item for item in chosen}.values(), key=lambda item: item[0])
    examples = tuple(ex for _, _, exs in ordered for ex in exs)
    ids = tuple(r * shape.per_row + k for r, _, exs in ordered for k in range(len(exs)))
    groups = tuple(shape.groups(examples))
    held = held or {}
    fixed = tuple(held.get(i) for i in ids) if any(i in held for i in ids) else ()
    problem = Problem(len(examples), len(shape.label_words), pair_constraints(groups),
                      tuple(ex.group for ex in examples), groups, fixed)
    return Core(tuple(r for r, _, _ in ordered), examples, ids, tuple(f for _, f, _ in ordered), problem)
