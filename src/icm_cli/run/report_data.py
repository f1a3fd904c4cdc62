"""What `icm report` shows, read and checked: the labelled rows, the run's summary (the file
`icm label` writes beside OUT) and, given gold, the scores against it (computed by `metrics`, as
`icm eval` computes them). No drawing and no HTML here: `report_plots` and `report_html` do that.

A file that is not `icm label` output is refused with one line naming it: rows without a label
or a confidence, a summary that is not one, or a summary of another file (its row count differs).
A labels file with no summary beside it (rows written to stdout) still has a report, without the
run's sections.
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from ..data.tables import Dataset, probability
from ..foundation.errors import InputError
from ..data.labels_io import LabelFile
from ..foundation.metrics import Agreement, ConfidenceRow, Slice, accuracy_by_confidence, accuracy_by_group, compute_agreement
from .runner import RunSummary
from ..algorithm.search import argmax
from ..algorithm.search_trace import CoreTrace
from .signal_check import Figure, ReadingSample, SignalReport
from ..algorithm.tasks import AGREEMENT_FIELD, SOURCE_FIELD

TEXT_CHARS = 400  # a row's text is cut here in the tables: enough to judge a label by
COVERAGE_POINTS = 60  # confidence cut-offs on the accuracy-against-coverage curve
RELIABILITY_BINS = 10


@dataclass(frozen=True)
class ReportRow:
    position: int  # 0-based, in the labels file
    id: Optional[str]
    label: str  # as written
    confidence: float
    source: Optional[str]  # icm_source: core or transfer
    text: str  # the row's own fields, shortened, for people


@dataclass(frozen=True)
class RunView:
    """The summary, typed: the run, its verdict, the check's sample and the search's trace."""

    summary: RunSummary
    signal: Optional[SignalReport]
    readings: Optional[ReadingSample]
    traces: list[CoreTrace]


@dataclass(frozen=True)
class ReliabilityBin:
    low: float
    high: float
    mean_confidence: float
    part: Slice  # accuracy of the matched rows whose confidence falls in [low, high)


@dataclass(frozen=True)
class GoldView:
    source: str
    agreement: Agreement
    reliability: list[ReliabilityBin]
    coverage: list[ConfidenceRow]  # accuracy of the rows kept at each confidence cut-off
    gold: dict[int, str]  # row position -> gold label (normalized), matched rows only
    correct: dict[int, bool]  # the same rows: does the run's label match


@dataclass(frozen=True)
class Disagreement:
    """A sampled row the many-shot and zero-shot readings label differently."""

    row: ReportRow
    many_shot: str  # the many-shot reading's label
    zero_shot: str
    many_shot_p: float  # each reading's probability of the run's label
    zero_shot_p: float


@dataclass(frozen=True)
class ReportData:
    labels_source: str
    label_words: list[str]  # in the task's order where the summary says it
    rows: list[ReportRow]
    run: Optional[RunView]
    gold: Optional[GoldView]
    notes: list[str]  # what the page could not show, and why


# ---- the labelled rows


def report_rows(dataset: Dataset, label_field: str, confidence_field: str,
                id_field: Optional[str]) -> list[ReportRow]:
    """Every row's label, confidence and text; a row without a label or confidence is refused."""
    if not dataset.rows:
        raise InputError(f"{dataset.source}: no rows: not the output of icm label")
    own = {label_field, confidence_field, SOURCE_FIELD, AGREEMENT_FIELD} | ({id_field} if id_field else set())
    out = []
    for k, row in enumerate(dataset.rows):
        at = dataset.at(row)
        for name in (label_field, confidence_field):
            if name not in row.fields:
                raise InputError(f"{at}: field '{name}' is missing: not the output of icm label "
                                 f"(--label-field and --confidence-field name other fields)")
        label = row.fields[label_field]
        if not isinstance(label, (str, int, float)) or isinstance(label, bool) or str(label).strip() == "":
            raise InputError(f"{at}: field '{label_field}' must be a label (text or a number)")
        confidence = probability(row.fields[confidence_field], f"{at}: field '{confidence_field}'")
        raw_id = row.fields.get(id_field) if id_field is not None else None
        source = row.fields.get(SOURCE_FIELD)
        out.append(ReportRow(k, str(raw_id) if raw_id is not None else None, str(label), confidence,
                             source if isinstance(source, str) else None, row_text(row.fields, own)))
    return out


def row_text(fields: dict[str, Any], skip: set[str]) -> str:
    """The row's own fields as one short line: a lone text field as it is, else `name: value`."""
    shown = {k: v for k, v in fields.items() if k not in skip}
    if len(shown) == 1:
        value = next(iter(shown.values()))
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    else:
        text = " | ".join(f"{k}: {v if isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str)}"
                          for k, v in shown.items())
    return text if len(text) <= TEXT_CHARS else text[: TEXT_CHARS - 1] + "\u2026"


def label_order(rows: Sequence[ReportRow], run: Optional[RunView]) -> list[str]:
    """The task's label words where the summary has them, then any other label the rows use."""
    words = list(run.readings.label_words) if run is not None and run.readings is not None else []
    if not words and run is not None:
        words = list(run.summary.label_counts)
    return words + sorted({r.label for r in rows} - set(words))


# ---- the summary


def read_summary(path: Path, rows: int) -> Optional[RunView]:
    """The summary at `path` (None when there is none), checked to be icm's and of these rows."""
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: not a readable icm summary ({e})") from None
    if not isinstance(doc, dict):
        raise InputError(f"{path}: not an icm summary (not a JSON object)")
    summary = _summary(path, doc)
    if summary.rows != rows:
        raise InputError(f"{path}: describes a run of {summary.rows:,} rows, but its labels file has {rows:,}: "
                         f"the summary of another file")
    try:
        signal = _signal(doc.get("signal"))
        readings = ReadingSample(**doc["readings"]) if doc.get("readings") else None
        traces = [CoreTrace(**t) for t in doc.get("search_trace") or []]
    except (TypeError, KeyError, ValueError, AttributeError, IndexError) as e:
        raise InputError(f"{path}: malformed icm summary ({e})") from None
    _check_lengths(path, readings, traces, rows)
    return RunView(summary, signal, readings, traces)


def _summary(path: Path, doc: dict) -> RunSummary:
    fields = dataclasses.fields(RunSummary)
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    missing = [name for name in required if name not in doc]
    if missing:
        raise InputError(f"{path}: not an icm summary (no '{missing[0]}')")
    hints = typing.get_type_hints(RunSummary)
    for f in fields:
        if f.name in doc and hints[f.name] in (int, float, str) and not _is(doc[f.name], hints[f.name]):
            raise InputError(f"{path}: malformed icm summary ('{f.name}' is {json.dumps(doc[f.name])[:40]})")
    counts, utility = doc.get("label_counts", {}), doc.get("final_utility", [])
    if not (isinstance(counts, dict) and all(_whole(v) for v in counts.values())
            and isinstance(utility, list) and all(_is(u, float) for u in utility)):
        raise InputError(f"{path}: malformed icm summary ('label_counts' or 'final_utility')")
    return RunSummary(**{f.name: doc[f.name] for f in fields if f.name in doc})


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, (int, float)) and math.isfinite(value) if kind is float else isinstance(value, kind)


def _signal(doc: Any) -> Optional[SignalReport]:
    if doc is None:
        return None
    figures = [Figure(str(f["name"]), float(f["value"]),
                      (float(f["interval"][0]), float(f["interval"][1])) if f.get("interval") else None,
                      str(f["meaning"])) for f in doc.get("figures", [])]
    return SignalReport(str(doc["verdict"]), str(doc["reason"]), figures, [str(w) for w in doc.get("warnings", [])],
                        int(doc.get("rows", 0)), float(doc.get("seconds", 0.0)), int(doc.get("tokens", 0)))


def _check_lengths(path: Path, readings: Optional[ReadingSample], traces: list[CoreTrace], rows: int) -> None:
    """The parts the page draws hold numbers, in series of one length, pointing at OUT's rows."""
    if readings is not None:
        n, k = len(readings.rows), len(readings.label_words)
        parts = (readings.examples, readings.labels, readings.many_shot, readings.zero_shot, readings.scrambled,
                 *readings.more_scrambled)
        readable = (
            k >= 2 and all(len(p) == n for p in parts)
            and all(_whole(r) and 0 <= r < rows for r in readings.rows)
            and all(_whole(y) and 0 <= y < k for y in readings.labels)
            and all(isinstance(p, list) and len(p) == k and all(_is(v, float) for v in p)
                    for part in parts[2:] for p in part))
        if not readable:
            raise InputError(f"{path}: malformed icm summary (its 'readings' do not fit the labels file)")
    for t in traces:
        series = (t.iteration, t.utility, t.inconsistent, t.proposals, t.accepted, t.temperature)
        if not all(isinstance(p, list) and len(p) == len(t.iteration) and all(_is(v, float) for v in p)
                   for p in series) or not _whole(t.core):
            raise InputError(f"{path}: malformed icm summary (a search trace's series are not numbers of one length)")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# ---- against gold


def gold_view(rows: Sequence[ReportRow], pred: LabelFile, truth: dict[str, str], source: str,
              labels: int) -> GoldView:
    """Accuracy, per-class scores, confusion, calibration and coverage (all by `metrics`)."""
    confidence = pred.confidence or {}
    agreement = compute_agreement(pred.labels, truth)
    matched = [r for r in rows if r.id is not None and r.id in truth and r.id in pred.labels]
    gold = {r.position: truth[r.id] for r in matched if r.id is not None}
    correct = {r.position: pred.labels[r.id] == truth[r.id] for r in matched if r.id is not None}
    return GoldView(source, agreement, _reliability(pred.labels, truth, confidence, labels),
                    accuracy_by_confidence(pred.labels, truth, confidence, _cutoffs(confidence.values())),
                    gold, correct)


def _reliability(pred: dict[str, str], truth: dict[str, str], confidence: dict[str, float],
                 labels: int) -> list[ReliabilityBin]:
    """Equal-width confidence bins from chance (1/labels, the least a label's probability can be)
    to 1, each with the accuracy of its rows."""
    low = 1.0 / max(2, labels)
    width = (1.0 - low) / RELIABILITY_BINS
    which = {i: f"{min(RELIABILITY_BINS - 1, max(0, int((c - low) / width))):02d}" for i, c in confidence.items()}
    parts = accuracy_by_group(pred, truth, which)
    inside: dict[str, list[float]] = {}
    for i in truth:
        if i in pred and i in which:
            inside.setdefault(which[i], []).append(confidence[i])
    return [ReliabilityBin(low + int(key) * width, low + (int(key) + 1) * width,
                           sum(inside[key]) / len(inside[key]), part) for key, part in parts.items()]


def _cutoffs(values: Any) -> list[float]:
    """0 (every row) and up to COVERAGE_POINTS cut-offs at evenly spaced ranks of the confidences."""
    ordered = sorted(set(values))
    if len(ordered) > COVERAGE_POINTS:
        ordered = [ordered[round(k * (len(ordered) - 1) / (COVERAGE_POINTS - 1))] for k in range(COVERAGE_POINTS)]
    return sorted({0.0, *ordered})


# ---- rows worth a look


def least_confident(rows: Sequence[ReportRow], n: int) -> list[ReportRow]:
    return sorted(rows, key=lambda r: (r.confidence, r.position))[:n]


def confidently_wrong(rows: Sequence[ReportRow], gold: GoldView, n: int) -> list[ReportRow]:
    wrong = [r for r in rows if gold.correct.get(r.position) is False]
    return sorted(wrong, key=lambda r: (-r.confidence, r.position))[:n]


def against_zero_shot(readings: ReadingSample) -> ReadingSample:
    """The sample with the many-shot reading to set against zero-shot: where the labels are the
    zero-shot reading alone (two cores that did not confirm their departure), the cores' reading
    they departed to, not the labels' own (which is zero-shot itself)."""
    if readings.zero_shot_alone and readings.cores_reading:
        return dataclasses.replace(readings, many_shot=readings.cores_reading)
    return readings


def disagreements(rows: Sequence[ReportRow], readings: ReadingSample, n: int) -> list[Disagreement]:
    """Sampled rows whose many-shot and zero-shot readings pick different labels, the widest
    gaps first (one entry a row)."""
    words = readings.label_words
    found: dict[int, Disagreement] = {}
    for r, label, many, zero in zip(readings.rows, readings.labels, readings.many_shot, readings.zero_shot):
        a, b = argmax(many), argmax(zero)
        if a == b or r in found:
            continue
        found[r] = Disagreement(rows[r], words[a], words[b], many[label], zero[label])
    return sorted(found.values(), key=lambda d: (-abs(d.many_shot_p - d.zero_shot_p), d.row.position))[:n]
