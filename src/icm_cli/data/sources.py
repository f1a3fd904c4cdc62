"""Input rows as a stream: JSONL (a file or stdin), CSV, Parquet and Hugging Face datasets.

A source is read in passes and never held whole. `rows()` yields the rows in input order;
`read(positions)` fetches given rows again (a byte offset in a JSONL file, a row number in a
dataset), which is how a run reads its core and calibration sample and, for a task whose
consistency groups are spread over the file, a group's later rows. `datasets` keeps CSV,
Parquet and hub data as memory-mapped Arrow files, so iterating them holds one batch at a time.

Errors name `file:line` for JSONL and CSV and `source: row N` where a source has no lines.

Here a path becomes a source; every name of the readers is imported from here: the interface and
rows in memory (source_base.py), JSONL (jsonl_source.py), CSV, Parquet and datasets (arrow_source.py).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from .arrow_source import ARROW_BATCH, DEFAULT_SPLIT, HF_PREFIX, ArrowSource, datasets_progress, directory_source, load_hub, load_tabular
from ..foundation.errors import InputError
from .jsonl_source import MAX_LINE_BYTES, JsonlSource, parse_line
from .source_base import MemorySource, Numbering, Row, Source, content_key, new_digest

__all__ = [
    "ARROW_BATCH", "DEFAULT_SPLIT", "HF_PREFIX", "MAX_LINE_BYTES", "ArrowSource", "JsonlSource", "MemorySource",
    "Numbering", "Row", "Source", "content_key", "datasets_progress", "new_digest", "open_source", "parse_line",
]


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
            return ArrowSource(path, load_hub(path, name, split or DEFAULT_SPLIT), "row", None)
    if split is not None and (path == "-" or not Path(path).is_dir()):
        raise InputError(f"--split {split}: splits belong to hf:// datasets and dataset directories, not to {path}")
    if path == "-":
        return JsonlSource.spooled("<stdin>", sys.stdin.buffer)
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path}: file not found")
    if p.is_dir():
        with datasets_progress(progress):
            return directory_source(p, split)
    suffix = p.suffix.lower()
    if suffix in (".csv", ".parquet", ".pq"):
        kind = "csv" if suffix == ".csv" else "parquet"
        with datasets_progress(progress):
            return ArrowSource(str(p), load_tabular(p, kind), "line" if kind == "csv" else "row", p,
                               first_line=2 if kind == "csv" else 1)
    return JsonlSource(path, p)
