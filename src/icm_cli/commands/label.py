"""`icm label`: label a dataset. A thin Typer command over `run_label`, which a test or a
notebook can call with a `LabelJob`; the local labelling is here, `--engine ray`'s is
ray_labelling.py."""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..foundation.errors import EXIT_BELOW_THRESHOLD, BackendError, IcmError, InputError, Interrupted, OutputError, Stopped
from ..run.label_job import LabelJob, read_input  # LabelJob, run_label's argument, is imported from here
from ..data.row_index import KIND_FLOAT, KIND_NULL, KIND_STR, Selection
from ..algorithm.tasks import AGREEMENT_FIELD, SOURCE_FIELD, RowLabel
from .common import ConfigOpt, ForceOpt, IterationsOpt, ModelOpt, OutOpt, QuietOpt, RequireSignalOpt, SetOpt, bars_wanted, command_line, load_run_config, logger, stderr_console, stop_signals, warn_if_defaults


def label_command(
    ctx: typer.Context,
    data: Annotated[str, typer.Argument(help="Input rows: a JSONL, CSV or Parquet path, - for JSONL on stdin, "
                                             "hf://org/name, or a dataset directory (save_to_disk or a repo layout).")],
    config: ConfigOpt = None,
    out: OutOpt = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Override search.seed.")] = None,
    split: Annotated[Optional[str], typer.Option("--split", help="Split of an hf:// dataset or a dataset directory "
                                                                 "(default train; required for a saved DatasetDict).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Label only the first N rows.")] = None,
    sample: Annotated[Optional[int], typer.Option("--sample", min=1, help="Label a uniform sample of N rows "
                                                                          "(seeded by --seed; kept in input order).")] = None,
    sets: SetOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    model: ModelOpt = None,
    iterations: IterationsOpt = None,
    quiet: QuietOpt = False,
    force: ForceOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted run from the checkpoint "
                                                          "beside OUT.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate, show the first prompts and the token "
                                                            "estimate; load no model.")] = False,
    probe: Annotated[bool, typer.Option("--probe", help="With --dry-run: load the model and measure its speed, "
                                                        "for time estimates.")] = False,
    label_field: Annotated[str, typer.Option("--label-field", help="Output field for the label.")] = "label",
    confidence_field: Annotated[str, typer.Option("--confidence-field", help="Output field for the "
                                                                             "confidence.")] = "confidence",
    no_check: Annotated[bool, typer.Option("--no-check", help="Skip the gold-free signal check at the end "
                                                             "(check.signal: false).")] = False,
    require_signal: RequireSignalOpt = False,
    engine: Annotated[str, typer.Option("--engine", metavar="ENGINE", help="local (this process) or ray: the search "
                                        "here, the transfer as a Ray Data pipeline over a pool of actors (joins "
                                        "RAY_ADDRESS, else a local cluster); -o names a directory of shards, and "
                                        "the same command again skips the shards already written.")] = "local",
    report: Annotated[bool, typer.Option("--report", help="At the end, also write OUT.report.html: the page "
                                                          "icm report writes (needs -o OUT).")] = False,
    fixed: Annotated[Optional[str], typer.Option("--fixed", metavar="CORRECTIONS", help="Labels a person gave "
                     "(a Label Studio or Argilla export, or JSONL/CSV/Parquet of id and label), matched by "
                     "task.id_field: those rows keep them (icm_source human), join the core as demonstrations "
                     "the search never changes, and serve the transfer as context.")] = None,
    fixed_field: Annotated[str, typer.Option("--fixed-field", metavar="NAME", help="The label field of --fixed "
                           "(the Label Studio control or Argilla question).")] = "label",
) -> None:
    """Label DATA with the model's most coherent label set; rows out in input order.

    -o OUT: the format goes by the extension (.jsonl/.json, .csv, .parquet); with --engine ray, OUT is a
    directory of shards. OUT.summary.json beside it says how the run went; --report adds OUT.report.html."""
    warn_if_defaults(config, quiet)
    cfg = load_run_config(config, sets, model, iterations, seed)
    config_name = str(config) if config else "config"
    if engine not in ("local", "ray"):
        raise InputError(f"--engine is {engine!r}, must be local or ray")
    if no_check:
        cfg = dataclasses.replace(cfg, check=dataclasses.replace(cfg.check, signal=False))
    if require_signal and not cfg.check.signal:
        raise InputError("--require-signal needs the signal check: drop --no-check (or set check.signal: true)")
    again = command_line(ctx, drop=("force", "resume"), add=() if engine == "ray" else ("--resume",))
    summary = run_label(LabelJob(
        data, cfg, out=Path(out) if out is not None else None, config_name=config_name, split=split,
        selection=Selection(limit, sample, cfg.search.seed), quiet=quiet, force=force, resume=resume,
        dry_run=dry_run, probe=probe, label_field=label_field, confidence_field=confidence_field,
        model_from="--model" if model else config_name, resume_with=again, engine=engine, report=report,
        fixed=fixed, fixed_field=fixed_field))
    verdict = (summary.signal or {}).get("verdict") if summary is not None else None
    if require_signal and verdict == "none":
        print("icm: no signal: the check's verdict is none, so these labels are noise to this model "
              "(--require-signal); they are written all the same", file=sys.stderr)
        raise typer.Exit(EXIT_BELOW_THRESHOLD)


def run_label(job: LabelJob) -> Any:
    """Check everything that can be checked before a model loads, then label; returns the
    RunSummary (None for a dry run). Raises IcmError for the user's mistakes and failures."""
    from ..data.output import check_destination
    from ..data.run_lock import RunLock

    if job.report:
        _check_report(job)
    if job.fixed is not None:
        _check_fixed(job)
    if job.engine == "ray":
        from ..run.ray_labelling import run_ray

        return run_ray(job, _terminal(job))
    if job.resume and job.out is None:
        raise InputError("--resume needs -o OUT: the checkpoint lives beside OUT")
    if job.out is not None:
        check_destination(job.out, job.data, job.force)
    with contextlib.ExitStack() as stack:
        stack.enter_context(stop_signals())
        if job.out is not None:
            stack.enter_context(RunLock(job.out))
        run_input = read_input(job, stack, bars_wanted(job.quiet))
        if job.dry_run:
            from .label_report import print_dry_run

            print_dry_run(run_input, job.config, job.probe)
            return None
        return _Labelling(job, run_input).run(stack)


def _check_report(job: LabelJob) -> None:
    """--report is refused before anything runs where it could not be written at the end."""
    from ..data.output import check_replaceable
    from ..run.report_plots import pyplot
    from .report import report_path

    if job.out is None:
        raise InputError("--report needs -o OUT: the page is written beside OUT")
    if job.engine == "ray":
        raise InputError("--report reads OUT as one file; with --engine ray, join the shards and run icm report")
    pyplot()  # matplotlib, which draws the plots, is there
    check_replaceable(report_path(job.out), force=True)  # part of OUT, replaced as its summary is


def _check_fixed(job: LabelJob) -> None:
    """--fixed is refused before anything runs where its rows could not be matched."""
    if job.config.task.id_field is None:
        raise InputError(f"--fixed matches corrections to rows by id: set task.id_field in {job.config_name} "
                         f"(or --set task.id_field=NAME)")
    if job.fixed == "-" and job.data == "-":
        raise InputError("--fixed - and DATA - both read stdin: give one of them as a file")
    if job.fixed != "-" and not Path(job.fixed).is_file():  # type: ignore[arg-type]
        raise InputError(f"{job.fixed}: --fixed names no such file")


def _terminal(job: LabelJob) -> Any:
    """What the Ray labelling (on the run floor) shows people through: this command's console,
    log, stop signals, progress view and printed reports."""
    from ..run.ray_labelling import Terminal
    from .label_report import print_dry_run, print_summary
    from .progress import ProgressView

    console = stderr_console()
    return Terminal(console, logger(console, job.quiet), bars_wanted(job.quiet), stop_signals, ProgressView,
                    print_dry_run, print_summary)




class _Labelling:
    """One `icm label` run past its checks: checkpoint, output, model, run, summary."""

    def __init__(self, job: LabelJob, run_input: Any):
        self.job = job
        self.run_input = run_input
        self.console = stderr_console()
        self.log = logger(self.console, job.quiet)
        self.checkpoint: Any = None

    def run(self, stack: contextlib.ExitStack) -> Any:
        from ..backends import loading
        from ..data.output import RowWriter
        from .progress import ProgressView

        job, index = self.job, self.run_input.index
        state = self._open_checkpoint()
        added = job.added_fields()
        kinds = {**index.kinds, job.label_field: KIND_STR, job.confidence_field: KIND_FLOAT, SOURCE_FIELD: KIND_STR,
                 AGREEMENT_FIELD: KIND_FLOAT | KIND_NULL, **{f: KIND_STR | KIND_NULL for f in job.reading_fields()}}
        writer = RowWriter(job.out, [*index.fields, *added], kinds)
        stack.callback(writer.abort)  # nothing once committed
        try:
            self.log(f"{index.count:,} rows from {index.source.name}; loading model {job.config.backend.model}")
            backend = loading.load_backend(job.config.backend, self.log, progress=bars_wanted(job.quiet))
            stack.callback(backend.close)
            if self.checkpoint is not None:
                self.checkpoint.check_model(backend.identity)
            with ProgressView(self.console, job.config.task.labels, quiet=job.quiet) as view:
                summary = self._label(backend, view, state, writer)
            writer.commit()
        except (KeyboardInterrupt, BackendError, OutputError) as e:
            raise self._stopped(e) from None
        if job.out is not None:
            self._finish(summary)
            if job.report:
                self._report()
        if not job.quiet:
            from .label_report import print_summary

            print_summary(self.console, summary, job.out)
        return summary

    def _label(self, backend: Any, view: Any, state: Any, writer: Any) -> Any:
        from ..run.row_emitter import output_row
        from ..run.runner import RunHooks, label_dataset

        job = self.job
        several = job.config.core.several
        readings = job.reading_fields()

        def write(rows: list[tuple[int, dict[str, Any], RowLabel]]) -> None:
            out = []
            for _, fields, r in rows:
                out.append(output_row(fields, r, job.label_field, job.confidence_field, several, readings))
            writer.write(out)

        hooks = RunHooks(on_progress=view, monitor_field=job.config.task.monitor_field,
                         recorder=self.checkpoint, on_rows=write)
        return label_dataset(self.run_input, job.config, backend, hooks, resume=state)

    def _open_checkpoint(self) -> Any:
        """The checkpoint beside OUT, and the state to resume from (None: start afresh)."""
        from ..run.checkpoint import Checkpoint, checkpoint_path, legacy_files

        job = self.job
        if job.out is None:
            return None
        legacy = legacy_files(job.out)
        if legacy and not job.force:
            names = " and ".join(str(p) for p in legacy)
            raise InputError(f"{names}: a checkpoint from an earlier icm version, which this one cannot resume; "
                             f"pass --force to start over (it removes them)")
        for path in legacy:
            path.unlink()
        self.checkpoint = Checkpoint(checkpoint_path(job.out), job.config, self.run_input.index.digest,
                                     warn=lambda msg: self.log(f"warning: {msg}"), fixed=self.run_input.fixed.digest)
        if job.resume:
            return self.checkpoint.load()
        if self.checkpoint.exists():
            if not job.force:
                raise InputError(f"{self.checkpoint.describe()}: an interrupted run left a checkpoint; continue it "
                                 f"with: {job.resume_with or '--resume'} (or pass --force to start over)")
            self.checkpoint.remove()
        return None

    def _stopped(self, e: BaseException) -> IcmError:
        """The one line a stopped run ends with: what stopped it, and how to continue."""
        saved = self.checkpoint is not None and self.checkpoint.state_path.exists()
        again = self.job.resume_with or "the same command with --resume"
        keep = f"; the checkpoint keeps the finished work: continue with: {again}" if saved else ""
        if isinstance(e, Stopped):
            return Interrupted(f"stopped by {e.name}{keep}", 128 + e.signum)
        if isinstance(e, KeyboardInterrupt):
            return Interrupted(f"interrupted{keep}")
        assert isinstance(e, IcmError)
        e.message += keep
        return e

    def _finish(self, summary: Any) -> None:
        from ..data.output import atomic_write_text, summary_path, summary_text

        out = self.job.out
        assert out is not None
        try:
            atomic_write_text(summary_path(out), summary_text(summary.to_json()))
        except OSError as e:
            raise OutputError(f"{summary_path(out)}: cannot write ({e.strerror or e}); the labels are in {out}")
        self.checkpoint.remove()

    def _report(self) -> None:
        from .report import ReportJob, report_path, run_report

        job = self.job
        assert job.out is not None
        try:
            run_report(ReportJob(str(job.out), str(report_path(job.out)), id_field=job.config.task.id_field,
                                 label_field=job.label_field, confidence_field=job.confidence_field, force=True,
                                 quiet=job.quiet))
        except IcmError as e:
            e.message += f"; the labels are in {job.out}"
            raise
        self.log(f"report: {report_path(job.out)}")
