"""Errors meant for users: each carries the exit code the CLI returns and a one-line message."""

from __future__ import annotations

EXIT_OK = 0
EXIT_BELOW_THRESHOLD = 1
EXIT_USAGE = 2
EXIT_BACKEND = 3
# The output (or its checkpoint) could not be written: a full disk, a permission taken away
# during the run. The checkpoint keeps what was finished.
EXIT_OUTPUT = 4
EXIT_INTERRUPTED = 130
# What a shell reports for a Unix tool killed by SIGPIPE (128 + 13) when its reader goes away
# (`icm eval ... | head -1`); 1 would read as a failed eval gate.
EXIT_BROKEN_PIPE = 141


class IcmError(Exception):
    """An error the CLI reports as one line, with no traceback."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class InputError(IcmError):
    """Bad data, config or arguments: the user can fix it by changing what they pass."""

    exit_code = EXIT_USAGE


class BackendError(IcmError):
    """The model could not be loaded or could not score prompts."""

    exit_code = EXIT_BACKEND


def first_line(e: BaseException) -> str:
    """An exception's message cut to its first line, for one-line errors."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def where(path: str, line: int | None = None, field: str | None = None) -> str:
    """Format a location prefix like `data.jsonl:12: field 'text'`."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if field is not None:
        out += f": field '{field}'"
    return out


class OutputError(IcmError):
    """OUT, its summary or its checkpoint could not be written."""

    exit_code = EXIT_OUTPUT


class Interrupted(IcmError):
    """Ctrl-C or a stop signal: the run stopped cleanly (its checkpoint, if any, is saved)."""

    exit_code = EXIT_INTERRUPTED

    def __init__(self, message: str, exit_code: int = EXIT_INTERRUPTED):
        super().__init__(message)
        self.exit_code = exit_code


class Stopped(KeyboardInterrupt):
    """SIGTERM or SIGHUP (Slurm, Kubernetes, a closed ssh session), raised in the main thread so
    that a run stops the way Ctrl-C stops it: temporary files removed, checkpoint kept."""

    def __init__(self, signum: int, name: str):
        super().__init__(name)
        self.signum = signum
        self.name = name
