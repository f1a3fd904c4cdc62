"""One reader of ids and labels, for every command that joins rows by id: `icm label` (its
input's ids), `icm eval` (labels and gold), `icm compare` (gold) and `icm export` (labels).

An id is a string or an integer, read as text: `007` stays `007`, and 3.0 (what a CSV column
with a blank cell reads as) is 3. Anything else, a boolean included, is refused: it is almost
surely the wrong --id-field. A label is compared after trimming and lower-casing
(metrics.normalize_label), so True, "true" and 1 match a "True" label word.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

from .tables import Dataset, load_rows, probability
from ..foundation.errors import InputError, where
from ..foundation.metrics import normalize_label


@dataclass(frozen=True)
class LabelFile:
    """One side of the comparison: normalized labels by id (in file order), plus the optional
    per-row confidence and source group read from the predictions."""

    source: str
    labels: dict[str, str]
    confidence: Optional[dict[str, float]] = None
    groups: Optional[dict[str, str]] = None
    # Where each id's row is ("gold.jsonl:12"), for messages about a label found wrong later
    # (e.g. a correction outside the config's label set).
    places: Optional[dict[str, str]] = None


def load_labels(
    path: str,
    id_field: str,
    label_field: str,
    *,
    confidence_field: Optional[str] = None,
    group_field: Optional[str] = None,
) -> LabelFile:
    """Read a JSONL (or `-`), CSV or Parquet file with the loader `icm label` uses.

    The optional fields are read only when some row has them; then every row must.
    """
    return labels_of(load_rows(path), id_field, label_field, confidence_field=confidence_field,
                     group_field=group_field)


def labels_of(
    dataset: Dataset,
    id_field: str,
    label_field: str,
    *,
    confidence_field: Optional[str] = None,
    group_field: Optional[str] = None,
) -> LabelFile:
    """`load_labels` on rows already read (`icm report` keeps them for their text)."""
    source = dataset.source

    def present(field: Optional[str]) -> bool:
        return field is not None and any(field in row.fields for row in dataset.rows)

    confidence: Optional[dict[str, float]] = {} if present(confidence_field) else None
    groups: Optional[dict[str, str]] = {} if present(group_field) else None
    labels: dict[str, str] = {}
    places: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for row in dataset.rows:
        for field in (id_field, label_field):
            if field not in row.fields:
                raise InputError(f"{where(source, row.line, field)} is missing")
        item_id = row_id(row.fields[id_field], where(source, row.line), id_field)
        if item_id in labels:
            raise InputError(f"{where(source, row.line)}: duplicate id '{item_id}' (first on line {first_line[item_id]})")
        try:
            labels[item_id] = normalize_label(row.fields[label_field])
        except ValueError as exc:
            raise InputError(f"{where(source, row.line, label_field)}: {exc}") from None
        first_line[item_id] = row.line
        places[item_id] = where(source, row.line)
        if confidence is not None:
            confidence[item_id] = _confidence(row.fields, source, row.line, confidence_field)
        if groups is not None:
            groups[item_id] = _group(row.fields, source, row.line, group_field)
    return LabelFile(source, labels, confidence, groups, places)


def row_id(raw: object, at: str, field: str) -> str:
    """A row's id as text, by the one rule every command uses (see the module's docstring);
    `at` names the row in the message ("data.jsonl:3")."""
    # bool is an int subclass, but True as an id is almost certainly a wrong --id-field.
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)  # a CSV id column with a blank cell is read as floats
    if isinstance(raw, bool) or not isinstance(raw, (str, int)):
        raise InputError(f"{at}: field '{field}' must be a string or integer, not {_json_type(raw)}")
    return str(raw)


def label_position(value: Any, words: Sequence[str]) -> Optional[int]:
    """Which of `words` the label `value` is, compared as every command compares labels; None
    for none of them (or a value that is no label at all)."""
    try:
        wanted = normalize_label(value)
    except ValueError:
        return None
    for k, word in enumerate(words):
        if normalize_label(word) == wanted:
            return k
    return None


def _confidence(fields: Mapping[str, Any], source: str, line: int, field: str) -> float:
    if field not in fields:
        raise InputError(f"{where(source, line, field)} is missing (other rows have it)")
    return probability(fields[field], where(source, line, field))


def _group(fields: Mapping[str, Any], source: str, line: int, field: str) -> str:
    if field not in fields:
        raise InputError(f"{where(source, line, field)} is missing (other rows have it)")
    value = fields[field]
    if not isinstance(value, str) or not value.strip():
        raise InputError(f"{where(source, line, field)} must be a non-empty string, not {_json_type(value)}")
    return value.strip()


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
