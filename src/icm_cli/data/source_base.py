"""A source of input rows, whatever its format: `Row` and the `Source` interface every reader has,
rows already in memory, and the hashes that identify a source's rows. sources.py opens a source;
the readers are jsonl_source.py and arrow_source.py."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Iterator, Literal, Optional, Sequence

from ..foundation.errors import InputError

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


def content_key(fields: dict[str, Any]) -> bytes:
    """A row's content as bytes to hash: a dataset's files and fingerprints can change while its
    content does not, and the content is what a checkpoint must match."""
    return json.dumps(fields, sort_keys=True, ensure_ascii=False, default=repr).encode("utf-8", "replace") + b"\n"


def new_digest() -> Any:
    return hashlib.sha256()
