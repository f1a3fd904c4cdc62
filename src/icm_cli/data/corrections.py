"""Labels people gave, read back: the one reader that turns a reviewed file into {row id -> label},
for `icm eval --gold` and `icm label --fixed`.

It reads what a review tool exports as well as what icm reads everywhere else:
- a Label Studio export in its JSON format (a JSON array of tasks, each with `data` and
  `annotations`; the answer is the `choices` result of the control named by the label field);
- an Argilla export (a JSON array of records as `Dataset.records.to_json` and `Dataset.to_disk`
  write them: `id`, `fields`, `responses`; the answer is the responses to the question named by
  the label field; that export keeps no response status, so a status, where one is given, must be
  `submitted`);
- any other JSON array of flat rows (Label Studio's JSON-MIN export among them), and JSONL, CSV or
  Parquet through `labels_io`, as `icm eval` always read gold.

A task or record nobody answered is no correction and is left out (counted in `unanswered`).
Where several people answered, the majority wins; a tie is refused rather than settled by a
guess, unless one of them is Label Studio's ground truth, which wins. Ids follow `labels_io.row_id`.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..foundation.errors import InputError, where
from .labels_io import LabelFile, label_position, load_labels, row_id
from ..foundation.metrics import normalize_label

# The name icm's review exports give the label question: Label Studio's <Choices name=...> and
# Argilla's LabelQuestion. It is also the default label field everywhere, so an export made by
# `icm export --format label-studio` reads back with no option.
LABEL_CONTROL = "label"


@dataclass(frozen=True)
class Corrections:
    source: str
    format: str  # "label-studio", "argilla", "json rows" or "rows" (JSONL, CSV, Parquet)
    labels: dict[str, str]  # row id -> label, normalized as metrics.normalize_label does
    places: dict[str, str]  # row id -> where it is, for messages ("review.json: item 3 (task 17)")
    unanswered: int = 0  # tasks or records in the file that nobody labelled

    def label_file(self) -> LabelFile:
        """As `labels_io` reads a gold file, for `icm eval`."""
        return LabelFile(self.source, self.labels, places=self.places)

    def for_task(self, words: Sequence[str]) -> dict[str, str]:
        """Row id -> the config's own label word; a label outside `words` is refused, naming where."""
        out = {}
        for item_id, label in self.labels.items():
            k = label_position(label, words)
            if k is None:
                raise InputError(f"{self.places[item_id]}: label '{label}' (id '{item_id}') is not one of the "
                                 f"config's labels ({', '.join(words)})")
            out[item_id] = words[k]
        return out


def load_corrections(path: str, id_field: str = "id", label_field: str = LABEL_CONTROL) -> Corrections:
    """Read `path` in whichever of the formats above it is (told by its content, not its name)."""
    items = _json_array(path)
    if items is None:
        file = load_labels(path, id_field, label_field)
        return Corrections(file.source, "rows", file.labels, file.places or {})
    if not items:
        raise InputError(f"{path}: holds an empty JSON array, no tasks or rows")
    first = items[0]
    if isinstance(first, dict) and "data" in first and ("annotations" in first or "predictions" in first):
        return _collect(path, "label-studio", items, lambda item, at: _label_studio(item, at, id_field, label_field))
    if isinstance(first, dict) and "fields" in first and "responses" in first:
        return _collect(path, "argilla", items, lambda item, at: _argilla(item, at, label_field))
    return _collect(path, "json rows", items, lambda item, at: _flat_row(item, at, id_field, label_field))


def fixed_labels(path: str, words: Sequence[str], id_field: str = "id",
                 label_field: str = LABEL_CONTROL) -> dict[str, str]:
    """{row id -> label word of the config} from a corrections file in any format above."""
    return load_corrections(path, id_field, label_field).for_task(words)


# ---- JSON arrays


def _json_array(path: str) -> Optional[list[Any]]:
    """The file's items when it is one JSON array (what Label Studio and Argilla export), else None
    (JSONL, CSV, Parquet, stdin: labels_io reads those)."""
    p = Path(path)
    if path == "-" or not p.is_file() or p.suffix.lower() != ".json":
        return None
    with open(p, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"["):
        return None  # a .json file of JSON lines, as icm label writes one
    try:
        return json.loads(p.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise InputError(f"{where(path, e.lineno)}: not valid JSON ({e.msg}, column {e.colno})") from None
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


# What one item of an array gives: (row id, its answers; none when nobody answered)
Reading = tuple[str, list[str]]


def _collect(path: str, fmt: str, items: list[Any], read: Callable[[Any, str], Reading]) -> Corrections:
    labels: dict[str, str] = {}
    places: dict[str, str] = {}
    unanswered = 0
    for k, item in enumerate(items, start=1):
        at = f"{path}: item {k}"
        if not isinstance(item, dict):
            raise InputError(f"{at}: is {_json_type(item)}, not an object like the first item")
        if isinstance(item.get("id"), int) and fmt == "label-studio":
            at += f" (task {item['id']})"
        item_id, answers = read(item, at)
        if item_id in places:
            raise InputError(f"{at}: duplicate id '{item_id}' (first at {places[item_id]})")
        places[item_id] = at
        if not answers:
            unanswered += 1
            continue
        labels[item_id] = _settle(answers, at)
    if not labels:
        raise InputError(f"{path}: none of its {len(items)} {'rows' if fmt == 'json rows' else 'items'} has a label "
                         f"yet ({fmt} export)")
    return Corrections(path, fmt, labels, {i: places[i] for i in labels}, unanswered)


def _settle(answers: list[str], at: str) -> str:
    """One label from everyone's answers: the majority; a tie is refused."""
    counts = Counter(answers).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        tied = ", ".join(f"'{label}' ({n})" for label, n in counts)
        raise InputError(f"{at}: the answers tie ({tied}); settle it in the review tool (one more answer, "
                         f"or a ground truth annotation)")
    return counts[0][0]


def _label(value: Any, at: str) -> str:
    try:
        return normalize_label(value)
    except ValueError as e:
        raise InputError(f"{at}: {e}") from None


def _flat_row(item: Mapping[str, Any], at: str, id_field: str, label_field: str) -> Reading:
    for name in (id_field, label_field):
        if name not in item:
            raise InputError(f"{at}: field '{name}' is missing")
    return row_id(item[id_field], at, id_field), [_label(item[label_field], f"{at}: field '{label_field}'")]


def _label_studio(task: Mapping[str, Any], at: str, id_field: str, control: str) -> Reading:
    data = task.get("data")
    if not isinstance(data, dict) or id_field not in data:
        raise InputError(f"{at}: field 'data.{id_field}' (the row id) is missing")
    item_id = row_id(data[id_field], at, f"data.{id_field}")
    answers: list[str] = []
    truth: list[str] = []
    others: set[str] = set()
    annotations = task.get("annotations") or []
    if not isinstance(annotations, list):
        raise InputError(f"{at}: field 'annotations' must be an array, not {_json_type(annotations)}")
    for n, annotation in enumerate(annotations):
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue  # a skipped task is no answer
        place = f"{at}: field 'annotations[{n}].result'"
        for result in annotation.get("result") or []:
            if not isinstance(result, dict) or result.get("type") != "choices":
                continue
            if result.get("from_name") != control:
                others.add(str(result.get("from_name")))
                continue
            chosen = (result.get("value") or {}).get("choices")
            if not isinstance(chosen, list) or len(chosen) != 1:
                raise InputError(f"{place}: '{control}' must hold one choice, got {json.dumps(chosen)}")
            label = _label(chosen[0], place)
            answers.append(label)
            if annotation.get("ground_truth"):
                truth.append(label)
    if not answers and others:
        raise InputError(f"{at}: its annotations answer {', '.join(sorted(others))}, not '{control}'; "
                         f"name that control as the label field")
    return item_id, truth or answers


def _argilla(record: Mapping[str, Any], at: str, question: str) -> Reading:
    raw_id = record.get("id")
    if raw_id is None:
        raise InputError(f"{at}: field 'id' (the row id) is missing")
    item_id = row_id(raw_id, at, "id")
    responses = record.get("responses") or {}
    if not isinstance(responses, dict):
        raise InputError(f"{at}: field 'responses' must be an object, not {_json_type(responses)}")
    given = responses.get(question) or []
    if not given and any(responses.values()):
        raise InputError(f"{at}: its responses answer {', '.join(sorted(responses))}, not '{question}'; "
                         f"name that question as the label field")
    answers = []
    for n, response in enumerate(given):
        # Drafts and discarded responses are no one's final word.
        if isinstance(response, dict) and response.get("status", "submitted") == "submitted":
            answers.append(_label(response.get("value"), f"{at}: field 'responses.{question}[{n}].value'"))
    return item_id, answers


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
