"""Rows a person labelled (`icm label --fixed FILE`), matched to the run's rows by id.

The file is read by `corrections.load_corrections`, so a Label Studio or Argilla export reads as
well as a JSONL, CSV or Parquet file of ids and labels; a label outside the config's label words is
refused there. Every id must name a row of the input: a correction for a row that is not there is
an error (most likely the wrong file, or another dataset's ids), never silently dropped. With
`--limit` or `--sample`, ids outside the selection are left out and counted instead: a review of
the whole file is still the right corrections for a sample of it.

What the run does with them is the cores' and the search's business (`cores.plan_run`); this
module only says which rows and which labels, and a digest of them that checkpoints compare.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

from .corrections import LABEL_CONTROL, load_corrections
from ..foundation.errors import InputError
from .labels_io import row_id
from .row_index import RowIndex


@dataclass(frozen=True)
class HumanLabels:
    source: str = ""  # the corrections file ("" when there is none)
    rows: dict[int, int] = field(default_factory=dict)  # row number in the run -> the label word's index
    digest: str = ""  # of the (id, label) pairs applied: part of a run's identity ("" when none)
    outside: int = 0  # corrections for rows outside --limit/--sample, left out

    def __bool__(self) -> bool:
        return bool(self.rows)


def read_human_labels(path: str, index: RowIndex, words: Sequence[str], id_field: str,
                      label_field: str = LABEL_CONTROL) -> HumanLabels:
    """{row -> label} for the rows `path` corrects; one pass over the run's rows to find them."""
    wanted = load_corrections(path, id_field, label_field)
    labels = wanted.for_task(words)  # refuses a label outside the config's words, naming where
    rows: dict[int, int] = {}
    found: set[str] = set()
    for r, row in index.stream():
        name = row_id(row.fields[id_field], index.source.at(row), id_field)
        if name in labels:
            rows[r] = list(words).index(labels[name])
            found.add(name)
    missing = [name for name in labels if name not in found]
    if missing and not index.selection.describe():
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise InputError(f"{wanted.places[missing[0]]}: id '{missing[0]}' is not in {index.source.name}{more}; "
                         f"--fixed corrects rows of the input only")
    if not rows:
        raise InputError(f"{path}: none of its {len(labels)} corrections is for a row of this run "
                         f"({index.selection.describe()})")
    applied = sorted((name, labels[name]) for name in found)
    digest = hashlib.sha256(json.dumps(applied).encode()).hexdigest()[:16]
    return HumanLabels(wanted.source, rows, digest, len(missing))
