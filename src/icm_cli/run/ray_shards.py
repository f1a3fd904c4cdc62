"""OUT_DIR of `--engine ray`: `part-*.jsonl` shards, each written whole by one actor, the core's
shard, the summary and the driver's checkpoint; which of its files are icm's, and the ids the
finished shards hold, so that a re-run skips them."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ..foundation.errors import InputError
from ..data.labels_io import row_id
from ..data.row_index import hash64

SUMMARY = "icm-summary.json"
CHECKPOINT = "icm-checkpoint"
CORE_SHARD = "part-core.jsonl"


def check_out_dir(out: Path, force: bool) -> None:
    """OUT for the Ray engine is a directory of shards: absent, one of icm's to continue, or
    (with --force) one of icm's to start over in, finished or not (clear_out_dir)."""
    if out.suffix:
        raise InputError(f"{out}: --engine ray writes a directory of shards; name a directory (no extension)")
    if not out.exists():
        if not out.parent.exists():
            raise InputError(f"{out}: directory {out.parent} does not exist")
        return
    if not out.is_dir() or out.is_symlink():
        raise InputError(f"{out}: is not a directory; --engine ray writes a directory of shards")
    foreign = [p.name for p in out.iterdir() if not _ours(p.name)]
    if foreign:
        raise InputError(f"{out}: holds '{foreign[0]}', which icm did not write; choose another -o")
    if (out / SUMMARY).exists() and not force:
        raise InputError(f"{out}: holds a finished run; pass --force to replace it")


def clear_out_dir(out: Path) -> None:
    """--force starts over, in a finished OUT_DIR or an unfinished one (as it drops a local run's
    checkpoint: one the input or config no longer matches is otherwise a dead end). Called with
    OUT's lock held and the run's checks passed, so neither a live run's shards nor a dry run's
    OUT_DIR are removed."""
    if out.is_dir():
        for p in out.iterdir():
            if _ours(p.name):
                _remove(p)


def _ours(name: str) -> bool:
    return (name.startswith("part-") and name.endswith(".jsonl")) or name in (SUMMARY, CHECKPOINT) or (
        name.startswith(".part-") and name.endswith(".tmp"))


def _remove(p: Path) -> None:
    if p.is_dir():
        import shutil

        shutil.rmtree(p)
    else:
        p.unlink()


def finished_ids(out: Path, id_field: str) -> Any:
    """Hashes of the ids in the shards a run already wrote (sorted), and clears half-written ones."""
    import numpy as np

    hashes: list[int] = []
    for tmp in out.glob(".part-*.tmp"):
        tmp.unlink()
    for shard in sorted(out.glob("part-*.jsonl")):
        with open(shard, "rb") as f:
            for line in f:
                if line.strip():
                    hashes.append(hash64(row_id(json.loads(line)[id_field], shard.name, id_field)))
    return np.sort(np.array(hashes, dtype=np.int64))


def write_shard(path: Path, rows: list[dict[str, Any]]) -> None:
    """A shard whole or not at all: a temporary file renamed into place."""
    from ..data.json_out import jsonl

    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(jsonl(rows))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
