"""`icm report`: one self-contained HTML page on a labelled run, for people. A thin Typer command
over `run_report`, which `icm label --report` calls too; the page is built by report_data (what it
shows), report_plots (matplotlib SVG) and report_html (the page)."""

from __future__ import annotations

import sys
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional, Sequence

import typer

from ..foundation.errors import InputError, OutputError
from .common import ForceOpt

if TYPE_CHECKING:
    from ..data.tables import Dataset
    from ..run.report_data import GoldView, ReportData, ReportRow


@dataclass(frozen=True)
class ReportJob:
    labels: str  # what icm label wrote (JSONL, CSV or Parquet); its summary is read from beside it
    out: Optional[str] = None  # None: LABELS.report.html beside LABELS; "-": stdout
    _: KW_ONLY  # the rest by name: the CLI's flags in a row are too easy to swap
    gold: Optional[str] = None
    id_field: Optional[str] = "id"
    label_field: str = "label"
    confidence_field: str = "confidence"
    gold_field: str = "label"
    label_map: tuple[str, ...] = ()
    force: bool = False  # replace an existing -o
    quiet: bool = False


def report_command(
    labels: Annotated[str, typer.Argument(help="What icm label wrote: a JSONL, CSV or Parquet file, with "
                                               "LABELS.summary.json beside it (the run, verdict and search).")],
    gold: Annotated[Optional[str], typer.Option("--gold", metavar="PATH", help="Gold labels (JSONL, CSV or "
                                                "Parquet): adds accuracy, per-class scores, the confusion matrix, "
                                                "a reliability diagram and accuracy against coverage.")] = None,
    out: Annotated[Optional[str], typer.Option("-o", "--out", metavar="PATH", help="Where to write the page "
                                               "(- for stdout). Default: LABELS.report.html beside LABELS, "
                                               "replaced when it is there, as the summary is.")] = None,
    id_field: Annotated[str, typer.Option("--id-field", help="Field holding the record id, in both files.")] = "id",
    label_field: Annotated[str, typer.Option("--label-field", help="Field holding the label.")] = "label",
    confidence_field: Annotated[str, typer.Option("--confidence-field", help="Field holding the confidence.")] = "confidence",
    gold_field: Annotated[str, typer.Option("--gold-field", help="Field holding the gold label.")] = "label",
    label_map: Annotated[Optional[list[str]], typer.Option("--map", metavar="GOLD=PRED", help="Read the gold label "
                                                           "GOLD as PRED, as icm eval does (repeatable).")] = None,
    force: ForceOpt = False,
) -> None:
    """Write one self-contained HTML page on a labelled run, for people.

    The page shows the run, the signal verdict and its figures, the confidence of each label, the many-shot
    reading against the zero-shot one, the search's trace and the rows most worth a look; with --gold, the
    accuracy, per-class scores, the confusion matrix, a reliability diagram and accuracy against coverage.
    The plots are inline SVG: the page opens with no network."""
    written = run_report(ReportJob(labels, out, gold=gold, id_field=id_field, label_field=label_field,
                                   confidence_field=confidence_field, gold_field=gold_field,
                                   label_map=tuple(label_map or ()), force=force))
    if written is not None:
        print(f"icm report: wrote {written}", file=sys.stderr)


def report_path(labels: Path) -> Path:
    """Where a labels file's report goes by default: beside it, as its summary does."""
    return labels.with_name(labels.name + ".report.html")


def run_report(job: ReportJob) -> Optional[Path]:
    """Build the page and write it; returns where (None: stdout). Raises IcmError."""
    from ..data.output import atomic_write_text
    from ..run.report_html import render
    from ..run.report_plots import pyplot
    from ..foundation.version import installed_version

    dest = _destination(job)  # first: a refused -o is refused before anything is read
    pyplot()  # and a missing matplotlib before anything is read
    page = render(_gather(job), installed_version())
    if dest is None:
        sys.stdout.write(page)
        sys.stdout.flush()
        return None
    try:
        atomic_write_text(dest, page)
    except OSError as e:
        raise OutputError(f"{dest}: cannot write ({e.strerror or e})") from None
    return dest


def _destination(job: ReportJob) -> Optional[Path]:
    from ..data.output import check_replaceable

    if job.out == "-":
        return None
    if job.out is None:
        if job.labels == "-":
            raise InputError("LABELS is - (stdin): pass -o PATH (or -o - for stdout) for the report")
        dest = report_path(Path(job.labels))
        check_replaceable(dest, force=True)  # derived from LABELS, replaced as the summary is
    else:
        dest = Path(job.out)
        check_replaceable(dest, job.force)
    if not dest.parent.exists():
        raise InputError(f"{dest}: directory {dest.parent} does not exist")
    return dest


def _gather(job: ReportJob) -> ReportData:
    from ..data.tables import load_rows
    from ..data.output import summary_path
    from ..run.report_data import ReportData, label_order, read_summary, report_rows

    if job.labels != "-" and Path(job.labels).is_dir():
        raise InputError(f"{job.labels}: a directory; icm report reads one labels file (with --engine ray, the "
                         f"rows are part-*.jsonl shards: join them into one file first)")
    dataset = load_rows(job.labels)
    rows = report_rows(dataset, job.label_field, job.confidence_field, job.id_field)
    notes = []
    run = None
    if job.labels != "-":
        run = read_summary(summary_path(Path(job.labels)), len(rows))
        if run is None:
            notes.append(f"No summary beside {dataset.source} ({summary_path(Path(job.labels)).name}): the run, "
                         f"the signal verdict, the two readings and the search are not shown.")
    if run is not None and run.readings is None:
        notes.append("The summary holds no signal-check sample (a run with --no-check, too few rows, or an "
                     "earlier icm): the two readings are not shown.")
    words = label_order(rows, run)
    gold = _gold(job, dataset, rows, len(words)) if job.gold is not None else None
    return ReportData(dataset.source, words, rows, run, gold, notes)


def _gold(job: ReportJob, dataset: Dataset, rows: Sequence[ReportRow], labels: int) -> GoldView:
    """The scores against gold, with icm eval's reading of both files and of --map."""
    from ..data.labels_io import labels_of, load_labels
    from ..foundation.metrics import compare_label_sets
    from ..run.report_data import gold_view
    from ..algorithm.tasks import SOURCE_FIELD
    from .eval import apply_label_map, label_set_warnings, parse_label_map

    assert job.gold is not None
    if job.labels == "-" and job.gold == "-":
        raise InputError("LABELS and --gold cannot both be - (stdin)")
    if job.id_field is None:
        raise InputError("--gold needs an id field to match rows by")
    mapping = parse_label_map(job.label_map)
    pred = labels_of(dataset, job.id_field, job.label_field, confidence_field=job.confidence_field,
                     group_field=SOURCE_FIELD)
    gold_file = load_labels(job.gold, job.id_field, job.gold_field)
    truth = apply_label_map(gold_file, mapping)
    if pred.labels.keys().isdisjoint(truth.keys()):
        raise InputError(f"no ids in common between {pred.source} and {gold_file.source} (id field '{job.id_field}')")
    sets = compare_label_sets(pred.labels, truth)
    if sets.disjoint:
        raise InputError(f"no label in common between {pred.source} and {gold_file.source}; map each gold label "
                         f"with --map GOLD=PRED (e.g. --map {sets.gold_labels[0]}={sets.pred_labels[0]})")
    for warning in label_set_warnings(sets, pred.source, gold_file.source):
        if not job.quiet:
            print(f"icm: warning: {warning}", file=sys.stderr)
    return gold_view(rows, pred, truth, gold_file.source, labels)
