"""JSONL input (a file, or stdin spooled to one), read line by line; a row's position is its byte
offset. Errors name `file:line`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Optional, Sequence

from ..foundation.errors import InputError
from .source_base import Row, Source

# A single line past this is almost surely a broken file (a binary blob, a missing newline);
# refusing it early keeps memory bounded and the message useful.
MAX_LINE_BYTES = 4 * 1024 * 1024


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
