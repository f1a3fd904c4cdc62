"""Input rows as a stream: JSONL (a file or stdin), CSV, Parquet and Hugging Face datasets.

A source is read in passes and never held whole. `rows()` yields the rows in input order;
`read(positions)` fetches given rows again (a byte offset in a JSONL file, a row number in a
dataset), which is how a run reads its core and calibration sample and, for a task whose
consistency groups are spread over the file, a group's later rows. `datasets` keeps CSV,
Parquet and hub data as memory-mapped Arrow files, so iterating them holds one batch at a time.

Errors name `file:line` for JSONL and CSV and `source: row N` where a source has no lines.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Literal, Optional, Sequence

from .errors import InputError, first_line

# A single line past this is almost surely a broken file (a binary blob, a missing newline);
# refusing it early keeps memory bounded and the message useful.
MAX_LINE_BYTES = 4 * 1024 * 1024

HF_PREFIX = "hf://"
DEFAULT_SPLIT = "train"
# Rows per Arrow batch when iterating a dataset: large enough to amortise the conversion,
# small enough to stay a few MB.
ARROW_BATCH = 1024

Numbering = Literal["line", "row"]


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line (JSONL, CSV) or row number (Parquet, datasets); 0 when read back by position
    fields: dict[str, Any]
    position: int = -1  # where `Source.read` finds it again


class Source:
    """Rows in input order, read as often as a run needs them. Subclasses implement `rows`,
    `read` and `content_digest`."""

    name: str
    numbering: Numbering = "line"

    def at(self, row: Row) -> str:
        """Where a row is, for an error message."""
        if self.numbering == "line":
            return f"{self.name}:{row.line}"
        return f"{self.name}: row {row.line}"

    def rows(self, digest: Optional[Any] = None) -> Iterator[Row]:
        """Every row in input order; `digest` (a hashlib object) is fed what identifies the rows."""
        raise NotImplementedError

    def read(self, positions: Sequence[int]) -> list[Row]:
        """The rows at `positions` (from Row.position), in the order given."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> "Source":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_source(path: str, split: Optional[str] = None, progress: bool = False) -> Source:
    """A JSONL/CSV/Parquet file, `-` (JSONL on stdin), `hf://org/name` (a hub dataset), or a
    directory: one written by `Dataset.save_to_disk`, or a dataset repository's layout.

    `split` picks a split of a hub dataset or repository (default train) or of a saved
    DatasetDict (required there). `progress`: let `datasets` draw its progress bars.
    """
    if path.startswith(HF_PREFIX):
        name = path[len(HF_PREFIX):].strip("/")
        if not name:
            raise InputError(f"{path}: name a dataset, e.g. hf://org/name")
        with datasets_progress(progress):
            return ArrowSource(path, _load_hub(path, name, split or DEFAULT_SPLIT), "row", None)
    if split is not None and (path == "-" or not Path(path).is_dir()):
        raise InputError(f"--split {split}: splits belong to hf:// datasets and dataset directories, not to {path}")
    if path == "-":
        return JsonlSource.spooled("<stdin>", sys.stdin.buffer)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: file not found")
    if p.is_dir():
        with datasets_progress(progress):
            return _directory(p, split)
    suffix = p.suffix.lower()
    if suffix in (".csv", ".parquet", ".pq"):
        kind = "csv" if suffix == ".csv" else "parquet"
        with datasets_progress(progress):
            return ArrowSource(str(p), _load_tabular(p, kind), "line" if kind == "csv" else "row", p,
                               first_line=2 if kind == "csv" else 1)
    return JsonlSource(path, p)


class MemorySource(Source):
    """Rows already in memory (a notebook's list of dicts, a test's): a row's position is its index."""

    def __init__(self, name: str, rows: Sequence[dict[str, Any]]):
        self.name = name
        self._rows = list(rows)

    def rows(self, digest: Optional[Any] = None) -> Iterator[Row]:
        if not self._rows:
            raise InputError(f"{self.name}: has no rows")
        for k, fields in enumerate(self._rows):
            if digest is not None:
                digest.update(content_key(fields))
            yield Row(k + 1, fields, k)

    def read(self, positions: Sequence[int]) -> list[Row]:
        return [Row(0, self._rows[p], p) for p in positions]


# ---- JSONL ---------------------------------------------------------------------------------


class JsonlSource(Source):
    """A JSONL file, read line by line; a row's position is its byte offset."""

    def __init__(self, name: str, path: Path, spool: Optional[Path] = None):
        self.name = name
        self.path = path
        self._spool = spool  # a copy of stdin, removed on close
        self._reader: Optional[BinaryIO] = None

    @classmethod
    def spooled(cls, name: str, stream: BinaryIO) -> "JsonlSource":
        """Stdin copied to a temporary file as it arrives: later passes read the copy."""
        fd, tmp = tempfile.mkstemp(prefix="icm-stdin-", suffix=".jsonl")
        with os.fdopen(fd, "wb") as f:
            shutil.copyfileobj(stream, f, 1 << 20)
        return cls(name, Path(tmp), spool=Path(tmp))

    def _open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")
        except OSError as e:
            raise InputError(f"{self.name}: cannot read ({e.strerror})")

    def rows(self, digest: Optional[Any] = None) -> Iterator[Row]:
        found = False
        with self._open() as f:
            offset, number = 0, 0
            while True:
                raw = f.readline(MAX_LINE_BYTES + 2)
                if not raw:
                    break
                number += 1
                if digest is not None:
                    digest.update(raw)
                start, offset = offset, offset + len(raw)
                size = len(raw) - raw.endswith(b"\n")
                if size > MAX_LINE_BYTES:
                    if not raw.endswith(b"\n"):
                        size += _rest_of_line(f, digest)
                    raise InputError(f"{self.name}:{number}: line is {size:,} bytes, over the "
                                     f"{MAX_LINE_BYTES:,}-byte limit")
                fields = parse_line(self.name, number, raw, start)
                if fields is not None:
                    found = True
                    yield Row(number, fields, start)
        if not found:
            raise InputError(f"{self.name}: is empty")

    def read(self, positions: Sequence[int]) -> list[Row]:
        if self._reader is None:
            self._reader = self._open()
        out = []
        for position in positions:
            self._reader.seek(position)
            raw = self._reader.readline(MAX_LINE_BYTES + 2)
            fields = parse_line(self.name, 0, raw, position)
            if fields is None:
                raise InputError(f"{self.name}: changed while icm was reading it (no row at byte {position})")
            out.append(Row(0, fields, position))
        return out

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._spool is not None:
            self._spool.unlink(missing_ok=True)
            self._spool = None


def _rest_of_line(f: BinaryIO, digest: Optional[Any]) -> int:
    """Skip to the end of an over-long line: the bytes it had left, its newline not counted."""
    size = 0
    while True:
        part = f.readline(1 << 20)
        if digest is not None:
            digest.update(part)
        size += len(part)
        if not part or part.endswith(b"\n"):
            return size - part.endswith(b"\n")


def parse_line(source: str, number: int, raw: bytes, offset: int) -> Optional[dict[str, Any]]:
    """One JSONL line as a row's fields; None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InputError(f"{source}:{number}: not UTF-8 (byte 0x{raw[e.start]:02x} at offset {offset + e.start})")
    if not text.strip():
        return None
    if offset == 0 and text.startswith("\ufeff"):
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
    if "\\ud" in text or "\\uD" in text:  # only an escape can smuggle in a lone surrogate
        bad = _unencodable_field(value)
        if bad is not None:
            raise InputError(
                f"{source}:{number}: field '{bad}' holds invalid text (an unpaired UTF-16 surrogate such as \\ud800)"
            )
    return value


def _unencodable_field(row: dict[str, Any]) -> Optional[str]:
    """The first top-level field whose text cannot be written as UTF-8 (lone surrogates)."""
    for key, value in row.items():
        try:
            json.dumps({key: value}, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return key
    return None


# ---- Arrow (CSV, Parquet, Hugging Face datasets) ----------------------------------------


class ArrowSource(Source):
    """A `datasets.Dataset`, memory-mapped; a row's position is its row number."""

    def __init__(self, name: str, dataset: Any, numbering: Numbering, file: Optional[Path], first_line: int = 1):
        self.name = name
        self.dataset = dataset
        self.numbering = numbering
        self.file = file  # a file's bytes identify its rows; a dataset's rows are hashed themselves
        self.first_line = first_line

    def rows(self, digest: Optional[Any] = None) -> Iterator[Row]:
        if len(self.dataset) == 0:
            raise InputError(f"{self.name}: has no rows")
        if digest is not None and self.file is not None:
            with open(self.file, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            digest = None
        number = 0
        for batch in self.dataset.iter(batch_size=ARROW_BATCH):
            for fields in _batch_rows(batch):
                if digest is not None:
                    digest.update(content_key(fields))
                yield Row(number + self.first_line, fields, number)
                number += 1

    def read(self, positions: Sequence[int]) -> list[Row]:
        out: list[Row] = []
        k = 0
        while k < len(positions):
            # Consecutive positions come as one slice: a group's rows, a chunk's rows.
            end = k + 1
            while end < len(positions) and positions[end] == positions[end - 1] + 1:
                end += 1
            start = int(positions[k])
            batch = self.dataset[start:start + (end - k)]
            out.extend(Row(0, fields, start + j) for j, fields in enumerate(_batch_rows(batch)))
            k = end
        return out


def _batch_rows(batch: dict[str, list[Any]]) -> Iterator[dict[str, Any]]:
    names = list(batch)
    columns = [batch[n] for n in names]
    for values in zip(*columns):
        yield dict(zip(names, values))


def content_key(fields: dict[str, Any]) -> bytes:
    """A row's content as bytes to hash: a dataset's files and fingerprints can change while its
    content does not, and the content is what a checkpoint must match."""
    return json.dumps(fields, sort_keys=True, ensure_ascii=False, default=repr).encode("utf-8", "replace") + b"\n"


def _load_tabular(path: Path, kind: str) -> Any:
    # `datasets` is how users expect CSV/Parquet to load; it is imported late because it is slow.
    import datasets

    options: dict[str, Any] = {}
    if kind == "csv":
        # CSV cells stay text: pandas would read `007` as 7 and `NA` or an empty cell as null,
        # which breaks ids joined against gold and turns words into missing values.
        options = {"keep_default_na": False, "na_filter": False}
        header = _csv_header(path)
        if header:
            options["features"] = datasets.Features({name: datasets.Value("string") for name in header})
    try:
        ds = datasets.load_dataset(kind, data_files=str(path), split="train", **options)
    except Exception as e:  # the library raises many types for a bad file
        raise InputError(f"{path}: cannot read {kind.upper()} ({first_line(e)})")
    return ds


def _csv_header(path: Path) -> Optional[list[str]]:
    """The column names, to type every column as text; None when unreadable (the CSV reader
    then reports the problem)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), None)
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    if not header or len(set(header)) != len(header):
        return None
    return header


@contextlib.contextmanager
def datasets_progress(enabled: bool) -> Iterator[None]:
    """`datasets` draws "Generating train split" bars and logs on a first load; only a person
    at a terminal who did not ask for quiet wants them."""
    import datasets
    from huggingface_hub.utils import logging as hub_logging  # hub retries ("Retrying in 8s")

    switch = not enabled and not datasets.are_progress_bars_disabled()
    verbosity, hub_verbosity = datasets.logging.get_verbosity(), hub_logging.get_verbosity()
    if switch:
        _quietly(datasets.disable_progress_bars)
    if not enabled:
        datasets.logging.set_verbosity_error()
        hub_logging.set_verbosity_error()
    try:
        yield
    finally:
        if switch:
            _quietly(datasets.enable_progress_bars)
        datasets.logging.set_verbosity(verbosity)
        hub_logging.set_verbosity(hub_verbosity)


def _quietly(fn: Any) -> None:
    # A HF_DATASETS_DISABLE_PROGRESS_BARS the user set wins; datasets then warns, we need not.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fn()


def _is_saved_dataset(path: Path) -> bool:
    """A directory written by Dataset.save_to_disk or DatasetDict.save_to_disk."""
    return ((path / "dataset_info.json").is_file() and (path / "state.json").is_file()) or (
        path / "dataset_dict.json"
    ).is_file()


def _directory(path: Path, split: Optional[str]) -> ArrowSource:
    import datasets

    if not _is_saved_dataset(path):
        # A dataset repository's layout (data/train-00000.parquet, train.jsonl, ...), read the
        # way load_dataset reads a hub repository without a loading script.
        return ArrowSource(str(path), _load_hub(str(path), str(path), split or DEFAULT_SPLIT), "row", None)
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise InputError(f"{path}: cannot read the saved dataset ({first_line(e)})")
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(loaded)
        if split is None:
            raise InputError(f"{path}: holds several splits ({splits}); choose one with --split")
        if split not in loaded:
            raise InputError(f"{path}: no split '{split}' (it has {splits})")
        loaded = loaded[split]
    elif split is not None:
        raise InputError(f"{path}: is a single dataset with no splits; drop --split {split}")
    return ArrowSource(str(path), loaded, "row", None)


def _load_hub(source: str, name: str, split: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(name, split=split)
    except ValueError as e:
        # e.g. `Unknown split "test". Should be one of ['train'].`
        raise InputError(f"{source}: {first_line(e)}")
    except Exception as e:  # offline, no such dataset, gated, broken files: many types
        raise InputError(f"{source}: cannot load the dataset ({type(e).__name__}: {first_line(e)})")


def new_digest() -> Any:
    return hashlib.sha256()

