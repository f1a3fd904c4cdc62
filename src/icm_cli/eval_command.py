"""`icm eval`: score a labels file against a gold file. Loading and printing only; the
metrics live in `icm_cli.metrics`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from icm_cli.errors import EXIT_BELOW_THRESHOLD, InputError, where
from icm_cli.metrics import Agreement, compute_agreement, normalize_label


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; raise InputError on any problem."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{where(path)}: file not found") from None
    except IsADirectoryError:
        raise InputError(f"{where(path)}: is a directory, not a file") from None
    except OSError as exc:
        raise InputError(f"{where(path)}: cannot read ({exc.strerror})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{where(path)}: not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start})") from None
    text = text.removeprefix("\ufeff")
    # split("\n") rather than splitlines(): JSON strings may legally hold U+2028 and friends,
    # which splitlines() would treat as line breaks.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{where(path, number)}: invalid JSON ({exc.msg})") from None
        except (ValueError, RecursionError) as exc:  # e.g. an integer past Python's digit limit
            raise InputError(f"{where(path, number)}: invalid JSON ({str(exc).splitlines()[0]})") from None
        if not isinstance(record, dict):
            raise InputError(f"{where(path, number)}: expected a JSON object, got {_json_type(record)}")
        yield number, record


def load_labels(path: Path, id_field: str, label_field: str) -> dict[str, str]:
    """Read a JSONL file into {id: normalized label}, keeping file order."""
    labels: dict[str, str] = {}
    first_line: dict[str, int] = {}
    for number, record in read_jsonl(path):
        for field in (id_field, label_field):
            if field not in record:
                raise InputError(f"{where(path, number, field)} is missing")
        raw_id = record[id_field]
        # bool is an int subclass, but True as an id is almost certainly a wrong --id-field.
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise InputError(f"{where(path, number, id_field)} must be a string or integer, not {_json_type(raw_id)}")
        item_id = str(raw_id)
        if item_id in labels:
            raise InputError(f"{where(path, number)}: duplicate id '{item_id}' (first on line {first_line[item_id]})")
        try:
            labels[item_id] = normalize_label(record[label_field])
        except ValueError as exc:
            raise InputError(f"{where(path, number, label_field)}: {exc}") from None
        first_line[item_id] = number
    if not labels:
        raise InputError(f"{where(path)}: no records")
    return labels


def eval_command(
    labels: Path = typer.Argument(..., help="JSONL file of predicted labels."),
    gold: Path = typer.Option(..., "--gold", help="JSONL file of gold labels to compare against."),
    id_field: str = typer.Option("id", "--id-field", help="Field holding the record id, in both files."),
    label_field: str = typer.Option("label", "--label-field", help="Field holding the predicted label."),
    gold_field: str = typer.Option("label", "--gold-field", help="Field holding the gold label."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    min_accuracy: float | None = typer.Option(
        None, "--min-accuracy", min=0.0, max=1.0, help="Exit with code 1 if accuracy is below this."
    ),
) -> None:
    """Compare predicted labels with gold labels: accuracy, kappa, per-class scores, confusion."""
    pred = load_labels(labels, id_field, label_field)
    truth = load_labels(gold, id_field, gold_field)
    if pred.keys().isdisjoint(truth.keys()):
        raise InputError(f"no ids in common between {labels} and {gold} (id field '{id_field}')")
    agreement = compute_agreement(pred, truth)
    passed = min_accuracy is None or agreement.accuracy >= min_accuracy

    if as_json:
        payload = agreement.to_json() | {"min_accuracy": min_accuracy, "passed": passed}
        typer.echo(json.dumps(payload))
    else:
        render_agreement(agreement, Console(), min_accuracy=min_accuracy, passed=passed)
    if not passed:
        raise typer.Exit(EXIT_BELOW_THRESHOLD)


def render_agreement(agreement: Agreement, console: Console, *, min_accuracy: float | None, passed: bool) -> None:
    low, high = agreement.ci95
    cov = agreement.coverage
    summary = Table(title="Agreement with gold", show_header=False)
    summary.add_column("metric", style="bold")
    summary.add_column("value")
    summary.add_row("Accuracy", f"{agreement.accuracy:.4f}  (95% CI {low:.4f}-{high:.4f})")
    summary.add_row("Cohen's kappa", f"{agreement.kappa:.4f}")
    summary.add_row("Matched ids (n)", str(agreement.n))
    summary.add_row(
        "Gold ids without a label", _missing(cov.missing_in_pred, cov.gold_total, cov.missing_in_pred_examples)
    )
    summary.add_row(
        "Labeled ids not in gold", _missing(cov.missing_in_gold, cov.pred_total, cov.missing_in_gold_examples)
    )
    if min_accuracy is not None:
        verdict = "[green]passed[/]" if passed else "[red]FAILED[/]"
        summary.add_row("Threshold", f"{verdict} (accuracy {'>=' if passed else '<'} {min_accuracy:g})")
    console.print(summary)

    per_class = Table(title="Per class")
    per_class.add_column("class")
    for name in ("precision", "recall", "F1", "support"):
        per_class.add_column(name, justify="right")
    for label, stats in agreement.per_class.items():
        scores = (f"{x:.4f}" for x in (stats.precision, stats.recall, stats.f1))
        per_class.add_row(escape(label), *scores, str(stats.support))
    console.print(per_class)

    confusion = Table(title="Confusion matrix (rows: gold, columns: predicted)")
    confusion.add_column("gold \\ pred")
    for label in agreement.labels:
        confusion.add_column(escape(label), justify="right")
    for gold_label, row in agreement.confusion.items():
        confusion.add_row(escape(gold_label), *(str(row[p]) for p in agreement.labels))
    console.print(confusion)


def _missing(count: int, total: int, examples: tuple[str, ...]) -> str:
    text = f"{count} of {total}"
    if examples:
        more = ", ..." if count > len(examples) else ""
        text += " (e.g. " + ", ".join(escape(repr(e)) for e in examples) + more + ")"
    return text


def _json_type(value: object) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
