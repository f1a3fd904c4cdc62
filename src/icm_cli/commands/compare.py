"""`icm compare`: "is ICM better than just asking the model?", on a labelled sample. A thin Typer
command over `run_comparison`; the methods themselves are in icm_cli/compare.py."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from ..foundation.config import Config
from ..foundation.errors import EXIT_BELOW_THRESHOLD, InputError
from .common import ConfigOpt, IterationsOpt, ModelOpt, QuietOpt, RequireSignalOpt, SetOpt, bars_wanted, load_run_config, logger, stderr_console, warn_if_defaults

METHODS = ("zero_shot", "random_few_shot", "bootstrap", "icm", "icm_alone", "golden")


@dataclass(frozen=True)
class Comparison:
    model: str
    rows: int
    results: list[Any]  # compare.MethodResult


def compare_command(
    data: Annotated[str, typer.Argument(metavar="DATA", help="A labelled sample: JSONL, CSV or Parquet (gold is "
                                                             "read from --gold only).")],
    gold: Annotated[Path, typer.Option("--gold", help="Gold labels: rows with the id field and a label field.")],
    config: ConfigOpt = None,
    methods: Annotated[str, typer.Option("--methods", help="Comma-separated: zero_shot, random_few_shot, "
                                                           "bootstrap, icm (as icm label runs it), icm_alone (the "
                                                           "many-shot reading alone), golden.")] = ",".join(METHODS),
    gold_field: Annotated[str, typer.Option("--gold-field", help="Field holding the gold label.")] = "label",
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of a table.")] = False,
    quiet: QuietOpt = False,
    sets: SetOpt = [],  # noqa: B006 - typer reads the default, never mutates it
    model: ModelOpt = None,
    iterations: IterationsOpt = None,
    require_signal: RequireSignalOpt = False,
) -> None:
    """Run zero-shot, random few-shot, bootstrap, ICM and golden many-shot side by side on a
    labelled sample: accuracy with its 95% interval, the gold-free signal verdict, tokens and wall
    time for each."""
    warn_if_defaults(config, quiet)
    cfg = load_run_config(config, sets, model, iterations)
    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    comparison = run_comparison(data, gold, cfg, chosen, gold_field, quiet)
    print_comparison(comparison, as_json, quiet)
    if require_signal:
        mine = [r for r in comparison.results if r.method == cfg.search.method]
        if mine and mine[0].verdict == "none":
            print(f"icm: no signal: the {cfg.search.method} labels' verdict is none (--require-signal)", file=sys.stderr)
            raise typer.Exit(EXIT_BELOW_THRESHOLD)


def run_comparison(data: str, gold: Path, cfg: Config, methods: tuple[str, ...], gold_field: str = "label",
                   quiet: bool = True) -> Comparison:
    """Every method on `data`, scored against the gold file."""
    from ..backends import loading
    from ..run.compare import compare
    from ..data.labels_io import load_labels
    from ..data.row_index import Selection, build_index
    from ..run.runner import RunInput
    from ..data.sources import open_source
    from ..algorithm.tasks import TaskShape

    shape = TaskShape(cfg.task)
    with open_source(data, progress=bars_wanted(quiet)) as source:
        run_input = RunInput(build_index(source, Selection(), shape.check, cfg.task.id_field), shape)
        if cfg.task.id_field is None:
            raise InputError("icm compare joins the sample and the gold by id: set task.id_field")
        truth = load_labels(str(gold), cfg.task.id_field, gold_field).labels
        log = logger(stderr_console(), quiet)
        backend = loading.load_backend(cfg.backend, log, progress=bars_wanted(quiet))
        try:
            results = compare(run_input, cfg, backend, truth, methods, on_method=lambda m: log(f"running {m}"))
        finally:
            backend.close()
        return Comparison(backend.model_name, run_input.index.count, results)


def print_comparison(comparison: Comparison, as_json: bool, quiet: bool) -> None:
    from ..run.compare import format_gap, gap_note, gap_recovered

    results = comparison.results
    gaps = gap_recovered(results)
    note = gap_note(results)
    if as_json:
        typer.echo(json.dumps({"model": comparison.model, "rows": comparison.rows,
                               "methods": [{**r.to_json(), "gap_recovered": gaps[r.method]} for r in results],
                               "gap_note": note}))
        return
    table = Table(title=f"icm compare: {comparison.rows:,} rows, {comparison.model}")
    for name in ("method", "accuracy", "95% CI", "gap recovered", "signal", "tokens", "wall s", "core / transfer rows"):
        table.add_column(name, justify="left" if name in ("method", "signal") else "right")
    for r in results:
        table.add_row(r.method, f"{r.accuracy:.4f}", f"{r.ci95[0]:.3f}-{r.ci95[1]:.3f}", format_gap(gaps[r.method]),
                      r.verdict or "-", f"{r.tokens:,}", f"{r.seconds:.1f}", f"{r.core_rows:,} / {r.transfer_rows:,}")
    out_console = Console()
    if not out_console.is_terminal:
        out_console = Console(width=120)  # a log or a pipe: do not squeeze the table to 80 columns
    out_console.print(table)
    if note is not None and not quiet:
        # stderr, so stdout stays the table alone; print, not rich, so it stays one line
        print(f"icm: gap recovered: -, {note}", file=sys.stderr)
