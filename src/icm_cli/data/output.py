"""Writing results: rows streamed into a temporary file renamed at the end, never a half-written OUT.

OUT's format follows its extension: JSON lines (.jsonl, .json, .ndjson), CSV or Parquet.

Here OUT's format and the rows written into it (`RowWriter`); files written whole and what
`--force` may replace are atomic_files.py, JSON and CSV text json_out.py (both imported from here too).
"""

from __future__ import annotations

import contextlib
import csv
import os
import sys
from pathlib import Path
from typing import IO, Any, Iterable, Literal, Mapping, Optional, Sequence

from .atomic_files import atomic_file, atomic_write_text, atomic_write_texts, check_replaceable, create_temp, replace_refusal
from ..foundation.errors import InputError, OutputError
from .json_out import cell, json_text, jsonl, summary_text
from .row_index import KIND_BOOL, KIND_FLOAT, KIND_INT, KIND_NULL, KIND_OTHER, KIND_STR, value_kind

__all__ = [
    "FORMATS", "PARQUET_ROW_GROUP", "Format", "RowWriter", "atomic_file", "atomic_write_text", "atomic_write_texts",
    "check_destination", "check_replaceable", "column_kinds", "json_text", "jsonl",
    "output_format", "replace_refusal", "summary_path", "summary_text", "write_rows",
]

Format = Literal["jsonl", "csv", "parquet"]
FORMATS: dict[str, Format] = {
    ".jsonl": "jsonl", ".json": "jsonl", ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet", ".pq": "parquet",
}


def output_format(out: Path) -> Format:
    """OUT's format, from its extension; an unknown one is refused before any work is done."""
    fmt = FORMATS.get(out.suffix.lower())
    if fmt is None:
        what = f"extension '{out.suffix}'" if out.suffix else "no extension"
        raise InputError(f"{out}: {what} names no output format; end -o with .jsonl, .json, .csv or .parquet")
    return fmt


def check_destination(out: Path, data: str, force: bool) -> None:
    output_format(out)
    if data != "-" and Path(data).exists() and out.exists() and os.path.samefile(out, data):
        raise InputError(f"{out}: output would overwrite the input file; choose another -o")
    if data != "-" and Path(out).resolve() == Path(data).resolve():
        raise InputError(f"{out}: output would overwrite the input file; choose another -o")
    check_replaceable(out, force)
    # Written over without asking, as part of OUT; only its kind is checked, here rather than
    # after the model has run.
    check_replaceable(summary_path(out), force=True)
    if not out.parent.exists():
        raise InputError(f"{out}: directory {out.parent} does not exist")


class RowWriter:
    """Rows out as they become final, into a temporary file renamed over OUT by `commit`
    (OUT is absent or complete, never half-written), or JSON lines on stdout.

    CSV needs its header and Parquet its schema before the first row: `columns` (every field,
    in order) and `kinds` (the value kinds of each, from row_index) give them up front.
    """

    def __init__(self, out: Optional[Path], columns: Sequence[str], kinds: Mapping[str, int]):
        self.out = out
        self.format: Format = output_format(out) if out is not None else "jsonl"
        self.columns = list(columns)
        self._file: Optional[IO[Any]] = None
        self._tmp: Optional[Path] = None
        self._csv: Optional[csv.DictWriter] = None
        self._parquet: Any = None
        self._pending: list[dict] = []
        self.rows = 0
        if out is None:
            return
        try:
            self._tmp, fd = create_temp(out)
        except OSError as e:
            raise InputError(f"{out}: cannot write in {out.parent} ({e.strerror or e})")
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            self._file = os.fdopen(fd, "wb")
            self._schema = pa.schema([(name, _arrow_type(pa, kinds.get(name, KIND_OTHER))) for name in self.columns])
            self._parquet = pq.ParquetWriter(self._file, self._schema)
        else:
            self._file = os.fdopen(fd, "w", encoding="utf-8", newline="")
            if self.format == "csv":
                self._csv = csv.DictWriter(self._file, fieldnames=self.columns, restval="", lineterminator="\n")
                self._csv.writeheader()

    def write(self, rows: Sequence[dict]) -> None:
        try:
            self._write(rows)
        except OSError as e:
            if self.out is None:
                raise  # stdout: a closed pipe is the caller's to report
            raise OutputError(f"{self.out}: cannot write ({e.strerror or e})") from None

    def _write(self, rows: Sequence[dict]) -> None:
        self.rows += len(rows)
        if self.out is None:
            sys.stdout.write(jsonl(rows))
            sys.stdout.flush()
        elif self._parquet is not None:
            self._pending.extend(rows)
            if len(self._pending) >= PARQUET_ROW_GROUP:
                self._flush_parquet()
        elif self._csv is not None:
            for r in rows:
                self._csv.writerow({k: cell(v) for k, v in r.items()})
        else:
            assert self._file is not None
            self._file.write(jsonl(rows))

    def _flush_parquet(self) -> None:
        import pyarrow as pa

        if not self._pending:
            return
        columns = [_arrow_values(pa, [r.get(f.name) for r in self._pending], f.type) for f in self._schema]
        self._parquet.write_table(pa.Table.from_arrays(columns, schema=self._schema))
        self._pending = []

    def commit(self) -> None:
        """Finish OUT: flush, sync and rename the temporary file into place."""
        try:
            self._commit()
        except OSError as e:
            raise OutputError(f"{self.out}: cannot write ({e.strerror or e})") from None

    def _commit(self) -> None:
        if self._file is None:
            return
        if self._parquet is not None:
            self._flush_parquet()
            self._parquet.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        self._file = None
        assert self._tmp is not None and self.out is not None
        os.replace(self._tmp, self.out)
        self._tmp = None

    def abort(self) -> None:
        """Drop what was written: no OUT, no temporary file."""
        if self._file is not None:
            with contextlib.suppress(Exception):
                if self._parquet is not None:
                    self._parquet.close()
                self._file.close()
            self._file = None
        if self._tmp is not None:
            self._tmp.unlink(missing_ok=True)
            self._tmp = None


# Rows per Parquet row group: a reader's unit of work, and what the writer holds at once.
PARQUET_ROW_GROUP = 65536


def _arrow_type(pa: Any, kinds: int) -> Any:
    """A typed column where the values share a scalar type; otherwise their JSON text. Labels
    are written as they come: a column Arrow cannot type (an id that is sometimes a number,
    sometimes a word; nested values) must not lose them."""
    kinds &= ~KIND_NULL
    if kinds == 0:
        return pa.null()
    if kinds == KIND_STR:
        return pa.string()
    if kinds == KIND_INT:
        return pa.int64()
    if kinds & ~(KIND_INT | KIND_FLOAT) == 0:
        return pa.float64()
    if kinds == KIND_BOOL:
        return pa.bool_()
    return pa.string()  # mixed or nested: JSON text


def _arrow_values(pa: Any, values: list[Any], kind: Any) -> Any:
    if kind == pa.string():
        values = [v if v is None or isinstance(v, str) else cell(v) for v in values]
    return pa.array(values, type=kind)


def column_kinds(rows: Iterable[dict]) -> tuple[list[str], dict[str, int]]:
    """Every field of `rows` in order of first appearance, and the kinds of its values."""
    columns: dict[str, None] = {}
    kinds: dict[str, int] = {}
    for r in rows:
        for name, value in r.items():
            columns.setdefault(name)
            kinds[name] = kinds.get(name, 0) | value_kind(value)
    return list(columns), kinds


def write_rows(rows: list[dict], out: Path | None) -> None:
    """Rows to OUT in its format, atomically; without OUT, JSON lines on stdout."""
    columns, kinds = column_kinds(rows)
    writer = RowWriter(out, columns, kinds)
    try:
        writer.write(rows)
        writer.commit()
    except BaseException:
        writer.abort()
        raise


def summary_path(out: Path) -> Path:
    return out.with_name(out.name + ".summary.json")
