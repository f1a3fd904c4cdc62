"""Writing results: rows streamed into a temporary file renamed at the end, never a half-written OUT.

OUT's format follows its extension: JSON lines (.jsonl, .json, .ndjson), CSV or Parquet.
"""

from __future__ import annotations

import base64
import contextlib
import csv
import datetime
import decimal
import json
import os
import re
import secrets
import stat
import sys
from pathlib import Path
from typing import IO, Any, Iterable, Iterator, Literal, Mapping, Optional, Sequence

from .errors import InputError, OutputError
from .row_index import KIND_BOOL, KIND_FLOAT, KIND_INT, KIND_NULL, KIND_OTHER, KIND_STR, value_kind

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


# What Dataset.save_to_disk writes for one Dataset (datasets 2.19, the oldest pyproject allows,
# through 5.x): state.json, dataset_info.json and the shards data-00000-of-0000N.arrow, nothing
# else. A directory is taken for one only if it holds exactly that: both JSON files and every
# shard 0..N-1 of one N, all regular files. Anything more (a labels file, notes, a cache
# directory, a dotfile), anything less (an empty directory, a missing shard) or a link inside
# means someone else put it there, and `--force` would delete it with the rest. Names are enough:
# this tells icm's own output from everything else, not one saved dataset from another.
_SAVED_DATASET_JSON = ("dataset_info.json", "state.json")
_SHARD = re.compile(r"data-(\d{5,})-of-(\d{5,})\.arrow")


def _not_a_saved_dataset(path: Path) -> Optional[str]:
    """Why the directory at `path` is not one Dataset.save_to_disk wrote, or None if it is."""
    try:
        entries = {e.name: e for e in os.scandir(path)}
    except OSError as e:
        return f"it cannot be listed: {e.strerror or e}"
    if not entries:
        return "it is empty"
    for name, entry in sorted(entries.items()):
        if name not in _SAVED_DATASET_JSON and not _SHARD.fullmatch(name):
            return f"it holds '{name}'"
        if not entry.is_file(follow_symlinks=False):
            return f"'{name}' in it is not a regular file"
    for name in _SAVED_DATASET_JSON:
        if name not in entries:
            return f"it has no {name}"
    counts = {_SHARD.fullmatch(n).group(2) for n in entries if _SHARD.fullmatch(n)}
    if len(counts) != 1:
        return "its .arrow shards are not one set" if counts else "it has no data-*.arrow shard"
    count = counts.pop()
    for k in range(int(count)):
        shard = f"data-{k:05d}-of-{count}.arrow"
        if shard not in entries:
            return f"it has no {shard}"
    if len(entries) != len(_SAVED_DATASET_JSON) + int(count):
        return "its .arrow shards are not one set"
    return None


def replace_refusal(path: Path, directory: bool = False) -> Optional[str]:
    """Why `--force` may not replace `path`, or None where it may (or nothing is there).

    icm writes regular files (label, init, export to .jsonl) and, for export to a directory,
    what Dataset.save_to_disk writes; `--force` replaces only that kind of thing, so a mistyped
    -o can cost at most an earlier output, never the user's own directory, device or link.
    Links are refused whatever they point to: icm never writes one, and replacing it would
    swap the link for a file rather than write where it points.
    """
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return None  # nothing there to lose (or a parent that is not a directory: the caller says so)
    if stat.S_ISLNK(mode):
        return "is a symbolic link, which icm neither writes nor replaces"
    if directory:
        if stat.S_ISREG(mode):
            return "exists and is not a directory"
        if not stat.S_ISDIR(mode):
            return "is not a directory or a regular file, so not something icm wrote"
        why = _not_a_saved_dataset(path)
        if why is not None:
            return (f"is a directory icm did not write ({why}; Dataset.save_to_disk writes only "
                    f"state.json, dataset_info.json and data-*.arrow)")
        return None
    if stat.S_ISDIR(mode):
        return "is a directory, not a file icm wrote"
    if not stat.S_ISREG(mode):
        return "is not a regular file (a device, pipe or socket), so not one icm wrote"
    return None


def check_replaceable(path: Path, force: bool, directory: bool = False, shown: Optional[str] = None) -> None:
    """The one rule for every command's -o and --force: refuse what icm did not write, with or
    without --force (so nobody is told to pass --force for something it would not replace);
    refuse anything else that exists unless --force is given. Callers run it before reading input."""
    name = str(path) if shown is None else shown
    why = replace_refusal(path, directory)
    if why is not None:
        raise InputError(f"{name}: {why}; choose another -o")
    if os.path.lexists(path) and not force:
        raise InputError(f"{name}: already exists; pass --force to replace it")


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


@contextlib.contextmanager
def atomic_file(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A file that appears at `path` whole when the block ends, and not at all if it raises."""
    tmp, fd = _create_temp(path)
    try:
        with (os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="")) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


def atomic_write_texts(files: Sequence[tuple[Path, str]]) -> None:
    """Several files that belong together (an export and its configuration beside it): each is
    written whole into its temporary file first, and only then are they renamed into place, so a
    failure while writing (a full disk) leaves none of them, new or half-written."""
    written: list[tuple[Path, Path]] = []
    try:
        for path, text in files:
            tmp, fd = _create_temp(path)
            written.append((tmp, path))
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        for tmp, path in written:
            os.replace(tmp, path)
    except BaseException:
        for tmp, _ in written:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


def json_text(value: Any, indent: Optional[int] = None) -> str:
    """One JSON document, with the same handling of non-JSON values (dates, bytes, numpy) as rows get."""
    return json.dumps(value, ensure_ascii=False, default=_json_default, indent=indent) + "\n"


def _json_default(value: Any) -> Any:
    # Rows from Parquet or a Hugging Face dataset can hold values JSON has no type for.
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, decimal.Decimal):
        return str(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return str(value)


def jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, default=_json_default) + "\n" for r in rows)


def _cell(value: Any) -> str:
    """A CSV cell: text as is, nothing for null, JSON for everything else (numbers, booleans,
    lists, objects), so a reader can tell `true` from "true" by the header's schema, not guess."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=_json_default)


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
            self._tmp, fd = _create_temp(out)
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
                self._csv.writerow({k: _cell(v) for k, v in r.items()})
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
        values = [v if v is None or isinstance(v, str) else _cell(v) for v in values]
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


def _create_temp(path: Path) -> tuple[Path, int]:
    """A new temporary file beside `path` (`.NAME.XXXX.tmp`), created 0666 so the umask decides
    its permissions, as for any file a command writes (tempfile.mkstemp would make it 0600)."""
    directory = path.parent if str(path.parent) else Path(".")
    while True:
        tmp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue


def summary_path(out: Path) -> Path:
    return out.with_name(out.name + ".summary.json")


def summary_text(doc: Any) -> str:
    """A summary as people read it: objects a key a line, indented as json.dumps(indent=2) does,
    but a list of numbers or words (a search trace, the check's sample) on one line, not one value a
    line: thousands of lines of numbers would bury the few that people look for."""

    def flat(value: Any) -> bool:
        return not isinstance(value, dict) and (not isinstance(value, list) or all(flat(v) for v in value))

    def render(value: Any, level: int) -> str:
        pad, inner = "  " * level, "  " * (level + 1)
        if isinstance(value, dict) and value:
            items = [f"{inner}{json.dumps(k)}: {render(v, level + 1)}" for k, v in value.items()]
            return "{\n" + ",\n".join(items) + f"\n{pad}}}"
        if isinstance(value, list) and value and not flat(value):
            return "[\n" + ",\n".join(inner + render(v, level + 1) for v in value) + f"\n{pad}]"
        return json.dumps(value, separators=(", ", ": "))

    return render(doc, 0) + "\n"
