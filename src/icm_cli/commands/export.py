"""`icm export`: labelled rows in the format a fine-tuning library reads as-is (TRL, transformers).
A thin Typer command over `run_export`; the formats are in icm_cli/export.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..errors import InputError
from .common import ForceOpt, OutOpt


def export_command(
    labels: Annotated[str, typer.Argument(help="What icm label wrote: JSONL (or CSV/Parquet), or - for JSONL on stdin.")],
    config: Annotated[Path, typer.Option("-c", "--config", help="The YAML config the labels were made with.")],
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="preference (comparison tasks), classification, "
                                     "or prompt-completion (claims tasks: true claims only).")],
    out: OutOpt = None,
    min_confidence: Annotated[Optional[float], typer.Option("--min-confidence", metavar="X",
                                                            help="Keep rows whose confidence >= X.")] = None,
    source: Annotated[str, typer.Option("--source", metavar="SOURCE", help="core (searched), transfer (labelled "
                                                                           "from the core) or all.")] = "all",
    chat: Annotated[bool, typer.Option("--chat", help="Conversational rows: lists of {role, content} messages.")] = False,
    separator: Annotated[str, typer.Option("--separator", show_default=False, help="Standard format: text put "
                                           "before each completion/chosen/rejected, as TRL joins prompt and "
                                           "completion as they are (default: a newline; '' for none).")] = "\n",
    label_field: Annotated[str, typer.Option("--label-field", help="Field holding the label.")] = "label",
    confidence_field: Annotated[str, typer.Option("--confidence-field", help="Field holding the confidence.")] = "confidence",
    text_field: Annotated[Optional[str], typer.Option("--text-field", help="classification: the input field to export "
                                                      "(default: the template's only field).")] = None,
    prompt_field: Annotated[Optional[str], typer.Option("--prompt-field", help="The field exported as the prompt "
                                                        "(default: from the template).")] = None,
    completion_field: Annotated[Optional[str], typer.Option("--completion-field", help="prompt-completion: the claim "
                                                            "field (default: the template's second field).")] = None,
    force: ForceOpt = False,
) -> None:
    """Write labelled rows in the format a fine-tuning library reads as-is (TRL, transformers).

    -o x.jsonl writes JSONL; a directory (dir/ or a name without suffix) is written by
    Dataset.save_to_disk; without -o, JSONL goes to stdout."""
    from ..export import ExportOptions

    opts = ExportOptions(fmt, min_confidence, source, label_field, confidence_field, chat, separator,
                         text_field, prompt_field, completion_field)
    print(run_export(labels, config, opts, out, force), file=sys.stderr)


def run_export(labels: str, config: Path, opts: object, out: Optional[str] = None, force: bool = False) -> str:
    """Export `labels` as `opts` say; returns the line that says what was written."""
    from ..config import load_config
    from ..data import load_rows
    from ..export import destination, export_rows, export_summary, save_directory
    from ..output import write_rows

    dest = destination(out, labels, force)  # first: a refused OUT is refused before anything is read
    cfg = load_config(config)
    result = export_rows(load_rows(labels), cfg.task, opts, str(config))  # type: ignore[arg-type]
    counts = export_summary(result, opts)  # type: ignore[arg-type]
    if not result.rows:
        raise InputError(f"{labels}: {counts}; no rows left, nothing written")
    if dest.directory:
        save_directory(result, dest.path)
    else:
        write_rows(result.rows, dest.path)
    return f"icm export: {counts}; {opts.format} rows to {dest.path or 'stdout'}"  # type: ignore[attr-defined]
