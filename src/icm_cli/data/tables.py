"""Rows held whole, for the small files other commands read (labels, gold, a comparison sample),
and the field helpers every reader shares. `icm label` streams its input instead (sources.py,
row_index.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Literal, Optional

from ..foundation.errors import InputError
from .sources import Row, new_digest, open_source


@dataclass(frozen=True)
class Dataset:
    source: str
    rows: list[Row]
    digest: str
    # How Row.line reads in messages: "data.jsonl:12" for files with lines, "x.parquet: row 12"
    # for sources that have none.
    numbering: Literal["line", "row"] = "line"

    def at(self, row: Row) -> str:
        """Where a row is, for an error message."""
        return f"{self.source}:{row.line}" if self.numbering == "line" else f"{self.source}: row {row.line}"


def load_rows(path: str, split: Optional[str] = None, progress: bool = False) -> Dataset:
    """Every row of a JSONL/CSV/Parquet file, `-` (JSONL on stdin), `hf://org/name` or a dataset
    directory (see sources.open_source), in memory."""
    digest = new_digest()
    with open_source(path, split, progress) as source:
        rows = list(source.rows(digest))
        return Dataset(source.name, rows, digest.hexdigest()[:16], source.numbering)


def row_ids(dataset: Dataset, id_field: str | None) -> list[str]:
    """Each row's id: the id field when the config names one, else the row's position."""
    if id_field is None:
        return [str(i) for i in range(len(dataset.rows))]
    seen: dict[str, int] = {}
    ids = []
    for row in dataset.rows:
        if id_field not in row.fields or row.fields[id_field] is None:
            raise InputError(f"{dataset.at(row)}: field '{id_field}' (the id field) is missing")
        value = str(row.fields[id_field])
        if value in seen:
            raise InputError(f"{dataset.at(row)}: duplicate id '{value}' (first on {dataset.numbering} {seen[value]})")
        seen[value] = row.line
        ids.append(value)
    return ids


def text_field(where: str, fields: dict[str, Any], name: str, purpose: str) -> str:
    """A field read as text (numbers as written); `where` names the row in the message."""
    if name not in fields:
        raise InputError(f"{where}: field '{name}' ({purpose}) is missing; this row has {field_list(fields)}")
    value = fields[name]
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise InputError(f"{where}: field '{name}' ({purpose}) must be a string, got {_kind(value)}")
    return str(value)


def probability(value: Any, at: str) -> float:
    """A confidence as `icm label` writes it: a number from 0 to 1, or such a number as text
    (CSV and some Parquet writers keep it as a string). `at` is the location for the error."""
    number: Optional[float] = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            pass
    if number is None or not 0.0 <= number <= 1.0:  # NaN fails this too
        shown = repr(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else _json_kind(value)
        raise InputError(f"{at} must be a number from 0 to 1, got {shown}")
    return number


def _json_kind(value: Any) -> str:
    names = {dict: "object", list: "array", bool: "boolean"}
    return "null" if value is None else names.get(type(value), type(value).__name__)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def field_list(names: Iterable[str], most: int = 12) -> str:
    """Field names for a message: "'id', 'text'", cut after `most`."""
    names = list(names)
    if not names:
        return "no fields"
    shown = ", ".join(f"'{n}'" for n in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
