"""Reading input rows from JSONL (file or stdin), CSV, Parquet or a Hugging Face dataset, with
errors that name the line (or the row, where a source has no lines)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import json
import random
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Literal, Optional

from .errors import InputError

# A single line past this is almost surely a broken file (a binary blob, a missing newline);
# refusing it early keeps memory bounded and the message useful.
MAX_LINE_BYTES = 4 * 1024 * 1024


HF_PREFIX = "hf://"
DEFAULT_SPLIT = "train"


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line (JSONL, CSV) or row number (Parquet, Hugging Face datasets)
    fields: dict[str, Any]


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
    """Rows from a JSONL/CSV/Parquet file, `-` (JSONL on stdin), `hf://org/name` (a hub dataset),
    or a directory: one written by `Dataset.save_to_disk`, or a dataset repository's layout.

    `split` picks a split of a hub dataset or repository (default train) or of a saved
    DatasetDict (required there). `progress`: let `datasets` draw its progress bars.
    """
    if path.startswith(HF_PREFIX):
        name = path[len(HF_PREFIX):].strip("/")
        if not name:
            raise InputError(f"{path}: name a dataset, e.g. hf://org/name")
        with _datasets_progress(progress):
            return _load_hub(path, name, split or DEFAULT_SPLIT)
    if split is not None and (path == "-" or not Path(path).is_dir()):
        raise InputError(f"--split {split}: splits belong to hf:// datasets and dataset directories, not to {path}")
    if path == "-":
        return _parse_jsonl("<stdin>", sys.stdin.buffer.read())
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: file not found")
    if p.is_dir():
        with _datasets_progress(progress):
            return _load_directory(p, split)
    suffix = p.suffix.lower()
    if suffix in (".csv", ".parquet", ".pq"):
        with _datasets_progress(progress):
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
        raise InputError(f"{path}: cannot read {kind.upper()} ({_first_line(e)})")
    if kind == "csv":
        rows = [Row(i + 2, dict(r)) for i, r in enumerate(ds)]  # line 1 is the header
    else:
        rows = [Row(i + 1, dict(r)) for i, r in enumerate(ds)]
    if not rows:
        raise InputError(f"{path}: has no rows")
    return Dataset(str(path), rows, hashlib.sha256(path.read_bytes()).hexdigest()[:16],
                   "line" if kind == "csv" else "row")


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


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


@contextlib.contextmanager
def _datasets_progress(enabled: bool) -> Iterator[None]:
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


def _load_directory(path: Path, split: Optional[str]) -> Dataset:
    import datasets

    if not _is_saved_dataset(path):
        # A dataset repository's layout (data/train-00000.parquet, train.jsonl, ...), read the
        # way load_dataset reads a hub repository without a loading script.
        return _load_hub(str(path), str(path), split or DEFAULT_SPLIT)
    try:
        loaded = datasets.load_from_disk(str(path))
    except Exception as e:
        raise InputError(f"{path}: cannot read the saved dataset ({_first_line(e)})")
    if isinstance(loaded, datasets.DatasetDict):
        splits = ", ".join(loaded)
        if split is None:
            raise InputError(f"{path}: holds several splits ({splits}); choose one with --split")
        if split not in loaded:
            raise InputError(f"{path}: no split '{split}' (it has {splits})")
        loaded = loaded[split]
    elif split is not None:
        raise InputError(f"{path}: is a single dataset with no splits; drop --split {split}")
    return _from_hf(str(path), loaded)


def _load_hub(source: str, name: str, split: str) -> Dataset:
    import datasets

    try:
        loaded = datasets.load_dataset(name, split=split)
    except ValueError as e:
        # e.g. `Unknown split "test". Should be one of ['train'].`
        raise InputError(f"{source}: {_first_line(e)}")
    except Exception as e:  # offline, no such dataset, gated, broken files: many types
        raise InputError(f"{source}: cannot load the dataset ({type(e).__name__}: {_first_line(e)})")
    return _from_hf(source, loaded)


def _from_hf(source: str, ds: Any) -> Dataset:
    rows = [Row(i + 1, dict(r)) for i, r in enumerate(ds)]
    if not rows:
        raise InputError(f"{source}: has no rows")
    return Dataset(source, rows, _content_digest(rows), "row")


def _content_digest(rows: list[Row]) -> str:
    """A hash of the rows themselves: a dataset's files and fingerprints can change while its
    content does not, and the content is what a checkpoint must match."""
    h = hashlib.sha256()
    for row in rows:
        h.update(json.dumps(row.fields, sort_keys=True, ensure_ascii=False, default=repr).encode("utf-8", "replace"))
        h.update(b"\n")
    return h.hexdigest()[:16]


def select_rows(dataset: Dataset, limit: Optional[int] = None, sample: Optional[int] = None,
                seed: int = 0) -> Dataset:
    """The first `limit` rows, or a uniform sample of `sample` rows drawn with `seed`, kept in
    input order. The digest then names the data and the selection, so a checkpoint of one
    selection never resumes another."""
    if limit is None and sample is None:
        return dataset
    if limit is not None and sample is not None:
        raise InputError("--limit and --sample: pass one of them")
    n = len(dataset.rows)
    if limit is not None:
        chosen = list(range(min(limit, n)))
        how = f"limit={limit}"
    else:
        chosen = sorted(random.Random(seed).sample(range(n), min(sample, n)))  # type: ignore[arg-type]
        how = f"sample={sample},seed={seed}"
    h = hashlib.sha256(f"{dataset.digest}|{how}|".encode())
    h.update(",".join(map(str, chosen)).encode())
    return dataclasses.replace(dataset, rows=[dataset.rows[i] for i in chosen], digest=h.hexdigest()[:16])


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


def text_field(dataset: Dataset, row: Row, name: str, purpose: str) -> str:
    value = row.fields.get(name)
    if name not in row.fields:
        raise InputError(f"{dataset.at(row)}: field '{name}' ({purpose}) is missing; this row has {field_list(row.fields)}")
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise InputError(f"{dataset.at(row)}: field '{name}' ({purpose}) must be a string, got {_kind(value)}")
    if isinstance(value, (int, float)):
        return str(value)
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


def present_fields(dataset: Dataset) -> list[str]:
    """Every field some row has, in order of first appearance."""
    seen: dict[str, None] = {}
    for row in dataset.rows:
        seen.update(dict.fromkeys(row.fields))
    return list(seen)


def fields_everywhere_missing(dataset: Dataset, names: Iterable[str]) -> list[str]:
    present: set[str] = set()
    for row in dataset.rows:
        present.update(row.fields)
    return [n for n in names if n not in present]
