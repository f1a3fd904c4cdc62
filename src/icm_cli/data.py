"""Reading input rows from JSONL (file or stdin), CSV or Parquet, with errors that name the line."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .errors import InputError

# A single line past this is almost surely a broken file (a binary blob, a missing newline);
# refusing it early keeps memory bounded and the message useful.
MAX_LINE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line (JSONL) or row number (CSV/Parquet) for error messages
    fields: dict[str, Any]


@dataclass(frozen=True)
class Dataset:
    source: str
    rows: list[Row]
    digest: str


def load_rows(path: str) -> Dataset:
    if path == "-":
        return _parse_jsonl("<stdin>", sys.stdin.buffer.read())
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: file not found")
    if p.is_dir():
        raise InputError(f"{path}: is a directory, not a data file")
    suffix = p.suffix.lower()
    if suffix in (".csv", ".parquet", ".pq"):
        return _load_tabular(p, "csv" if suffix == ".csv" else "parquet")
    try:
        data = p.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror})")
    return _parse_jsonl(path, data)


def _parse_jsonl(source: str, data: bytes) -> Dataset:
    rows: list[Row] = []
    offset = 0
    for number, raw in enumerate(data.split(b"\n"), start=1):
        start = offset
        offset += len(raw) + 1
        if len(raw) > MAX_LINE_BYTES:
            raise InputError(f"{source}:{number}: line is {len(raw):,} bytes, over the {MAX_LINE_BYTES:,}-byte limit")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"{source}:{number}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {start + e.start})")
        if not text.strip():
            continue
        if number == 1 and text.startswith("\ufeff"):
            text = text[1:]  # a UTF-8 byte-order mark, as some editors write
        try:
            value = json.loads(text)
        except json.JSONDecodeError as e:
            raise InputError(f"{source}:{number}: invalid JSON ({e.msg} at column {e.colno})")
        except RecursionError:
            raise InputError(f"{source}:{number}: invalid JSON (nested too deeply)")
        except ValueError as e:  # e.g. an integer past Python's digit limit
            raise InputError(f"{source}:{number}: invalid JSON ({str(e).splitlines()[0]})")
        if not isinstance(value, dict):
            raise InputError(f"{source}:{number}: row must be a JSON object, got {type(value).__name__}")
        bad = _unencodable_field(value)
        if bad is not None:
            raise InputError(
                f"{source}:{number}: field '{bad}' holds invalid text (an unpaired UTF-16 surrogate such as \\ud800)"
            )
        rows.append(Row(number, value))
    if not rows:
        what = "is empty" if not data.strip() else "has no rows"
        raise InputError(f"{source}: {what}")
    return Dataset(source, rows, hashlib.sha256(data).hexdigest()[:16])


def _unencodable_field(row: dict[str, Any]) -> str | None:
    """The first top-level field whose text cannot be written as UTF-8 (lone surrogates)."""
    for key, value in row.items():
        try:
            json.dumps({key: value}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return key
    return None


def _load_tabular(path: Path, kind: str) -> Dataset:
    # `datasets` is how users expect CSV/Parquet to load; it is imported late because it is slow.
    import datasets

    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train")
    except Exception as e:  # the library raises many types for a bad file
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"{path}: cannot read {kind.upper()} ({first})")
    rows = [Row(i + 2 if kind == "csv" else i + 1, dict(r)) for i, r in enumerate(ds)]
    if not rows:
        raise InputError(f"{path}: has no rows")
    return Dataset(str(path), rows, hashlib.sha256(path.read_bytes()).hexdigest()[:16])


def row_ids(dataset: Dataset, id_field: str | None) -> list[str]:
    """Each row's id: the id field when the config names one, else the row's position."""
    if id_field is None:
        return [str(i) for i in range(len(dataset.rows))]
    seen: dict[str, int] = {}
    ids = []
    for row in dataset.rows:
        if id_field not in row.fields or row.fields[id_field] is None:
            raise InputError(f"{dataset.source}:{row.line}: field '{id_field}' (the id field) is missing")
        value = str(row.fields[id_field])
        if value in seen:
            raise InputError(f"{dataset.source}:{row.line}: duplicate id '{value}' (first on line {seen[value]})")
        seen[value] = row.line
        ids.append(value)
    return ids


def text_field(dataset: Dataset, row: Row, name: str, purpose: str) -> str:
    value = row.fields.get(name)
    if name not in row.fields:
        raise InputError(f"{dataset.source}:{row.line}: field '{name}' ({purpose}) is missing")
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise InputError(f"{dataset.source}:{row.line}: field '{name}' ({purpose}) must be a string, got {_kind(value)}")
    if isinstance(value, (int, float)):
        return str(value)
    return str(value)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", dict: "an object", list: "a list"}.get(type(value), type(value).__name__)


def fields_everywhere_missing(dataset: Dataset, names: Iterable[str]) -> list[str]:
    present: set[str] = set()
    for row in dataset.rows:
        present.update(row.fields)
    return [n for n in names if n not in present]
