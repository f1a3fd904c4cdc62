"""The `icm` command line: thin wiring of files, config and progress to the labelling run."""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Callable, Optional

import typer
from rich.console import Console

from .errors import EXIT_INTERRUPTED, IcmError, InputError, Interrupted
from .eval_command import eval_command
from .stdout_pipe import run as run_app
from .typer_app import IcmTyper, print_version

from .tasks import AGREEMENT_FIELD, SOURCE_FIELD

EXIT_CODES = """Exit codes: 0 done; 1 eval accuracy under --min-accuracy or gold ids labelled under
--min-coverage; 2 usage or input error; 3 backend (model) error; 130 interrupted; 141 stdout
closed early (e.g. | head)."""

app = IcmTyper(
    add_completion=False,
    no_args_is_help=True,
    help="Label a dataset with no human labels by Internal Coherence Maximization (ICM).\n\n" + EXIT_CODES,
    pretty_exceptions_enable=False,
)


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=print_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    pass


def _stderr() -> Console:
    return Console(stderr=True)


def user_errors(fn: Callable) -> Callable:
    """Report IcmError as one line on stderr with its exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except IcmError as e:
            print(f"icm: error: {e.message}", file=sys.stderr)
            raise typer.Exit(e.exit_code)
        except KeyboardInterrupt:
            print("icm: interrupted", file=sys.stderr)
            raise typer.Exit(EXIT_INTERRUPTED)

    return wrapper


@app.command()
@user_errors
def label(
    data: str = typer.Argument(..., help="Input rows: a JSONL, CSV or Parquet path, - for JSONL on stdin, "
                                           "hf://org/name, or a dataset directory (save_to_disk or a repo layout)."),
    config: Optional[Path] = typer.Option(None, "-c", "--config", help="YAML config (task, search, batch, backend)."),
    out: Optional[Path] = typer.Option(None, "-o", "--out", help="Output file, format by extension: .jsonl/.json, "
                                                                   ".csv or .parquet; JSONL on stdout when absent."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Override search.seed."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of an hf:// dataset or a dataset directory "
                                                                "(default train; required for a saved DatasetDict)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Label only the first N rows."),
    sample: Optional[int] = typer.Option(None, "--sample", min=1, help="Label a uniform sample of N rows "
                                                                        "(seeded by --seed; kept in input order)."),
    sets: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a config setting, e.g. "
                                                                         "--set search.alpha=50 (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", help="Override backend.model."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Override search.iterations."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress or summary on stderr."),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT (and start over from any checkpoint)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from the checkpoint beside OUT."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Validate, show the first prompts and the token estimate; load no model."),
    probe: bool = typer.Option(False, "--probe", help="With --dry-run: load the model and measure its speed, for time estimates."),
    label_field: str = typer.Option("label", "--label-field", help="Output field for the label."),
    confidence_field: str = typer.Option("confidence", "--confidence-field", help="Output field for the confidence."),
) -> None:
    """Label DATA with the model's most coherent label set; rows out in input order."""
    from .backends.loading import load_backend, resolve_model
    from .checkpoint import Checkpoint, checkpoint_path
    from .config import load_config
    from .data import load_rows, row_ids, select_rows
    from .metrics import normalize_label
    from .output import check_destination, summary_path, write_rows, atomic_write_text
    from .overrides import cli_overrides
    from .progress import ProgressView
    from .runner import label_dataset
    from .tasks import build_task

    _warn_if_defaults(config, quiet)
    cfg = load_config(config, cli_overrides(sets, model, iterations))
    if seed is not None:
        cfg = cfg.with_seed(seed)
    if resume and out is None:
        raise InputError("--resume needs -o OUT: the checkpoint lives beside OUT")
    if out is not None:
        check_destination(out, data, force)
    dataset = load_rows(data, split, progress=not quiet and sys.stderr.isatty())
    dataset = select_rows(dataset, limit, sample, cfg.search.seed)
    added = [label_field, confidence_field, SOURCE_FIELD] + ([AGREEMENT_FIELD] if cfg.core.count > 1 else [])
    for row in dataset.rows:
        for name in added:
            if name in row.fields:
                hint = ("pass --label-field/--confidence-field to name the output fields"
                        if name in (label_field, confidence_field) else "rename it in the input")
                raise InputError(
                    f"{dataset.at(row)}: field '{name}' already exists in the input; {hint}"
                )
    # Every input error surfaces before the model loads.
    row_ids(dataset, cfg.task.id_field)
    build_task(dataset, cfg.task)
    if cfg.backend.type in ("hf", "vllm"):
        try:
            resolve_model(cfg.backend.model)
        except ValueError as e:
            raise InputError(f"{'--model' if model else config or 'config'}: 'backend.model' {e}")
    if dry_run:
        _print_dry_run(dataset, cfg, probe)
        return
    monitor = None
    if cfg.task.monitor_field:
        monitor = [_normalized_or_none(r.fields.get(cfg.task.monitor_field), normalize_label) for r in dataset.rows]
    console = _stderr()
    log = (lambda msg: None) if quiet else (lambda msg: console.print(f"icm: {msg}", markup=False, highlight=False))
    checkpoint = Checkpoint(checkpoint_path(out), cfg, dataset.digest) if out is not None else None
    state = None
    if checkpoint is not None:
        if resume:
            state = checkpoint.load()
        elif checkpoint.exists() and not force:
            raise InputError(
                f"{checkpoint.path}: an interrupted run left a checkpoint; pass --resume to continue it "
                f"or --force to start over"
            )
        elif force:
            checkpoint.remove()
    log(f"{len(dataset.rows)} rows from {dataset.source}; loading model {cfg.backend.model}")
    backend = load_backend(cfg.backend, log, progress=not quiet and sys.stderr.isatty())

    def output_row(index: int, r) -> dict:
        row = {**dataset.rows[index].fields, label_field: r.label, confidence_field: r.confidence,
               SOURCE_FIELD: r.source}
        if cfg.core.count > 1:
            row[AGREEMENT_FIELD] = r.agreement
        return row

    def stream(rows) -> None:
        # Without -o, rows go to stdout as soon as they are final, in input order.
        if out is None:
            write_rows([output_row(i, r) for i, r in rows], None)

    try:
        with ProgressView(console, cfg.task.labels, quiet=quiet) as view:
            results, summary = label_dataset(
                dataset, cfg, backend, view, monitor, resume=state, recorder=checkpoint, on_rows=stream,
            )
    except KeyboardInterrupt:
        where = "; checkpoint saved, continue with --resume" if checkpoint is not None else ""
        raise Interrupted(f"interrupted{where}")
    if out is not None:
        write_rows([output_row(i, r) for i, r in enumerate(results)], out)
    summary_json = json.dumps(summary.to_json(), indent=2)
    if out is not None:
        atomic_write_text(summary_path(out), summary_json + "\n")
        checkpoint.remove()
    if not quiet:
        _print_summary(console, summary, out)


def _warn_if_defaults(config: Optional[Path], quiet: bool) -> None:
    if config is None and not quiet:
        from .config import TaskConfig

        task = TaskConfig()
        print(f"icm: warning: no -c CONFIG given, so the built-in defaults are used (template "
              f"{json.dumps(task.template)}, labels {', '.join(task.labels)}); icm init writes a starter config",
              file=sys.stderr)


def _print_dry_run(dataset, cfg, probe: bool) -> None:
    from rich.table import Table

    from .backends.tokens import token_counter
    from .dry_run import dry_run, probe_rate

    count, how = token_counter(cfg.backend)
    report = dry_run(dataset, cfg, count)
    console = Console(soft_wrap=True)
    console.print(f"[bold]icm label --dry-run[/bold]: config {cfg.digest()}, {cfg.task.type}, labels "
                  f"{list(cfg.task.labels)}, method {report.method}")
    core_examples = sum(c.examples for c in report.cores)
    console.print(f"{report.rows:,} rows -> {report.examples:,} examples: {core_examples:,} in {len(report.cores)} "
                  f"core(s) labelled by {report.method}, {report.transfer_examples:,} by transfer (tokens: {how})")
    if report.cores:
        table = Table("core", "examples", "constraints", "tokens / U evaluation", "from scratch", "max evaluations",
                      "expected tokens")
        for c, est in enumerate(report.cores[:20]):
            table.add_row(str(c + 1), str(est.examples), str(est.constraints), f"{est.tokens_per_evaluation:,}",
                          f"{est.tokens_from_scratch:,}", f"{est.max_evaluations:,}", f"{est.expected_tokens:,}")
        console.print(table)
    rate = probe_rate(cfg, dataset) if probe else None

    def when(tokens: int) -> str:
        return f", about {_duration(tokens / rate)} at {rate:,.0f} tokens/s (measured)" if rate else ""

    console.print(f"search phase: about {report.search_tokens():,} tokens{when(report.search_tokens())} "
                  f"(at most {report.search_tokens_bound():,})")
    console.print(f"transfer phase: about {report.transfer_tokens:,} tokens{when(report.transfer_tokens)}")
    if not probe:
        console.print("time: pass --probe to load the model and measure its speed on these prompts")
    for k, (prompt, conts) in enumerate(report.first_prompts):
        console.rule(f"prompt {k + 1}, exactly as the model reads it (after a BOS token)")
        sys.stdout.write(prompt + "\n")
        sys.stdout.flush()
        console.rule(f"scored continuations: {', '.join(map(repr, conts))}")


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _normalized_or_none(value, normalize) -> Optional[str]:
    try:
        return normalize(value)
    except ValueError:
        return None


def _print_summary(console: Console, summary, out: Optional[Path]) -> None:
    from rich.table import Table

    table = Table(title="icm label: summary", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    s = summary
    table.add_row("model", f"{s.model} ({s.backend})")
    table.add_row("config hash / seed", f"{s.config_hash} / {s.seed}")
    table.add_row("method", s.method)
    table.add_row("rows", f"{s.rows:,}: {s.core_rows:,} labelled by {s.method} on {s.cores} core(s), "
                          f"{s.transfer_rows:,} by transfer")
    if s.cores:
        table.add_row("iterations", f"{s.iterations} ({s.converged_cores}/{s.cores} cores converged)")
        table.add_row("acceptance rate", f"{s.accepted}/{s.proposals} = {s.acceptance_rate:.2%}")
        table.add_row("final U", ", ".join(f"{u:.3f}" for u in s.final_utility))
        table.add_row("inconsistencies left", str(s.inconsistencies_left))
    table.add_row("labels", ", ".join(f"{k}: {v}" for k, v in sorted(s.label_counts.items())))
    if s.mean_agreement is not None:
        table.add_row("core agreement (transfer)", f"{s.mean_agreement:.3f}")
    table.add_row("tokens scored", f"{s.tokens_scored:,} (of {s.tokens_requested:,} in prompts; {s.prefix_reuse:.1%} reused)")
    table.add_row("wall time", f"{s.wall_time_s:.1f} s (search {s.search_s:.1f} s, {s.tokens_search:,} tokens; "
                               f"transfer {s.transfer_s:.1f} s, {s.tokens_transfer:,} tokens)")
    if out is not None:
        table.add_row("written", f"{out} and {out.name}.summary.json")
    console.print(table)


app.command("eval")(user_errors(eval_command))


@app.command()
@user_errors
def compare(
    data: str = typer.Argument(..., metavar="DATA", help="A labelled sample: JSONL, CSV or Parquet (gold is read from --gold only)."),
    gold: Path = typer.Option(..., "--gold", help="Gold labels: rows with the id field and a label field."),
    config: Optional[Path] = typer.Option(None, "-c", "--config", help="YAML config, as for icm label."),
    methods: str = typer.Option(",".join(("zero_shot", "random_few_shot", "bootstrap", "icm", "golden")), "--methods",
                                help="Comma-separated: zero_shot, random_few_shot, bootstrap, icm, golden."),
    gold_field: str = typer.Option("label", "--gold-field", help="Field holding the gold label."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Nothing on stderr."),
    sets: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="Override a config setting (repeatable)."),
    model: Optional[str] = typer.Option(None, "--model", help="Override backend.model."),
    iterations: Optional[int] = typer.Option(None, "--iterations", help="Override search.iterations."),
) -> None:
    """Run zero-shot, random few-shot, bootstrap, ICM and golden many-shot side by side on a
    labelled sample: accuracy with its 95% interval, tokens and wall time for each."""
    from rich.table import Table

    from .backends.loading import load_backend
    from .compare import compare as run_compare
    from .compare import format_gap, gap_note, gap_recovered
    from .config import load_config
    from .data import load_rows
    from .metrics import normalize_label
    from .overrides import cli_overrides

    _warn_if_defaults(config, quiet)
    cfg = load_config(config, cli_overrides(sets, model, iterations))
    progress = not quiet and sys.stderr.isatty()
    dataset = load_rows(data, progress=progress)
    gold_rows = load_rows(str(gold), progress=progress)
    id_field = cfg.task.id_field
    truth: dict[str, str] = {}
    for k, row in enumerate(gold_rows.rows):
        key = str(row.fields.get(id_field)) if id_field else str(k)
        if id_field and id_field not in row.fields:
            raise InputError(f"{gold_rows.at(row)}: field '{id_field}' (the id field) is missing")
        if gold_field not in row.fields:
            raise InputError(f"{gold_rows.at(row)}: field '{gold_field}' is missing")
        try:
            truth[key] = normalize_label(row.fields[gold_field])
        except ValueError as e:
            raise InputError(f"{gold_rows.at(row)}: field '{gold_field}': {e}")
    console = _stderr()
    log = (lambda msg: None) if quiet else (lambda msg: console.print(f"icm: {msg}", markup=False, highlight=False))
    backend = load_backend(cfg.backend, log, progress=not quiet and sys.stderr.isatty())
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    results = run_compare(dataset, cfg, backend, truth, chosen, on_method=lambda m: log(f"running {m}"))
    gaps = gap_recovered(results)
    note = gap_note(results)
    if as_json:
        typer.echo(json.dumps({"model": backend.model_name, "rows": len(dataset.rows),
                               "methods": [{**r.to_json(), "gap_recovered": gaps[r.method]} for r in results],
                               "gap_note": note}))
        return
    table = Table(title=f"icm compare: {len(dataset.rows):,} rows, {backend.model_name}")
    for name in ("method", "accuracy", "95% CI", "gap recovered", "tokens", "wall s", "core / transfer rows"):
        table.add_column(name, justify="left" if name == "method" else "right")
    for r in results:
        gap = gaps[r.method]
        table.add_row(r.method, f"{r.accuracy:.4f}", f"{r.ci95[0]:.3f}-{r.ci95[1]:.3f}",
                      format_gap(gap), f"{r.tokens:,}", f"{r.seconds:.1f}",
                      f"{r.core_rows:,} / {r.transfer_rows:,}")
    out_console = Console()
    if not out_console.is_terminal:
        out_console = Console(width=120)  # a log or a pipe: do not squeeze the table to 80 columns
    out_console.print(table)
    if note is not None and not quiet:
        # stderr, so stdout stays the table alone; print, not rich, so it stays one line
        print(f"icm: gap recovered: -, {note}", file=sys.stderr)


@app.command()
@user_errors
def export(
    labels: str = typer.Argument(..., help="What icm label wrote: JSONL (or CSV/Parquet), or - for JSONL on stdin."),
    config: Path = typer.Option(..., "-c", "--config", help="The YAML config the labels were made with."),
    fmt: str = typer.Option(..., "--format", metavar="FORMAT", help="preference (comparison tasks), classification, or "
                                                  "prompt-completion (claims tasks: true claims only)."),
    out: Optional[str] = typer.Option(None, "-o", "--out", metavar="PATH", help="x.jsonl: JSONL; a directory (dir/ or a name "
                                      "without suffix): Dataset.save_to_disk; stdout JSONL when absent."),
    min_confidence: Optional[float] = typer.Option(None, "--min-confidence", metavar="X", help="Keep rows whose confidence >= X."),
    source: str = typer.Option("all", "--source", metavar="SOURCE", help="core (searched), transfer (labelled from the core) or all."),
    chat: bool = typer.Option(False, "--chat", help="Conversational rows: lists of {role, content} messages."),
    separator: str = typer.Option("\n", "--separator", show_default=False, help="Standard format: text put "
                                  "before each completion/chosen/rejected, as TRL joins prompt and completion as "
                                  "they are (default: a newline; '' for none)."),
    label_field: str = typer.Option("label", "--label-field", help="Field holding the label."),
    confidence_field: str = typer.Option("confidence", "--confidence-field", help="Field holding the confidence."),
    text_field: Optional[str] = typer.Option(None, "--text-field", help="classification: the input field to export "
                                             "(default: the template's only field)."),
    prompt_field: Optional[str] = typer.Option(None, "--prompt-field", help="The field exported as the prompt "
                                               "(default: from the template)."),
    completion_field: Optional[str] = typer.Option(None, "--completion-field", help="prompt-completion: the claim "
                                                   "field (default: the template's second field)."),
    force: bool = typer.Option(False, "--force", help="Replace an existing OUT."),
) -> None:
    """Write labelled rows in the format a fine-tuning library reads as-is (TRL, transformers)."""
    from .config import load_config
    from .data import load_rows
    from .export import ExportOptions, destination, export_rows, export_summary, save_directory
    from .output import write_rows

    dest = destination(out, labels, force)  # first: a refused OUT is refused before anything is read
    cfg = load_config(config)
    opts = ExportOptions(fmt, min_confidence, source, label_field, confidence_field, chat, separator,
                         text_field, prompt_field, completion_field)
    result = export_rows(load_rows(labels), cfg.task, opts, str(config))
    counts = export_summary(result, opts)
    if not result.rows:
        raise InputError(f"{labels}: {counts}; no rows left, nothing written")
    if dest.directory:
        save_directory(result, dest.path)
    else:
        write_rows(result.rows, dest.path)
    print(f"icm export: {counts}; {fmt} rows to {dest.path or 'stdout'}", file=sys.stderr)


@app.command()
@user_errors
def init(
    task_type: str = typer.Option("classification", "--type", help="classification | claims | comparison"),
    out: str = typer.Option("icm.yaml", "-o", "--out", metavar="PATH",
                            help="Where to write the starter config; - for stdout."),
    force: bool = typer.Option(False, "--force", help="Replace an existing file."),
) -> None:
    """Write a commented starter config for a task type, sized for the embedded CPU model."""
    from .starter import write_starter

    write_starter(task_type, out, force)
    if out != "-":
        print(f"wrote {out}: edit the template and labels, then run icm label DATA -c {out} --dry-run", file=sys.stderr)


def main() -> None:
    run_app(app)  # a closed stdout (| head) exits 141, quietly: see stdout_pipe


if __name__ == "__main__":
    main()
