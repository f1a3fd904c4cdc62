"""Turning input rows into the examples ICM labels, their consistency, and back into row labels.

- classification: one example per row, labelled with one of the label words.
- claims: one True/False example per row; rows in one consistency group with different
  keys (e.g. different final answers) cannot both be true, with equal keys must agree.
- comparison: two examples per row, the pair in both orders; exactly one order is true.
Consistency comes from input fields only, never from gold. It is kept per group: a chunk of a
run looks only at its own groups, and a claims group is repaired as a group (`consistency`).
The search alone reads it as pairs (ConsistencyFix repairs a pair at a time), and only on its
core, which is small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from ..foundation.config import TaskConfig
from ..data.tables import Dataset, field_list, text_field
from ..foundation.errors import InputError
from ..foundation.prompts import render, template_fields
from ..data.row_index import RowCheck
from .search import TRUE, ConsistencyGroup, Constraint
from ..data.sources import Row, Source


@dataclass(frozen=True)
class Example:
    row: int  # the row's number in the run (0-based, input order)
    query: str
    group: Optional[str]
    key: Optional[str]
    swapped: bool = False  # comparison: the pair in its second order


class TaskShape:
    """How a row becomes examples, for one task config; checks rows as it reads them."""

    def __init__(self, config: TaskConfig):
        self.config = config
        self.needed = template_fields(config.template)
        self.label_words = tuple(config.labels)
        self.calibrate = config.calibrated()
        self.per_row = 2 if config.type == "comparison" else 1
        self.check = _Check(self)

    def examples(self, row: int, fields: dict[str, Any], where: str = "") -> list[Example]:
        """The examples of row number `row`; `where` names it in error messages."""
        config = self.config
        values = {name: text_field(where, fields, name, "used by the template") for name in self.needed}
        group = _optional(where, fields, config.group_field, "consistency group")
        key = _optional(where, fields, config.key_field, "consistency key")
        if config.type == "comparison":
            first, second = config.pair_fields  # type: ignore[misc]
            a = text_field(where, fields, first, "first candidate")
            b = text_field(where, fields, second, "second candidate")
            pair_group = group if group is not None else f"row{row}"
            return [Example(row, render(config.template, {**values, first: a, second: b}), pair_group, "ab"),
                    Example(row, render(config.template, {**values, first: b, second: a}), pair_group, "ba", True)]
        return [Example(row, render(config.template, values), group, key)]

    def example_labels(self, label: int) -> list[int]:
        """A row's label (a label word's index) as its examples' labels: a comparison's second
        order is true exactly when the first is not."""
        if self.per_row == 2:
            return [label, 1 - label]
        return [label]

    def groups(self, examples: Sequence[Example]) -> list[ConsistencyGroup]:
        """The consistency groups among `examples` (positions in the list)."""
        if self.config.type == "comparison":
            by_row: dict[int, list[int]] = {}
            for k, ex in enumerate(examples):
                by_row.setdefault(ex.row, []).append(k)
            return [ConsistencyGroup("pair", tuple(m)) for m in by_row.values() if len(m) == 2]
        if self.config.type != "claims" or self.config.key_field is None:
            return []
        by_group: dict[str, list[int]] = {}
        for k, ex in enumerate(examples):
            if ex.group is not None:
                by_group.setdefault(ex.group, []).append(k)
        return [ConsistencyGroup("claims", tuple(m), tuple(examples[k].key or "" for k in m))
                for m in by_group.values() if len(m) > 1]


def pair_constraints(groups: Sequence[ConsistencyGroup]) -> tuple[Constraint, ...]:
    """The groups as ConsistencyFix's pairs (quadratic in a group's size: for cores only)."""
    return tuple(c for g in groups for c in g.pairs())


class _Check(RowCheck):
    def __init__(self, shape: TaskShape):
        self.shape = shape
        self.fields = shape.needed

    def __call__(self, source: Source, row: Row) -> Optional[str]:
        examples = self.shape.examples(0, row.fields, source.at(row))
        return examples[0].group if self.shape.config.group_field is not None else None


def _optional(where: str, fields: dict[str, Any], name: Optional[str], purpose: str) -> Optional[str]:
    if name is None:
        return None
    return text_field(where, fields, name, purpose)


# ---- a whole (small) dataset at once: cores, `icm compare`, tests


@dataclass(frozen=True)
class Task:
    examples: tuple[Example, ...]
    label_words: tuple[str, ...]
    constraints: tuple[Constraint, ...]
    calibrate: bool


def build_task(dataset: Dataset, task: TaskConfig) -> Task:
    shape = TaskShape(task)
    present: dict[str, None] = {}
    for row in dataset.rows:
        present.update(dict.fromkeys(row.fields))
    missing = [n for n in shape.needed if n not in present]
    if missing:
        raise InputError(f"{dataset.source}: the template names field '{missing[0]}', which no row has; "
                         f"the rows have {field_list(present)}")
    examples = [ex for k, row in enumerate(dataset.rows) for ex in shape.examples(k, row.fields, dataset.at(row))]
    return Task(tuple(examples), shape.label_words, pair_constraints(shape.groups(examples)), shape.calibrate)


# ---- labels back onto rows

# Output fields `icm label` writes beside the label; eval and export read them back.
SOURCE_FIELD = "icm_source"  # core: chosen by the search; transfer: read off the core's labels; human: --fixed
AGREEMENT_FIELD = "icm_agreement"  # several cores: the share whose own choice is the label
# Where a transferred row's label averages two readings (the zero-shot rule): the label each chose
# alone, after the cores' demonstrations and with none. A review queue puts rows where they differ first.
MANY_SHOT_FIELD = "icm_many_shot"
ZERO_SHOT_FIELD = "icm_zero_shot"


@dataclass(frozen=True)
class RowLabel:
    label: str
    confidence: float  # the label's probability under the scores that chose it
    source: str  # "core": chosen by the core's method (the search); "transfer": read off the cores; "human": --fixed
    agreement: Optional[float] = None  # several cores: the share whose own choice is the label
    readings: Optional[tuple[str, str]] = None  # the label the many-shot and the zero-shot reading chose alone

    @property
    def searched(self) -> bool:
        return self.source == "core"


def row_label(
    words: Sequence[str],
    examples: Sequence[Example],
    labels: Sequence[int],
    scores: Sequence[Sequence[float]],
    sources: Sequence[str],
    agreements: Sequence[Optional[float]],
) -> RowLabel:
    """A row's label from its examples' (a pair's two orders become one preference)."""
    y = labels[0]
    if all(s == "human" for s in sources):
        return RowLabel(words[y], 1.0, "human")  # a person's label: as certain as the run can say
    probs = [math.exp(s) for s in scores[0]]
    where = "core" if all(s == "core" for s in sources) else "transfer"
    shared = [a for a in agreements if a is not None]
    agree = round(min(shared), 4) if shared else None
    if len(examples) == 2 and examples[1].swapped:
        # P(first is better): average of "ab is true" and "ba is false".
        swapped = [math.exp(s) for s in scores[1]]
        p_first = (probs[TRUE] + (1 - swapped[TRUE])) / 2
        conf = p_first if y == TRUE else 1 - p_first
    else:
        conf = probs[y]
    return RowLabel(words[y], round(conf, 6), where, agree)
