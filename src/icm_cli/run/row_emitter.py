"""Rows out of a run in input order: each row's label from its examples' (a person's, the
transfer's or the search's), held until every row before it is out, and counted for the summary."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

from ..data.row_index import RowIndex
from ..algorithm.tasks import AGREEMENT_FIELD, MANY_SHOT_FIELD, SOURCE_FIELD, ZERO_SHOT_FIELD, RowLabel, TaskShape, row_label
from ..foundation.config import Config

# An example's transfer result: label, scores, the cores' agreement, and the two readings' own choices.
Result = tuple[int, tuple[float, ...], float, Optional[tuple[int, int]]]
RowsOut = Callable[[list[tuple[int, dict[str, Any], RowLabel]]], None]


@dataclass(frozen=True)
class HeldLabels:
    """The labels a run holds before any row is transferred, by example id: the search's, with
    their scores, and a person's (--fixed), which win over both the search's and the transfer's."""
    core: Mapping[int, Optional[int]]
    scores: Mapping[int, tuple[float, ...]]
    human: Mapping[int, int] = field(default_factory=dict)


def label_row(shape: TaskShape, r: int, fields: dict[str, Any], results: Mapping[int, Result], held: HeldLabels,
              several: bool) -> RowLabel:
    """Row r's label from its examples': a person's, transferred (`results`) or searched."""
    labels, scores, sources, agreements = [], [], [], []
    two: Optional[tuple[int, int]] = None
    for i in range(r * shape.per_row, (r + 1) * shape.per_row):
        if i in held.human:
            labels.append(held.human[i]), scores.append(held.scores.get(i, ())), sources.append("human")
            agreements.append(None)
        elif i in results:
            y, s, a, *rest = results[i]
            two = rest[0] if rest and shape.per_row == 1 else None
            labels.append(y), scores.append(s), sources.append("transfer")
            agreements.append(a if several else None)
        else:
            labels.append(held.core[i]), scores.append(held.scores[i]), sources.append("core")
            agreements.append(None)
    examples = shape.examples(r, fields) if shape.per_row > 1 else ()
    label = row_label(shape.label_words, examples, labels, scores, sources, agreements)
    if two is None:
        return label
    words = shape.label_words
    return dataclasses.replace(label, readings=(words[two[0]], words[two[1]]))


def reading_fields(config: Config) -> list[str]:
    """The two readings' own labels, where a row's label may average them (zero_shot_rule):
    declared up front so CSV and Parquet have the columns; empty on the rows that have none."""
    averages = config.transfer.zero_shot != "off" and config.search.method != "zero_shot"
    return [MANY_SHOT_FIELD, ZERO_SHOT_FIELD] if averages and config.task.type != "comparison" else []


def output_row(fields: dict[str, Any], label: RowLabel, label_field: str, confidence_field: str, several: bool,
               readings: Sequence[str] = ()) -> dict[str, Any]:
    """A row as written: its input fields and what the run adds. `readings`: the reading fields
    declared for every row (null where a row has none); without them a row carries its readings
    only where it has some (Ray's JSONL shards)."""
    row = {**fields, label_field: label.label, confidence_field: label.confidence, SOURCE_FIELD: label.source}
    if several:
        row[AGREEMENT_FIELD] = label.agreement
    if readings:
        row.update(zip(readings, label.readings or (None, None)))
    elif label.readings is not None:
        row[MANY_SHOT_FIELD], row[ZERO_SHOT_FIELD] = label.readings
    return row


class Emitter:
    """Row labels in, rows out in input order; counts what the summary reports."""

    def __init__(self, index: RowIndex, out: RowsOut, monitor_field: Optional[str]):
        self.index = index
        self.out = out
        self.monitor_field = monitor_field
        self.next = 0
        # Rows finished ahead of the next one to go out (consistency groups spread over the
        # file). Past a chunk or so, their fields are dropped and read again when they go.
        self.pending: dict[int, tuple[Optional[dict[str, Any]], RowLabel]] = {}
        self.keep_fields = 4096
        self.label_counts: dict[str, int] = {}
        self.core_rows = 0
        self.human_rows = 0
        self.agreements: list[float] = []
        self.monitor_hits = self.monitor_total = 0

    def add(self, row: int, fields: dict[str, Any], label: RowLabel) -> None:
        self.pending[row] = (fields if len(self.pending) < self.keep_fields else None, label)

    def flush(self) -> None:
        out: list[tuple[int, dict[str, Any], RowLabel]] = []
        while self.next in self.pending:
            fields, label = self.pending.pop(self.next)
            if fields is None:
                fields = self.index.read([self.next])[0].fields
            out.append((self.next, fields, label))
            self._count(fields, label)
            self.next += 1
        if out:
            self.out(out)

    def _count(self, fields: dict[str, Any], label: RowLabel) -> None:
        self.label_counts[label.label] = self.label_counts.get(label.label, 0) + 1
        self.core_rows += label.source == "core"
        self.human_rows += label.source == "human"
        if label.agreement is not None:
            self.agreements.append(label.agreement)
        if self.monitor_field is not None and label.source == "transfer":
            gold = normalized(fields.get(self.monitor_field))
            if gold is not None:
                self.monitor_total += 1
                self.monitor_hits += normalized(label.label) == gold

    def monitor(self) -> Optional[float]:
        return self.monitor_hits / self.monitor_total if self.monitor_total else None


def normalized(value: Any) -> Optional[str]:
    from ..foundation.metrics import normalize_label

    try:
        return normalize_label(value)
    except ValueError:
        return None
