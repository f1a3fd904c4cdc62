"""`icm export --format label-studio|argilla`: the labelled rows as a review queue, the rows a
person should look at first coming first.

Order: rows whose readings disagree before rows where they agree, then least confident first,
then file order. A row's readings are optional fields (READING_FIELDS: the many-shot and the
zero-shot reading of the row) and, with several cores, `icm_agreement` (below 1: the cores did
not all choose the label); a labels file without them is ordered by confidence alone. A
disagreement is where a correction most likely pays, and a low confidence next.

Each reading field may hold the label word that reading chose, an object {label word:
probability}, or a number: that reading's probability of the row's label (taken as choosing it
at 0.5 or more, exact for two labels). `--review N` keeps the first N of the queue. The two
formats (label_studio_export, argilla_export) only lay the queue out.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..foundation.config import Config, TaskConfig
from ..data.tables import Dataset, Row, probability
from ..foundation.errors import InputError, where
from ..data.labels_io import label_position, row_id
from ..data.output import check_replaceable, summary_path
from ..algorithm.tasks import AGREEMENT_FIELD, MANY_SHOT_FIELD, SOURCE_FIELD, ZERO_SHOT_FIELD

REVIEW_FORMATS: tuple[str, ...] = ("label-studio", "argilla")
# Optional per-row readings, as `icm label` may write them: the many-shot reading (after the
# core's demonstrations) and the zero-shot one. Disagreeing readings mark a row to look at first.
READING_FIELDS: tuple[str, ...] = (MANY_SHOT_FIELD, ZERO_SHOT_FIELD)
RANK_FIELD = "icm_review_rank"  # 1 = the first row to review; kept in each task, to sort by in the tool
SOURCES = ("core", "transfer", "human", "all")


@dataclass(frozen=True)
class ReviewOptions:
    format: str
    review: Optional[int] = None  # keep the first N of the queue
    min_confidence: Optional[float] = None
    source: str = "all"
    label_field: str = "label"
    confidence_field: str = "confidence"
    id_field: Optional[str] = None  # None: the config's task.id_field, else "id"


@dataclass(frozen=True)
class ReviewItem:
    row_id: str
    fields: dict[str, Any]  # the row as icm label wrote it
    label: str  # the config's label word
    confidence: float
    disputed: bool  # the readings (or the cores) chose differently


@dataclass
class ReviewQueue:
    format: str
    task: TaskConfig
    items: list[ReviewItem]  # in review order
    model_version: str  # the run's config hash: Label Studio's model_version, Argilla's agent
    rows_in: int
    label_field: str
    readings: tuple[str, ...] = ()  # the reading fields the rows carry
    dropped: dict[str, int] = field(default_factory=dict)  # why rows were left out -> how many


def check_review_options(opts: ReviewOptions) -> None:
    if opts.format not in REVIEW_FORMATS:
        raise InputError(f"--format is {opts.format!r}, must be one of {', '.join(REVIEW_FORMATS)}")
    if opts.review is not None and opts.review < 1:
        raise InputError(f"--review is {opts.review}, must be at least 1 (the number of rows to review)")
    if opts.source not in SOURCES:
        raise InputError(f"--source is {opts.source!r}, must be one of {', '.join(SOURCES)}")
    if opts.min_confidence is not None and not math.isfinite(opts.min_confidence):
        raise InputError(f"--min-confidence is {opts.min_confidence}, must be a finite number")


def review_queue(dataset: Dataset, task: TaskConfig, opts: ReviewOptions, model_version: str) -> ReviewQueue:
    """The rows of a labels file in review order, filtered and cut as `opts` say."""
    check_review_options(opts)
    id_field = opts.id_field or task.id_field or "id"
    readings = tuple(name for name in READING_FIELDS if any(name in row.fields for row in dataset.rows))
    dropped = {"source": 0, "confidence": 0, "review": 0}
    items: list[ReviewItem] = []
    seen: dict[str, str] = {}
    for row in dataset.rows:
        item = _item(dataset, row, task, opts, id_field, readings)
        if item.row_id in seen:
            raise InputError(f"{dataset.at(row)}: duplicate id '{item.row_id}' (first at {seen[item.row_id]}); "
                             f"a review needs one task per row")
        seen[item.row_id] = dataset.at(row)
        if opts.source != "all" and row.fields.get(SOURCE_FIELD) != opts.source:
            dropped["source"] += 1
        elif opts.min_confidence is not None and item.confidence < opts.min_confidence:
            dropped["confidence"] += 1
        else:
            items.append(item)
    items = review_order(items)
    if opts.review is not None and len(items) > opts.review:
        dropped["review"] = len(items) - opts.review
        items = items[: opts.review]
    return ReviewQueue(opts.format, task, items, model_version, len(dataset.rows), opts.label_field, readings,
                       dropped)


def review_order(items: list[ReviewItem]) -> list[ReviewItem]:
    """Disputed rows first, then least confident first; ties keep file order (a stable sort)."""
    return sorted(items, key=lambda item: (not item.disputed, item.confidence))


def _item(dataset: Dataset, row: Row, task: TaskConfig, opts: ReviewOptions, id_field: str,
          readings: tuple[str, ...]) -> ReviewItem:
    at = dataset.at(row)
    fields = row.fields
    for name, what in ((id_field, "the row id; set task.id_field or pass --id-field"),
                       (opts.label_field, "the label; pass --label-field if icm label wrote another name"),
                       (opts.confidence_field, "the confidence; pass --confidence-field if icm label wrote another name")):
        if name not in fields:
            raise InputError(f"{where(at, None, name)} ({what}) is missing")
    k = label_position(fields[opts.label_field], task.labels)
    if k is None:
        raise InputError(f"{where(at, None, opts.label_field)} is {fields[opts.label_field]!r}, not one of the "
                         f"config's labels ({', '.join(task.labels)})")
    confidence = probability(fields[opts.confidence_field], where(at, None, opts.confidence_field))
    disputed = _readings_disagree(fields, k, task.labels, readings, at) or _cores_disagree(fields, at)
    return ReviewItem(row_id(fields[id_field], at, id_field), fields, task.labels[k], confidence, disputed)


def _readings_disagree(fields: dict[str, Any], label: int, words: tuple[str, ...], readings: tuple[str, ...],
                       at: str) -> bool:
    choices = {_reading_choice(fields[name], label, words, where(at, None, name)) for name in readings
               if fields.get(name) is not None}
    return len(choices) > 1


def _reading_choice(value: Any, label: int, words: tuple[str, ...], at: str) -> int:
    """Which label a reading chose: its index in `words`; -1 for "not the row's label" (a number under 0.5)."""
    if isinstance(value, dict):
        scores = {}
        for word, p in value.items():
            k = label_position(word, words)
            if k is None:
                raise InputError(f"{at}: '{word}' is not one of the config's labels ({', '.join(words)})")
            scores[k] = probability(p, f"{at}: '{word}'")
        if not scores:
            raise InputError(f"{at}: is an empty object; expected {{label word: probability}}")
        return max(scores, key=lambda k: (scores[k], -k))
    if isinstance(value, str) and label_position(value, words) is not None:
        return label_position(value, words)  # type: ignore[return-value]
    return label if probability(value, at) >= 0.5 else -1


def _cores_disagree(fields: dict[str, Any], at: str) -> bool:
    value = fields.get(AGREEMENT_FIELD)
    return value is not None and probability(value, where(at, None, AGREEMENT_FIELD)) < 1.0


def model_version(labels: str, config: Config) -> str:
    """The run's config hash, from the summary `icm label` wrote beside LABELS (it covers --set
    overrides too); without one, the hash of the config given to export."""
    summary = run_summary(labels)
    value = summary.get("config_hash") if summary else None
    return str(value) if value else config.digest()


def run_summary(labels: str) -> Optional[dict[str, Any]]:
    """LABELS.summary.json as `icm label` wrote it, or None where there is none (stdin, a renamed file)."""
    if labels == "-":
        return None
    path = summary_path(Path(labels))
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise InputError(f"{where(str(path), e.lineno)}: not valid JSON ({e.msg}); it should be the summary icm "
                         f"label wrote; move it away to export without it") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path}: cannot be read ({e})") from None
    if not isinstance(summary, dict):
        raise InputError(f"{path}: is not a JSON object, so not the summary icm label writes")
    return summary


# ---- where it goes


@dataclass(frozen=True)
class ReviewFiles:
    main: Path  # what the tool imports: Label Studio's tasks, Argilla's records
    beside: Path  # its configuration: Label Studio's labelling config, Argilla's dataset settings


BESIDE_SUFFIX = {"label-studio": ".label_config.xml", "argilla": ".settings.json"}


def review_destination(out: Optional[str], labels: str, fmt: str, force: bool) -> ReviewFiles:
    """`-o tasks.json` -> tasks.json and tasks.label_config.xml (records.settings.json for Argilla).
    Both are checked before anything is read: the main file as every -o is, the one beside it as
    part of it (replaced with it, but only if it is a file icm could have written)."""
    if out is None or out == "-":
        raise InputError(f"--format {fmt} writes two files (the tasks and their configuration): pass -o NAME.json")
    path = Path(out)
    if path.suffix.lower() != ".json":
        raise InputError(f"{out}: --format {fmt} writes a JSON file (what the tool imports); end -o with .json")
    if labels != "-" and path.resolve() == Path(labels).resolve():
        raise InputError(f"{out}: output would overwrite the input file; choose another -o")
    beside = path.with_name(path.stem + BESIDE_SUFFIX[fmt])
    check_replaceable(path, force, shown=out)
    check_replaceable(beside, force)
    if not path.resolve().parent.exists():
        raise InputError(f"{out}: directory {path.parent} does not exist")
    return ReviewFiles(path, beside)


def review_summary(queue: ReviewQueue) -> str:
    """Rows in, rows queued, what was left out and how they are ordered, on one line."""
    why = [f"{n} {what}" for what, n in (("not from the chosen --source", queue.dropped.get("source", 0)),
                                         ("under --min-confidence", queue.dropped.get("confidence", 0)),
                                         ("past --review", queue.dropped.get("review", 0))) if n]
    left = f" (left out: {', '.join(why)})" if why else ""
    disputed = sum(item.disputed for item in queue.items)
    if queue.readings or disputed:
        order = f"{disputed} where the readings disagree first, then least confident first"
    else:
        order = "least confident first (no readings in the rows to compare)"
    return f"{queue.rows_in:,} rows in, {len(queue.items):,} to review{left}; {order}"
