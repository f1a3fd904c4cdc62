"""Consistent labels from scores: ConsistencyFix's choice, made once, on fixed scores.

Outside the search (transferred rows, bootstrap rounds, zero-shot) there is no U to anneal:
each example already has label log-probabilities. Labels are then the consistent assignment
with the highest total log-probability, group by group, and exactly: a comparison's two orders
have two consistent assignments, and a claims group has one per key (the claims with that key
true, every other false) plus "none true", so a group of any size costs time linear in it.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence

from .search import TRUE, ConsistencyGroup, argmax

FALSE = 1


def repair(
    scores: Sequence[Sequence[float]],
    groups: Sequence[ConsistencyGroup],
    fixed: Optional[Mapping[int, int]] = None,
) -> list[int]:
    """Labels for examples 0..len(scores)-1: argmax where no group binds, else the group's best
    consistent assignment. `fixed` labels (e.g. chosen by the search) are kept as they are."""
    fixed = fixed or {}
    labels = [fixed.get(i, argmax(s)) for i, s in enumerate(scores)]
    for group in groups:
        free = [m for m in group.members if m not in fixed]
        if not free or consistent(group, labels):
            continue  # argmax is then the best consistent choice already
        best: Optional[tuple[float, tuple[int, ...]]] = None
        for option in options(group):
            if any(fixed.get(m, y) != y for m, y in zip(group.members, option)):
                continue
            total = sum(scores[m][y] for m, y in zip(group.members, option) if m not in fixed)
            if best is None or total > best[0]:
                best = (total, option)
        if best is not None:  # no choice agrees with the fixed labels: leave the argmax
            for m, y in zip(group.members, best[1]):
                labels[m] = y
    return labels


def consistent(group: ConsistencyGroup, labels: Sequence[Optional[int]]) -> bool:
    values = [labels[m] for m in group.members]
    if group.kind == "pair":
        return None in values or (values[0] == TRUE) != (values[1] == TRUE)
    true_keys: set[str] = set()
    by_key: dict[str, set[Optional[int]]] = {}
    for key, y in zip(group.keys, values):
        if y is None:
            continue
        by_key.setdefault(key, set()).add(y)
        if y == TRUE:
            true_keys.add(key)
    return len(true_keys) <= 1 and all(len(ys) == 1 for ys in by_key.values())


def options(group: ConsistencyGroup) -> list[tuple[int, ...]]:
    """Every consistent assignment of the group's members, in a fixed order."""
    if group.kind == "pair":
        return [(TRUE, FALSE), (FALSE, TRUE)]
    keys = list(dict.fromkeys(group.keys))
    out = [tuple(FALSE for _ in group.members)]
    out += [tuple(TRUE if k == key else FALSE for k in group.keys) for key in keys]
    return out
