"""The input as Ray Data reads it for `--engine ray`: which kind it is (JSONL, CSV, Parquet; a file,
a directory of shards or an object-store URL), and the dataset of its rows, read as icm reads them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from ..foundation.errors import InputError


def is_remote(data: str) -> bool:
    """An object-store or other URL that Ray Data reads and icm's own reader does not."""
    return "://" in data and not data.startswith("hf://") and not data.startswith("file://")


def input_kind(data: str) -> str:
    """How Ray Data reads the input: lines of JSONL, or CSV/Parquet as Arrow."""
    path = data.rstrip("/")
    suffix = Path(path).suffix.lower()
    if suffix in (".csv",):
        return "csv"
    if suffix in (".parquet", ".pq"):
        return "parquet"
    if suffix in (".jsonl", ".json", ".ndjson"):
        return "jsonl"
    local = Path(path)
    if local.is_dir():
        kinds = {input_kind(str(p)) for p in local.rglob("*") if p.is_file() and not p.name.startswith(".")}
        kinds.discard("unknown")
        if len(kinds) == 1:
            return kinds.pop()
        raise InputError(f"{data}: --engine ray reads a directory of .jsonl, .csv or .parquet shards of one kind "
                         f"(found {', '.join(sorted(kinds)) or 'none'})")
    return "unknown"


def read_rows(ray: Any, data: str, kind: str, fields: tuple[str, ...]) -> Any:
    """The input as a Ray dataset: JSONL as raw lines (parsed as icm parses them), CSV with
    every column as text (as icm reads CSV), Parquet as typed Arrow rows."""
    import pyarrow as pa

    path = data.removeprefix("file://")
    if kind == "jsonl":
        return ray.data.read_datasource(_lines_datasource()(path, file_extensions=None))
    if kind == "csv":
        import pyarrow.csv as pacsv

        convert = pacsv.ConvertOptions(column_types={name: pa.string() for name in fields}, strings_can_be_null=False)
        return ray.data.read_csv(path, convert_options=convert)
    if kind == "parquet":
        return ray.data.read_parquet(path)
    raise InputError(f"{data}: --engine ray reads .jsonl, .csv or .parquet (a file, a directory of shards or a URL)")


def _lines_datasource() -> Any:
    """A Ray file datasource that streams a JSONL file's lines as bytes, split on newlines only
    (Ray's read_text splits on U+2028 too, which JSON strings may hold, and reads a file whole)."""
    from ray.data._internal.delegating_block_builder import DelegatingBlockBuilder
    from ray.data.datasource import FileBasedDatasource

    class JsonLines(FileBasedDatasource):
        def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
            rest = b""
            while True:
                block = f.read(8 << 20)
                if not block:
                    break
                lines = (rest + block).split(b"\n")
                rest = lines.pop()
                yield _lines_block(DelegatingBlockBuilder(), lines)
            if rest:
                yield _lines_block(DelegatingBlockBuilder(), [rest])

    return JsonLines


def _lines_block(builder: Any, lines: list[bytes]) -> Any:
    for line in lines:
        if line.strip():
            builder.add({"line": line})
    return builder.build()
