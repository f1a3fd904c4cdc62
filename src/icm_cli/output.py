"""Writing results: whole files or nothing (temp file + rename), never a half-written OUT."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Iterable

from .errors import InputError


def check_destination(out: Path, data: str, force: bool) -> None:
    if data != "-" and Path(data).exists() and out.exists() and os.path.samefile(out, data):
        raise InputError(f"{out}: output would overwrite the input file; choose another -o")
    if data != "-" and Path(out).resolve() == Path(data).resolve():
        raise InputError(f"{out}: output would overwrite the input file; choose another -o")
    if out.exists() and not force:
        raise InputError(f"{out}: already exists; pass --force to replace it")
    if not out.parent.exists():
        raise InputError(f"{out}: directory {out.parent} does not exist")


def atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def jsonl(rows: Iterable[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def write_rows(rows: list[dict], out: Path | None) -> None:
    text = jsonl(rows)
    if out is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        atomic_write_text(out, text)


def summary_path(out: Path) -> Path:
    return out.with_name(out.name + ".summary.json")
