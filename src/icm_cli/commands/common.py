"""What every command shares: its options, one-line errors, the stderr log, stop signals, and
the command line that continues an interrupted run."""

from __future__ import annotations

import contextlib
import functools
import json
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from rich.console import Console

from ..foundation.errors import EXIT_INTERRUPTED, IcmError, Interrupted, Stopped

# ---- shared options: one definition each, used by every command that takes them

ConfigOpt = Annotated[Optional[Path], typer.Option("-c", "--config", help="YAML config (task, search, core, "
                                                                         "transfer, backend).")]
SetOpt = Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help="Override a config setting, e.g. "
                                                                            "--set search.alpha=50 (repeatable).")]
ModelOpt = Annotated[Optional[str], typer.Option("--model", help="Override backend.model.")]
IterationsOpt = Annotated[Optional[int], typer.Option("--iterations", help="Override search.iterations.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary on stderr.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Replace an existing OUT (only a file or directory "
                                                       "icm wrote).")]
RequireSignalOpt = Annotated[bool, typer.Option("--require-signal", help="Exit 1 when the gold-free signal "
                                                "check's verdict is none (labels are still written): a pipeline "
                                                "can refuse to train on noise.")]
OutOpt = Annotated[Optional[str], typer.Option("-o", "--out", metavar="PATH", help="Where to write (the command's "
                                               "help says which formats); stdout when absent.")]


def user_errors(fn: Callable) -> Callable:
    """Report IcmError as one line on stderr with its exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Interrupted as e:
            print(f"icm: {e.message}", file=sys.stderr)
            raise typer.Exit(e.exit_code)
        except IcmError as e:
            print(f"icm: error: {e.message}", file=sys.stderr)
            raise typer.Exit(e.exit_code)
        except KeyboardInterrupt as e:
            code = 128 + e.signum if isinstance(e, Stopped) else EXIT_INTERRUPTED
            print("icm: interrupted" if not isinstance(e, Stopped) else f"icm: stopped by {e.name}", file=sys.stderr)
            raise typer.Exit(code)

    return wrapper


def stderr_console() -> Console:
    return Console(stderr=True)


def logger(console: Console, quiet: bool) -> Callable[[str], None]:
    if quiet:
        return lambda msg: None
    return lambda msg: console.print(f"icm: {msg}", markup=False, highlight=False)


def bars_wanted(quiet: bool) -> bool:
    """Progress bars from `datasets` and the model conversion: only on a terminal, never with -q."""
    return not quiet and sys.stderr.isatty()


def warn_if_defaults(config: Optional[Path], quiet: bool) -> None:
    if config is None and not quiet:
        from ..foundation.config import TaskConfig

        task = TaskConfig()
        print(f"icm: warning: no -c CONFIG given, so the built-in defaults are used (template "
              f"{json.dumps(task.template)}, labels {', '.join(task.labels)}); icm init writes a starter config",
              file=sys.stderr)


def load_run_config(config: Optional[Path], sets: list[str], model: Optional[str], iterations: Optional[int],
                    seed: Optional[int] = None):
    from ..foundation.config import load_config
    from ..foundation.overrides import cli_overrides

    cfg = load_config(config, cli_overrides(sets, model, iterations))
    return cfg.with_seed(seed) if seed is not None else cfg


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the run as Ctrl-C does (raised in the main thread as Stopped):
    a scheduler's or a closed terminal's stop then keeps the checkpoint and removes temporary
    files, and the process exits 143 or 129 as a killed one would."""
    names = {signal.SIGTERM: "SIGTERM", signal.SIGHUP: "SIGHUP"}

    def stop(signum: int, _frame: Any) -> None:
        raise Stopped(signum, names.get(signum, f"signal {signum}"))

    try:
        previous = {s: signal.signal(s, stop) for s in names}
    except ValueError:  # not the main thread (a notebook's worker): leave signals alone
        yield
        return
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def command_line(ctx: Optional[typer.Context], drop: tuple[str, ...] = (), add: tuple[str, ...] = ()) -> str:
    """The command of `ctx` as a user would type it again, minus the `drop` options, plus `add`."""
    if ctx is None:
        return ""
    parts = ["icm", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in drop or value is None or value is False or value == () or value == []:
            continue
        if param.param_type_name == "argument":
            parts.append(str(value))
            continue
        if value == param.default:
            continue
        flag = max(param.opts, key=len)  # --long rather than -x: clearer when read back
        if getattr(param, "is_flag", False):
            parts.append(flag)
        elif isinstance(value, (list, tuple)):
            for v in value:
                parts += [flag, str(v)]
        else:
            parts += [flag, str(value)]
    parts += list(add)
    return shlex.join(parts)
