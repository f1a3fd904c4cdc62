"""`icm label --engine ray` past the command: OUT is a directory of shards, the input is read and
checked here, the search and calibration run on this machine and the transfer on the Ray cluster
(ray_engine.RayRun); a re-run of the same command continues. What it shows people, and the stop
signals it honours, are lent by the command (`Terminal`): this floor cannot import them."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional

from ..foundation.config import Config
from ..foundation.errors import BackendError, InputError, Interrupted, OutputError, Stopped
from .label_job import LabelJob, read_input

Log = Callable[[str], None]


@dataclass(frozen=True)
class Terminal:
    """What the command that started a run lends it for people: its stderr console and log, whether
    progress bars are wanted, the stop signals (SIGTERM, SIGHUP) as Ctrl-C, the live progress view,
    and the dry run's and the summary's printed reports (commands.common, .progress, .label_report)."""

    console: Any
    log: Log
    bars: bool
    stop_signals: Callable[[], ContextManager[None]]
    progress_view: Callable[..., ContextManager[Any]]  # (console, labels, quiet=) -> the view a run updates
    print_dry_run: Callable[[Any, Config, bool], None]
    print_summary: Callable[[Any, Any, Optional[Path]], None]


def run_ray(job: LabelJob, terminal: Terminal) -> Any:
    """`--engine ray`: OUT is a directory of shards; a re-run of the same command continues."""
    from .ray_engine import RayRun
    from .ray_shards import check_out_dir, clear_out_dir
    from ..data.run_lock import RunLock

    if job.out is None:
        raise InputError("--engine ray needs -o OUT_DIR: the rows are written as shards into it")
    if job.selection.describe():
        raise InputError("--engine ray labels the whole input; --limit and --sample run locally")
    if job.resume:
        raise InputError("--engine ray continues an interrupted run by itself: run the same command without --resume")
    check_out_dir(job.out, job.force)
    with contextlib.ExitStack() as stack:
        stack.enter_context(terminal.stop_signals())
        stack.enter_context(RunLock(job.out))
        run_input = read_input(job, stack, terminal.bars)
        engine = RayRun(run_input, job, terminal.log)
        engine.check()
        if job.dry_run:
            terminal.print_dry_run(run_input, job.config, job.probe)
            return None
        if job.force:
            clear_out_dir(job.out)
        return RayLabelling(job, run_input, engine, terminal).run(stack)


class RayLabelling:
    """One `--engine ray` run past its checks: checkpoint, model, the engine's run, summary."""

    def __init__(self, job: LabelJob, run_input: Any, engine: Any, terminal: Terminal):
        self.job, self.run_input, self.engine, self.terminal = job, run_input, engine, terminal
        self.console, self.log = terminal.console, terminal.log

    def run(self, stack: contextlib.ExitStack) -> Any:
        from ..backends import loading
        from .checkpoint import Checkpoint
        from .ray_shards import CHECKPOINT

        job = self.job
        assert job.out is not None
        job.out.mkdir(exist_ok=True)
        checkpoint = Checkpoint(job.out / CHECKPOINT, job.config, self.run_input.index.digest,
                                warn=lambda msg: self.log(f"warning: {msg}"), fixed=self.run_input.fixed.digest,
                                start_over="pass --force to start over (it removes the shards written)")
        state = checkpoint.load() if checkpoint.exists() else None
        try:
            backend = loading.load_backend(job.config.backend, self.log, progress=self.terminal.bars)
            stack.callback(backend.close)
            checkpoint.check_model(backend.identity)
            with self.terminal.progress_view(self.console, job.config.task.labels, quiet=job.quiet) as view:
                summary = self.engine.run(backend, checkpoint, state, view)
        except (KeyboardInterrupt, BackendError, OutputError) as e:
            again = f"; the shards written are kept: continue with: {job.resume_with}"
            if isinstance(e, Stopped):
                raise Interrupted(f"stopped by {e.name}{again}", 128 + e.signum) from None
            if isinstance(e, KeyboardInterrupt):
                raise Interrupted(f"interrupted{again}") from None
            e.message += again
            raise
        checkpoint.remove()
        if not job.quiet:
            self.terminal.print_summary(self.console, summary, job.out)
        return summary
