"""Files that appear whole or not at all (a temporary file beside the target, renamed into place),
and the one rule for what `-o` with `--force` may replace: only what icm writes."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import stat
from pathlib import Path
from typing import IO, Any, Iterator, Optional, Sequence

from ..foundation.errors import InputError


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


@contextlib.contextmanager
def atomic_file(path: Path, binary: bool = False) -> Iterator[IO[Any]]:
    """A file that appears at `path` whole when the block ends, and not at all if it raises."""
    tmp, fd = create_temp(path)
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
            tmp, fd = create_temp(path)
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


def create_temp(path: Path) -> tuple[Path, int]:
    """A new temporary file beside `path` (`.NAME.XXXX.tmp`), created 0666 so the umask decides
    its permissions, as for any file a command writes (tempfile.mkstemp would make it 0600)."""
    directory = path.parent if str(path.parent) else Path(".")
    while True:
        tmp = directory / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
