"""A reader that stops early (`icm eval ... | head -1`) ends icm the way it ends a Unix tool:
quietly, with exit code 141 (what a shell reports for a tool killed by SIGPIPE, 128 + 13).

Python ignores SIGPIPE so that a dropped socket raises an error instead of killing the process
(the openai backend needs that; restoring the default would kill a run whenever a server hangs
up), so a closed stdout arrives as BrokenPipeError. Rich (on a console write) and click (on any
other write) each catch it and exit 1, which reads as a failed eval gate. `run` sees that exit,
and a failure of the final flush, and turns them into 141.
"""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Callable
from typing import IO, Optional

from ..foundation.errors import EXIT_BROKEN_PIPE


def stdout_closed(stream: Optional[IO[str]] = None) -> bool:
    """True when stdout (the process's own, not a replacement) is a pipe or socket whose reader
    has gone. A BrokenPipeError alone does not say which pipe broke: one from a backend's worker
    must not pass for a closed stdout."""
    try:
        poller = select.poll()
        poller.register((stream or sys.__stdout__).fileno(), select.POLLOUT)
        events = poller.poll(0)
    except (AttributeError, OSError, ValueError):  # no real file descriptor
        return False
    return any(mask & (select.POLLERR | select.POLLHUP) for _, mask in events)


def silence_stdout() -> int:
    """Point stdout at /dev/null and return the exit code to leave with. Whatever is still
    buffered, and the interpreter's final flush, then go nowhere, so Python prints no
    'Exception ignored ... BrokenPipeError' on the way out."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.__stdout__.fileno())
    os.close(devnull)
    return EXIT_BROKEN_PIPE


def _stdout_identity() -> tuple[int, int] | None:
    try:
        st = os.fstat(sys.__stdout__.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return st.st_dev, st.st_ino


def run(app: Callable[[], object]) -> None:
    """Run the CLI (which always leaves by SystemExit) and map a closed stdout to 141."""
    before = _stdout_identity()
    devnull = os.stat(os.devnull)
    try:
        try:
            app()
        finally:
            sys.stdout.flush()  # fail here, where it can be reported, not at interpreter exit
    except BrokenPipeError:
        if not stdout_closed():
            raise
        sys.exit(silence_stdout())
    except SystemExit as done:
        # Rich and click exit 1 from inside their `except BrokenPipeError`; rich has already
        # pointed stdout at /dev/null, click leaves the closed pipe in place. An eval gate's
        # exit 1 comes from typer.Exit, with no broken pipe behind it, and stays 1.
        if done.code == 1 and isinstance(done.__context__, BrokenPipeError):
            silenced_by_rich = before != (devnull.st_dev, devnull.st_ino) == _stdout_identity()
            if silenced_by_rich or stdout_closed():
                sys.exit(silence_stdout())
        raise
