"""Turning input rows into the examples ICM labels, their consistency constraints, and back.

- classification: one example per row, labelled with one of the label words.
- claims: one True/False example per row; rows in one consistency group with different
  keys (e.g. different final answers) cannot both be true, with equal keys must agree.
- comparison: two examples per row, the pair in both orders; exactly one order is true.
Constraints come from input fields only, never from gold.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from .config import TaskConfig
from .data import Dataset, fields_everywhere_missing, text_field
from .errors import InputError
from .prompts import render, template_fields
from .search import TRUE, Constraint, Problem


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
        raise InputError(f"{dataset.source}: the template names field '{missing[0]}', which no row has")
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


@dataclass(frozen=True)
class Batch:
    indices: tuple[int, ...]  # example indices in the task
    problem: Problem


def make_batches(task: Task, count_tokens: Callable[[str], int], max_tokens: int, seed: int) -> list[Batch]:
    """Cut the task into independent ICM runs whose demonstrations fit `max_tokens`.

    Whole consistency groups (and both orders of a pair) stay together. Units are shuffled
    with the seed first: files are often sorted by label or source, and a batch should be a
    random sample as in the paper.
    """
    units: dict[object, list[int]] = {}
    for i, ex in enumerate(task.examples):
        key = ("group", ex.group) if ex.group is not None else ("row", ex.row)
        units.setdefault(key, []).append(i)
    order = list(units.values())
    random.Random(seed).shuffle(order)
    longest_word = max(count_tokens(" " + w) for w in task.label_words)
    cost = lambda i: count_tokens(task.examples[i].query) + longest_word + 2  # noqa: E731
    sizes = [sum(cost(i) for i in unit) for unit in order]
    # Fill to an even share rather than to the limit, so the last batch is not a small remnant.
    target = sum(sizes) / max(1, math.ceil(sum(sizes) / max_tokens))
    batches: list[list[int]] = []
    current: list[int] = []
    used = 0
    for unit, size in zip(order, sizes):
        if current and (used + size > max_tokens or used >= target):
            batches.append(current)
            current, used = [], 0
        current.extend(unit)
        used += size
    if current:
        batches.append(current)
    return [_batch(task, sorted(b)) for b in batches]


def _batch(task: Task, indices: list[int]) -> Batch:
    local = {g: k for k, g in enumerate(indices)}
    constraints = tuple(
        Constraint(local[c.i], local[c.j], c.kind) for c in task.constraints if c.i in local and c.j in local
    )
    groups = tuple(task.examples[i].group for i in indices)
    return Batch(tuple(indices), Problem(len(indices), len(task.label_words), constraints, groups))


@dataclass(frozen=True)
class RowLabel:
    label: str
    confidence: float
    searched: bool  # False when the search ended before labelling it and the final context chose


def row_labels(task: Task, n_rows: int, labels: dict[int, Optional[int]], scores: dict[int, tuple[float, ...]]) -> list[RowLabel]:
    """One label per input row from the example labels (a pair's two orders become one preference)."""
    out: list[Optional[RowLabel]] = [None] * n_rows
    examples = task.examples
    for i, ex in enumerate(examples):
        if ex.swapped:
            continue
        probs = [math.exp(s) for s in scores[i]]
        y = labels.get(i)
        searched = y is not None
        if examples[i + 1 : i + 2] and examples[i + 1].swapped:
            # P(first is better): average of "ab is true" and "ba is false".
            swapped_probs = [math.exp(s) for s in scores[i + 1]]
            p_first = (probs[TRUE] + (1 - swapped_probs[TRUE])) / 2
            searched = searched and labels.get(i + 1) is not None
            if y is None:
                y = TRUE if p_first >= 0.5 else 1
            conf = p_first if y == TRUE else 1 - p_first
        else:
            if y is None:
                y = max(range(len(probs)), key=lambda k: (probs[k], -k))
            conf = probs[y]
        out[ex.row] = RowLabel(task.label_words[y], round(conf, 6), searched)
    return [r for r in out if r is not None]

