"""Turning input rows into the examples ICM labels, their consistency constraints, and back.

- classification: one example per row, labelled with one of the label words.
- claims: one True/False example per row; rows in one consistency group with different
  keys (e.g. different final answers) cannot both be true, with equal keys must agree.
- comparison: two examples per row, the pair in both orders; exactly one order is true.
Constraints come from input fields only, never from gold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from .config import TaskConfig
from .data import Dataset, field_list, fields_everywhere_missing, present_fields, text_field
from .errors import InputError
from .prompts import render, template_fields
from .search import TRUE, Constraint


@dataclass(frozen=True)
class Example:
    row: int  # index into the dataset's rows
    query: str
    group: Optional[str]
    key: Optional[str]
    swapped: bool = False  # comparison: the pair in its second order


@dataclass(frozen=True)
class Task:
    examples: tuple[Example, ...]
    label_words: tuple[str, ...]
    constraints: tuple[Constraint, ...]
    calibrate: bool


def build_task(dataset: Dataset, task: TaskConfig) -> Task:
    needed = template_fields(task.template)
    missing = fields_everywhere_missing(dataset, needed)
    if missing:
        raise InputError(f"{dataset.source}: the template names field '{missing[0]}', which no row has; "
                         f"the rows have {field_list(present_fields(dataset))}")
    examples: list[Example] = []
    for index, row in enumerate(dataset.rows):
        values = {name: text_field(dataset, row, name, "used by the template") for name in needed}
        group = _optional(dataset, index, task.group_field, "consistency group")
        key = _optional(dataset, index, task.key_field, "consistency key")
        if task.type == "comparison":
            first, second = task.pair_fields  # type: ignore[misc]
            a = text_field(dataset, row, first, "first candidate")
            b = text_field(dataset, row, second, "second candidate")
            pair_group = group if group is not None else f"row{index}"
            examples.append(Example(index, render(task.template, {**values, first: a, second: b}), pair_group, "ab"))
            examples.append(Example(index, render(task.template, {**values, first: b, second: a}), pair_group, "ba", True))
        else:
            examples.append(Example(index, render(task.template, values), group, key))
    return Task(tuple(examples), task.labels, tuple(_constraints(examples, task)), task.calibrated())


def _optional(dataset: Dataset, index: int, name: Optional[str], purpose: str) -> Optional[str]:
    if name is None:
        return None
    return text_field(dataset, dataset.rows[index], name, purpose)


def _constraints(examples: Sequence[Example], task: TaskConfig) -> list[Constraint]:
    out: list[Constraint] = []
    if task.type == "comparison":
        for i in range(0, len(examples), 2):
            out.append(Constraint(i, i + 1, "exactly_one_true"))
        return out
    if task.type != "claims" or task.key_field is None:
        return out
    by_group: dict[str, list[int]] = {}
    for i, ex in enumerate(examples):
        if ex.group is not None:
            by_group.setdefault(ex.group, []).append(i)
    for members in by_group.values():
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                i, j = members[a], members[b]
                same = examples[i].key == examples[j].key
                out.append(Constraint(i, j, "equal" if same else "not_both_true"))
    return out


# Output fields `icm label` writes beside the label; eval and export read them back.
SOURCE_FIELD = "icm_source"  # core: chosen by the search; transfer: read off the core's labels
AGREEMENT_FIELD = "icm_agreement"  # several cores: the share whose own choice is the label


@dataclass(frozen=True)
class RowLabel:
    label: str
    confidence: float  # the label's probability under the scores that chose it
    source: str  # "core": chosen by the core's method (the search); "transfer": read off the cores
    agreement: Optional[float] = None  # several cores: the share whose own choice is the label

    @property
    def searched(self) -> bool:
        return self.source == "core"


def row_label(
    task: Task,
    members: Sequence[int],
    labels: Mapping[int, int],
    scores: Mapping[int, Sequence[float]],
    source: Mapping[int, str],
    agreement: Mapping[int, float],
) -> RowLabel:
    """A row's label from its examples' (a pair's two orders become one preference)."""
    i = members[0]
    probs = [math.exp(s) for s in scores[i]]
    y = labels[i]
    where = "core" if all(source[m] == "core" for m in members) else "transfer"
    shared = [agreement[m] for m in members if m in agreement]
    agree = round(min(shared), 4) if shared else None
    if len(members) == 2 and task.examples[members[1]].swapped:
        # P(first is better): average of "ab is true" and "ba is false".
        swapped = [math.exp(s) for s in scores[members[1]]]
        p_first = (probs[TRUE] + (1 - swapped[TRUE])) / 2
        conf = p_first if y == TRUE else 1 - p_first
    else:
        conf = probs[y]
    return RowLabel(task.label_words[y], round(conf, 6), where, agree)
