"""CSV, Parquet and Hugging Face datasets (the hub, a saved dataset, a repository's layout) as
`datasets.Dataset`s, memory-mapped: iterating one holds one batch at a time; a row's position is
its row number. CSV cells stay text."""

from __future__ import annotations

import contextlib
import csv
import warnings
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from ..foundation.errors import InputError, first_line
from .source_base import Numbering, Row, Source, content_key

HF_PREFIX = "hf://"
DEFAULT_SPLIT = "train"
# Rows per Arrow batch when iterating a dataset: large enough to amortise the conversion,
# small enough to stay a few MB.
ARROW_BATCH = 1024


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


def load_tabular(path: Path, kind: str) -> Any:
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


def directory_source(path: Path, split: Optional[str]) -> ArrowSource:
    import datasets

    if not _is_saved_dataset(path):
        # A dataset repository's layout (data/train-00000.parquet, train.jsonl, ...), read the
        # way load_dataset reads a hub repository without a loading script.
        return ArrowSource(str(path), load_hub(str(path), str(path), split or DEFAULT_SPLIT), "row", None)
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


def load_hub(source: str, name: str, split: str) -> Any:
    import datasets

    try:
        return datasets.load_dataset(name, split=split)
    except ValueError as e:
        # e.g. `Unknown split "test". Should be one of ['train'].`
        raise InputError(f"{source}: {first_line(e)}")
    except Exception as e:  # offline, no such dataset, gated, broken files: many types
        raise InputError(f"{source}: cannot load the dataset ({type(e).__name__}: {first_line(e)})")
