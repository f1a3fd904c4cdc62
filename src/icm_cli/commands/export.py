"""`icm export`: labelled rows in the format a fine-tuning library reads as-is (TRL, transformers),
or as a review queue for Label Studio or Argilla. A thin Typer command over `run_export` and
`run_review_export`; the formats are in icm_cli/export.py, review_export.py,
label_studio_export.py and argilla_export.py, the push in hub_push.py."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from ..foundation.errors import InputError
from .common import ForceOpt, OutOpt


def export_command(
    labels: Annotated[str, typer.Argument(help="What icm label wrote: JSONL (or CSV/Parquet), or - for JSONL on stdin.")],
    config: Annotated[Path, typer.Option("-c", "--config", help="The YAML config the labels were made with.")],
    fmt: Annotated[str, typer.Option("--format", metavar="FORMAT", help="preference (comparison tasks), classification, "
                                     "or prompt-completion (claims tasks: true claims only); label-studio or argilla: "
                                     "a review queue, most doubtful rows first.")],
    out: OutOpt = None,
    min_confidence: Annotated[Optional[float], typer.Option("--min-confidence", metavar="X",
                                                            help="Keep rows whose confidence >= X.")] = None,
    source: Annotated[str, typer.Option("--source", metavar="SOURCE", help="core (searched), transfer (labelled "
                                                                           "from the core), human (--fixed) or all.")] = "all",
    review: Annotated[Optional[int], typer.Option("--review", metavar="N", help="label-studio, argilla: keep the "
                                                  "first N rows of the review queue.")] = None,
    chat: Annotated[bool, typer.Option("--chat", help="Conversational rows: lists of {role, content} messages.")] = False,
    separator: Annotated[Optional[str], typer.Option("--separator", show_default=False, help="Standard format: text "
                                                     "put before each completion/chosen/rejected, as TRL joins prompt "
                                                     "and completion as they are (default: a newline; '' for none).")] = None,
    label_field: Annotated[str, typer.Option("--label-field", help="Field holding the label.")] = "label",
    confidence_field: Annotated[str, typer.Option("--confidence-field", help="Field holding the confidence.")] = "confidence",
    id_field: Annotated[Optional[str], typer.Option("--id-field", help="label-studio, argilla: the row id field "
                                                    "(default: the config's task.id_field, else id).")] = None,
    text_field: Annotated[Optional[str], typer.Option("--text-field", help="classification: the input field to export "
                                                      "(default: the template's only field).")] = None,
    prompt_field: Annotated[Optional[str], typer.Option("--prompt-field", help="The field exported as the prompt "
                                                        "(default: from the template).")] = None,
    completion_field: Annotated[Optional[str], typer.Option("--completion-field", help="prompt-completion: the claim "
                                                            "field (default: the template's second field).")] = None,
    push_to_hub: Annotated[Optional[str], typer.Option("--push-to-hub", metavar="ORG/NAME", help="Also upload the rows "
                                                       "as a Hugging Face Hub dataset (datasets' push_to_hub), the "
                                                       "run's summary as its card.")] = None,
    private: Annotated[bool, typer.Option("--private", help="--push-to-hub: make the repository private.")] = False,
    force: ForceOpt = False,
) -> None:
    """Write labelled rows for fine-tuning (TRL, transformers), or as a review queue for people.

    -o x.jsonl writes JSONL; a directory (dir/ or a name without suffix) is written by
    Dataset.save_to_disk; without -o, JSONL goes to stdout. Review formats (label-studio, argilla):
    -o x.json, with the tool's configuration beside it."""
    from ..run.review_export import REVIEW_FORMATS, ReviewOptions

    if fmt in REVIEW_FORMATS:

        given = {"--chat": chat, "--separator": separator is not None, "--text-field": text_field is not None,
                 "--prompt-field": prompt_field is not None, "--completion-field": completion_field is not None,
                 "--push-to-hub": push_to_hub is not None, "--private": private}
        refused = [flag for flag, on in given.items() if on]
        if refused:
            raise InputError(f"{refused[0]} does not apply to --format {fmt} (a review queue)")
        opts = ReviewOptions(fmt, review, min_confidence, source, label_field, confidence_field, id_field)
        print(run_review_export(labels, config, opts, out, force), file=sys.stderr)
        return
    from ..run.export import ExportOptions
    from ..run.hub_push import HubTarget

    for flag, on in (("--review", review is not None), ("--id-field", id_field is not None),
                     ("--private", private and push_to_hub is None)):
        if on:
            raise InputError(f"{flag} applies to " + ("--push-to-hub" if flag == "--private" else
                                                      "--format label-studio and argilla (a review queue)"))
    opts = ExportOptions(fmt, min_confidence=min_confidence, source=source, label_field=label_field,
                         confidence_field=confidence_field, chat=chat,
                         separator="\n" if separator is None else separator, text_field=text_field,
                         prompt_field=prompt_field, completion_field=completion_field)
    target = HubTarget(push_to_hub, private) if push_to_hub is not None else None
    print(run_export(labels, config, opts, out, force, target), file=sys.stderr)


def run_export(labels: str, config: Path, opts: object, out: Optional[str] = None, force: bool = False,
               hub: object = None) -> str:
    """Export `labels` as `opts` say (and push them to `hub`, a HubTarget); returns the line that
    says what was written."""
    from ..foundation.config import load_config
    from ..data.tables import load_rows
    from ..run.export import destination, export_rows, export_summary, save_directory, to_dataset
    from ..run.hub_push import card_text, check_repo_id, push
    from ..data.output import write_rows
    from ..run.review_export import run_summary

    if hub is not None:
        check_repo_id(hub.repo_id)  # type: ignore[attr-defined]
    # first: a refused OUT is refused before anything is read; pushing alone writes nothing here
    dest = destination(out, labels, force) if out is not None or hub is None else None
    cfg = load_config(config)
    result = export_rows(load_rows(labels), cfg.task, opts, str(config))  # type: ignore[arg-type]
    counts = export_summary(result, opts)  # type: ignore[arg-type]
    if not result.rows:
        raise InputError(f"{labels}: {counts}; no rows left, nothing written")
    said = f"icm export: {counts}; {opts.format} rows"  # type: ignore[attr-defined]
    places = []
    if hub is not None:
        card = card_text(hub.repo_id, f"{counts}; {opts.format} rows", run_summary(labels))  # type: ignore[attr-defined]
        places.append(push(to_dataset(result), hub, card, f"icm export: {counts}"))  # type: ignore[arg-type]
    if dest is not None:
        if dest.directory:
            save_directory(result, dest.path)
        else:
            write_rows(result.rows, dest.path)
        places.append(str(dest.path or "stdout"))
    return f"{said} to {' and '.join(places)}"


def run_review_export(labels: str, config: Path, opts: object, out: Optional[str] = None, force: bool = False) -> str:
    """Write the review queue of `labels` (opts: a ReviewOptions) as Label Studio's tasks and
    labelling config, or Argilla's records and settings; returns the line that says what was written."""
    from ..run import argilla_export, label_studio_export
    from ..foundation.config import load_config
    from ..data.tables import load_rows
    from ..data.output import atomic_write_texts, json_text
    from ..run.review_export import check_review_options, model_version, review_destination, review_queue, review_summary

    check_review_options(opts)  # type: ignore[arg-type]
    files = review_destination(out, labels, opts.format, force)  # type: ignore[attr-defined]
    cfg = load_config(config)
    if opts.format == "label-studio":  # type: ignore[attr-defined]
        label_studio_export.shown_fields(cfg.task)  # a template the tool cannot show is refused before reading
    queue = review_queue(load_rows(labels), cfg.task, opts, model_version(labels, cfg))  # type: ignore[arg-type]
    if not queue.items:
        raise InputError(f"{labels}: {review_summary(queue)}; no rows left, nothing written")
    if queue.format == "label-studio":
        main = json_text(label_studio_export.tasks(queue), indent=1)
        beside = label_studio_export.label_config(cfg.task)
        what = "Label Studio tasks", "labelling config"
    else:
        main = json_text(argilla_export.records(queue, opts.confidence_field), indent=1)  # type: ignore[attr-defined]
        beside = json_text(argilla_export.settings(queue, opts.confidence_field), indent=1)  # type: ignore[attr-defined]
        what = "Argilla records", "dataset settings"
    atomic_write_texts([(files.main, main), (files.beside, beside)])
    return (f"icm export: {review_summary(queue)}; {what[0]} to {files.main}, their {what[1]} to {files.beside} "
            f"(model_version {queue.model_version})")
