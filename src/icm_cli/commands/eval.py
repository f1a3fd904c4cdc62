"""`icm eval`: score a labels file against a gold file. Gating and printing only; the files are
read by `labels_io`, the metrics live in `metrics`."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..data.corrections import load_corrections
from ..foundation.errors import EXIT_BELOW_THRESHOLD, InputError
from ..data.labels_io import LabelFile, load_labels
from ..foundation.metrics import Agreement, ConfidenceRow, LabelSets, Slice, accuracy_by_confidence, accuracy_by_group, compare_label_sets, compute_agreement, normalize_label
from ..algorithm.tasks import SOURCE_FIELD


# Fixed, round thresholds rather than deciles of the observed confidences: the table is read to
# pick a cut-off to apply to new labels (`jq 'select(.confidence >= 0.9)'`), so the rows must be
# values one can type and that mean the same thing from one run to the next. The first row (0)
# keeps every row. The label's probability is at least 1/k for k labels, so 0.5 is the first cut
# that removes anything on a binary task.
DEFAULT_THRESHOLDS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def parse_label_map(specs: Sequence[str]) -> dict[str, tuple[str, str]]:
    """`--map GOLD=PRED` options as {normalized gold label: (normalized predicted label, spec)}."""
    mapping: dict[str, tuple[str, str]] = {}
    for spec in specs:
        gold_raw, sep, pred_raw = spec.partition("=")
        if not sep:
            raise InputError(f"--map '{spec}': expected GOLD=PREDICTED, e.g. --map 1=positive")
        try:
            gold_label, pred_label = normalize_label(gold_raw), normalize_label(pred_raw)
        except ValueError as exc:
            raise InputError(f"--map '{spec}': {exc}") from None
        if gold_label in mapping and mapping[gold_label][0] != pred_label:
            raise InputError(f"--map '{spec}': gold label '{gold_label}' is already mapped by --map '{mapping[gold_label][1]}'")
        mapping[gold_label] = (pred_label, spec)
    return mapping


def apply_label_map(gold: LabelFile, mapping: Mapping[str, tuple[str, str]]) -> dict[str, str]:
    """Gold labels with the mapping applied; a mapped label that gold never uses is an error
    (a typo there would otherwise change nothing, silently)."""
    used = set(gold.labels.values())
    for gold_label, (_, spec) in mapping.items():
        if gold_label not in used:
            raise InputError(f"--map '{spec}': {gold.source} has no label '{gold_label}' (its labels: {_names(sorted(used))})")
    return {i: mapping[label][0] if label in mapping else label for i, label in gold.labels.items()}


def parse_thresholds(text: str) -> tuple[float, ...]:
    values = []
    for part in text.split(","):
        try:
            value = float(part)
        except ValueError:
            raise InputError(f"--thresholds: '{part.strip()}' is not a number (expected e.g. 0.5,0.9)") from None
        if not 0.0 <= value <= 1.0:
            raise InputError(f"--thresholds: {value:g} is outside 0..1")
        values.append(value)
    return tuple(sorted(set(values)))


@dataclass(frozen=True)
class Gates:
    min_accuracy: Optional[float]
    min_coverage: float
    failures: tuple[str, ...]  # one line each, for people and for the JSON

    @property
    def passed(self) -> bool:
        return not self.failures


def check_gates(agreement: Agreement, min_accuracy: Optional[float], min_coverage: float) -> Gates:
    failures = []
    cov = agreement.coverage
    if cov.labelled_fraction < min_coverage:
        examples = ", ".join(repr(e) for e in cov.missing_in_pred_examples)
        more = ", ..." if cov.missing_in_pred > len(cov.missing_in_pred_examples) else ""
        failures.append(
            f"{cov.missing_in_pred} of {cov.gold_total} gold ids are unlabelled (labelled "
            f"{cov.labelled_fraction:.2%} < --min-coverage {min_coverage:g}), e.g. {examples}{more}"
        )
    if min_accuracy is not None and agreement.accuracy < min_accuracy:
        failures.append(f"accuracy {agreement.accuracy:.4f} < --min-accuracy {min_accuracy:g} (on {agreement.n} matched ids)")
    return Gates(min_accuracy, min_coverage, tuple(failures))


def label_set_warnings(sets: LabelSets, pred_source: str, gold_source: str) -> list[str]:
    warnings = []
    if sets.pred_only:
        warnings.append(f"{pred_source} has labels {gold_source} never uses: {_counted(sets.pred_only)}")
    if sets.gold_only:
        warnings.append(f"{gold_source} has labels {pred_source} never predicts: {_counted(sets.gold_only)}")
    return warnings


def eval_command(
    labels: str = typer.Argument(..., help="Predicted labels: a JSONL, CSV or Parquet path, or - for JSONL on stdin."),
    gold: str = typer.Option(..., "--gold", metavar="PATH", help="Gold: JSONL, CSV, Parquet, -, or a Label Studio/Argilla export."),
    id_field: str = typer.Option("id", "--id-field", help="Field holding the record id, in both files."),
    label_field: str = typer.Option("label", "--label-field", help="Field holding the predicted label."),
    gold_field: str = typer.Option("label", "--gold-field", help="Field (or Label Studio control) of the gold label."),
    label_map: Optional[list[str]] = typer.Option(
        None, "--map", metavar="GOLD=PRED",
        help="Read the gold label GOLD as the predicted label PRED (applied to gold labels only); repeat per "
        "label, e.g. --map 1=positive --map 0=negative.",
    ),
    confidence_field: str = typer.Option(
        "confidence", "--confidence-field", help="Field holding the predicted label's confidence (table shown if present)."
    ),
    thresholds: str = typer.Option(
        ",".join(f"{t:g}" for t in DEFAULT_THRESHOLDS), "--thresholds", metavar="LIST",
        help="Comma-separated confidence cut-offs for the accuracy-by-confidence table.",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables."),
    min_accuracy: Optional[float] = typer.Option(
        None, "--min-accuracy", min=0.0, max=1.0, help="Exit with code 1 if accuracy is below this."
    ),
    min_coverage: float = typer.Option(
        1.0, "--min-coverage", min=0.0, max=1.0,
        help="Exit with code 1 if the share of gold ids that have a label is below this (default: all must).",
    ),
) -> None:
    """Compare predicted labels with gold labels: accuracy, kappa, per-class scores, confusion,
    coverage of the gold ids, and accuracy by confidence and by icm_source."""
    if labels == "-" and gold == "-":
        raise InputError("LABELS and --gold cannot both be - (stdin)")
    mapping = parse_label_map(label_map or [])
    cutoffs = parse_thresholds(thresholds)
    pred_file = load_labels(labels, id_field, label_field, confidence_field=confidence_field, group_field=SOURCE_FIELD)
    gold_file = load_corrections(gold, id_field, gold_field).label_file()
    pred = pred_file.labels
    truth = apply_label_map(gold_file, mapping)
    if pred.keys().isdisjoint(truth.keys()):
        raise InputError(f"no ids in common between {pred_file.source} and {gold_file.source} (id field '{id_field}')")
    sets = compare_label_sets(pred, truth)
    if sets.disjoint:
        example = f"--map {sets.gold_labels[0]}={sets.pred_labels[0]}"
        raise InputError(
            f"no label in common: {pred_file.source} uses {_names(sets.pred_labels)}; {gold_file.source} uses "
            f"{_names(sets.gold_labels)}; map each gold label with --map GOLD=PRED (e.g. {example})"
        )
    warnings = label_set_warnings(sets, pred_file.source, gold_file.source)
    for warning in warnings:
        print(f"icm: warning: {warning}", file=sys.stderr)

    agreement = compute_agreement(pred, truth)
    by_confidence = (
        accuracy_by_confidence(pred, truth, pred_file.confidence, cutoffs) if pred_file.confidence is not None else None
    )
    by_source = accuracy_by_group(pred, truth, pred_file.groups) if pred_file.groups is not None else None
    gates = check_gates(agreement, min_accuracy, min_coverage)

    if as_json:
        payload = agreement.to_json() | {
            "label_map": {g: p for g, (p, _) in mapping.items()},
            "by_confidence": None if by_confidence is None else [row.to_json() for row in by_confidence],
            "by_source": None if by_source is None else {g: s.to_json() for g, s in by_source.items()},
            "warnings": warnings,
            "min_accuracy": min_accuracy,
            "min_coverage": min_coverage,
            "failures": list(gates.failures),
            "passed": gates.passed,
        }
        typer.echo(json.dumps(payload))
    else:
        console = Console()
        render_agreement(agreement, console, gates)
        if by_confidence is not None:
            console.print(confidence_table(by_confidence, confidence_field))
        if by_source is not None:
            console.print(source_table(by_source))
    for failure in gates.failures:
        print(f"icm: eval failed: {failure}", file=sys.stderr)
    if not gates.passed:
        raise typer.Exit(EXIT_BELOW_THRESHOLD)


def render_agreement(agreement: Agreement, console: Console, gates: Gates) -> None:
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
    covered = cov.labelled_fraction >= gates.min_coverage
    summary.add_row("Coverage gate", f"{_verdict(covered)} (gold ids labelled {cov.labelled_fraction:.2%} "
                                     f"{'>=' if covered else '<'} {gates.min_coverage:g})")
    if gates.min_accuracy is not None:
        accurate = agreement.accuracy >= gates.min_accuracy
        summary.add_row("Accuracy gate", f"{_verdict(accurate)} (accuracy {'>=' if accurate else '<'} {gates.min_accuracy:g})")
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


def confidence_table(rows: Sequence[ConfidenceRow], field: str) -> Table:
    table = Table(title=f"Accuracy by confidence (matched ids with {escape(field)} >= cut-off)")
    for name in (f"{escape(field)} >=", "rows", "coverage", "accuracy", "95% CI"):
        table.add_column(name, justify="right")
    for row in rows:
        cut = "0 (all)" if row.threshold == 0 else f"{row.threshold:g}"
        table.add_row(cut, str(row.kept.n), f"{row.coverage:.1%}", *_accuracy_cells(row.kept))
    return table


def source_table(groups: Mapping[str, Slice]) -> Table:
    table = Table(title=f"Accuracy by {SOURCE_FIELD}")
    table.add_column(SOURCE_FIELD)
    for name in ("rows", "accuracy", "95% CI"):
        table.add_column(name, justify="right")
    for name, part in groups.items():
        table.add_row(escape(name), str(part.n), *_accuracy_cells(part))
    return table


def _accuracy_cells(part: Slice) -> tuple[str, str]:
    if part.accuracy is None or part.ci95 is None:
        return "-", "-"
    return f"{part.accuracy:.4f}", f"{part.ci95[0]:.3f}-{part.ci95[1]:.3f}"


def _verdict(ok: bool) -> str:
    return "[green]passed[/]" if ok else "[red]FAILED[/]"


def _missing(count: int, total: int, examples: tuple[str, ...]) -> str:
    text = f"{count} of {total}"
    if examples:
        more = ", ..." if count > len(examples) else ""
        text += " (e.g. " + ", ".join(escape(repr(e)) for e in examples) + more + ")"
    return text


def _names(labels: Sequence[str]) -> str:
    return ", ".join(repr(label) for label in labels)


def _counted(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{label!r} ({n} row{'s' if n != 1 else ''})" for label, n in counts.items())
