"""The `icm` command line: thin wiring of files, config and progress to the labelling run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from .commands.common import logger, stderr_console, user_errors, warn_if_defaults
from .commands.label import label_command
from .errors import InputError
from .eval_command import eval_command
from .stdout_pipe import run as run_app
from .typer_app import IcmTyper, print_version


EXIT_CODES = """Exit codes: 0 done; 1 eval accuracy under --min-accuracy or gold ids labelled under
--min-coverage; 2 usage or input error; 3 backend (model) error; 4 output could not be written
(disk full, permission); 130 interrupted (Ctrl-C); 129/143 stopped by SIGHUP/SIGTERM; 141 stdout
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


app.command("label")(user_errors(label_command))
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
    from .row_index import Selection, build_index
    from .runner import RunInput
    from .sources import open_source
    from .tasks import TaskShape

    warn_if_defaults(config, quiet)
    cfg = load_config(config, cli_overrides(sets, model, iterations))
    progress = not quiet and sys.stderr.isatty()
    shape = TaskShape(cfg.task)
    source = open_source(data, progress=progress)
    run_input = RunInput(build_index(source, Selection(), shape.check, cfg.task.id_field), shape)
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
    log = logger(stderr_console(), quiet)
    backend = load_backend(cfg.backend, log, progress=progress)
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    try:
        results = run_compare(run_input, cfg, backend, truth, chosen, on_method=lambda m: log(f"running {m}"))
    finally:
        backend.close()
        source.close()
    rows = run_input.index.count
    gaps = gap_recovered(results)
    note = gap_note(results)
    if as_json:
        typer.echo(json.dumps({"model": backend.model_name, "rows": rows,
                               "methods": [{**r.to_json(), "gap_recovered": gaps[r.method]} for r in results],
                               "gap_note": note}))
        return
    table = Table(title=f"icm compare: {rows:,} rows, {backend.model_name}")
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
