"""The live agreement of a core's search with a gold field (`task.monitor_field`): shown while a
run searches, for a person watching a benchmark; it changes no label."""

from __future__ import annotations

from typing import Optional

from ..algorithm.cores import Core
from ..algorithm.search import Step
from .row_emitter import normalized


def core_gold(core: Core, per_row: int, field: Optional[str]) -> Optional[list[Optional[str]]]:
    """Each core example's gold label word (None where the row has none)."""
    if field is None:
        return None
    out = []
    for i, ex in zip(core.ids, core.examples):
        gold = normalized(core.fields[core.rows.index(i // per_row)].get(field))
        if ex.swapped and gold is not None:
            # The swapped order is true exactly when the original is false.
            gold = {"true": "false", "false": "true"}.get(gold, gold)
        out.append(gold)
    return out


def agreement(step: Step, gold: Optional[list[Optional[str]]], words: tuple[str, ...]) -> Optional[float]:
    """The share of the step's labels that match gold, where both are known."""
    if gold is None:
        return None
    hits = total = 0
    names = [normalized(w) for w in words]
    for y, g in zip(step.labels, gold):
        if y is None or g is None:
            continue
        total += 1
        hits += names[y] == g
    return hits / total if total else None
