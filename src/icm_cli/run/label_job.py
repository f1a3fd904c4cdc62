"""What one `icm label` run is asked to do (`LabelJob`, which `commands.label.run_label` takes), and
the input it reads before any model loads: the rows checked and indexed, the model reference
resolved. The local labelling (commands/label.py) and the Ray one (ray_labelling.py) share both."""

from __future__ import annotations

import contextlib
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import Any, Optional

from ..foundation.config import Config
from ..foundation.errors import InputError
from ..data.row_index import Selection
from .row_emitter import reading_fields
from ..algorithm.tasks import AGREEMENT_FIELD, SOURCE_FIELD


@dataclass(frozen=True)
class LabelJob:
    data: str  # a path, -, hf://org/name or a dataset directory
    config: Config
    # Everything else by name: eighteen positional fields are one swapped flag from a wrong run.
    _: KW_ONLY
    out: Optional[Path] = None  # None: JSON lines on stdout
    config_name: str = "config"  # for messages
    split: Optional[str] = None
    selection: Selection = Selection()
    quiet: bool = False
    force: bool = False
    resume: bool = False
    dry_run: bool = False
    probe: bool = False
    label_field: str = "label"
    confidence_field: str = "confidence"
    model_from: str = "config"  # where backend.model came from, for messages: the config file or --model
    resume_with: str = ""  # the command line that continues this run (the CLI knows how it was called)
    engine: str = "local"  # local: this process; ray: the transfer on a Ray cluster (ray_engine)
    report: bool = False  # also write OUT.report.html (commands/report.py)
    fixed: Optional[str] = None  # a corrections file: rows a person labelled, held (human_labels.py)
    fixed_field: str = "label"  # the label field (Label Studio control, Argilla question) in that file

    def added_fields(self) -> list[str]:
        """The fields the run adds to each row."""
        several = [AGREEMENT_FIELD] if self.config.core.several else []
        return [self.label_field, self.confidence_field, SOURCE_FIELD, *several, *self.reading_fields()]

    def reading_fields(self) -> list[str]:
        """The reading fields every row of this run carries (row_emitter.reading_fields)."""
        return reading_fields(self.config)


def read_input(job: LabelJob, stack: contextlib.ExitStack, progress: bool) -> Any:
    """The input, checked row by row and indexed; then the model reference, still unloaded.
    `progress`: let `datasets` draw its progress bars."""
    from ..backends.models import resolve_model
    from ..backends.registry import backend_type
    from ..data.row_index import build_index
    from .runner import RunInput
    from ..data.sources import open_source
    from ..algorithm.tasks import TaskShape

    cfg = job.config
    source = stack.enter_context(open_source(job.data, job.split, progress=progress))
    shape = TaskShape(cfg.task)
    protected = [(name, "pass --label-field/--confidence-field to name the output fields"
                  if name in (job.label_field, job.confidence_field) else "rename it in the input")
                 for name in job.added_fields()]
    typed = job.out is not None and job.out.suffix.lower() not in (".jsonl", ".json", ".ndjson")
    index = build_index(source, job.selection, shape.check, cfg.task.id_field, protected, kinds=typed)
    if backend_type(cfg.backend.type).needs_local_model:
        try:
            resolve_model(cfg.backend.model)
        except ValueError as e:
            raise InputError(f"{job.model_from}: 'backend.model' {e}")
    fixed = _human_labels(job, index)
    return RunInput(index, shape, fixed)


def _human_labels(job: LabelJob, index: Any) -> Any:
    """The --fixed rows and labels (none without --fixed), said in one line."""
    from ..data.human_labels import HumanLabels, read_human_labels

    if job.fixed is None:
        return HumanLabels()
    cfg = job.config
    fixed = read_human_labels(job.fixed, index, cfg.task.labels, cfg.task.id_field, job.fixed_field)  # type: ignore[arg-type]
    outside = f"; {fixed.outside:,} more are for rows outside {index.selection.describe()}" if fixed.outside else ""
    if not job.quiet:
        from rich.console import Console

        Console(stderr=True, highlight=False).print(f"--fixed: {len(fixed.rows):,} rows keep a person's label "
                                                    f"({fixed.source}){outside}", markup=False)
    return fixed
