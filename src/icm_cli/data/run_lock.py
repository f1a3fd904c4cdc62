"""One run per OUT: a lock file beside OUT (OUT.lock), held while the run works.

Two runs writing one OUT would append to one checkpoint and race for one rename. The lock is an
fcntl lock, so the kernel releases it when its holder dies however it dies (kill -9 included),
and the file says who holds it. A run that finds it taken stops at once and names the holder.
Holding the lock also makes it safe to clear what a killed run left behind: its temporary files.
"""

from __future__ import annotations

import datetime
import fcntl
import glob
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any, Optional

from ..foundation.errors import InputError


def lock_path(out: Path) -> Path:
    return out.with_name(out.name + ".lock")


class RunLock:
    def __init__(self, out: Path):
        self.out = out
        self.path = lock_path(out)
        self._fd: Optional[int] = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def acquire(self) -> None:
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as e:
                raise InputError(f"{self.out}: cannot write in {self.out.parent or '.'} ({e.strerror or e})")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise InputError(f"{self.out}: another icm run is writing it ({holder}); wait for it to end "
                                 f"or stop it, then run again")
            # The holder before us may have removed the file between our open and our lock:
            # then we hold a lock on a file nobody else will see. Start over on the new one.
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                  "command": " ".join(["icm", *sys.argv[1:]])[:300]}
        os.ftruncate(fd, 0)
        os.write(fd, (json.dumps(holder) + "\n").encode())
        self._fd = fd
        self._clear_leftovers()

    def _clear_leftovers(self) -> None:
        """Temporary files of OUT that a killed run could not remove (`.OUT.XXXX.tmp`)."""
        directory = self.out.parent if str(self.out.parent) else Path(".")
        for tmp in directory.glob(glob.escape(f".{self.out.name}") + ".*.tmp"):
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def _read_holder(fd: int) -> str:
    try:
        doc = json.loads(os.pread(fd, 4096, 0) or b"{}")
        return f"pid {doc['pid']} on {doc['host']}, started {doc['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that left no details"
