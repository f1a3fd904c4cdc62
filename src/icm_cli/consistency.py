"""Consistent labels from scores: ConsistencyFix's choice, made once, on fixed scores.

Outside the search (transferred rows, bootstrap rounds, zero-shot) there is no U to anneal:
each example already has label log-probabilities. Labels are then the consistent assignment
with the highest total log-probability, found per connected set of constraints: exactly by
enumeration when the set is small (a comparison pair is two examples; a claim group is one
question's answers), and otherwise by ConsistencyFix's own move, repeated: take a violated
pair, keep the option the scores prefer.
"""

from __future__ import annotations

import itertools
from typing import Mapping, Optional, Sequence

from .search import _OPTIONS, Constraint, argmax

# 2**12 assignments per set at most: a group of 12 claims, or 6 pairs.
EXACT_LIMIT = 12


def repair(
    scores: Sequence[Sequence[float]],
    constraints: Sequence[Constraint],
    fixed: Optional[Mapping[int, int]] = None,
    rounds: int = 100,
) -> list[int]:
    """Labels for examples 0..len(scores)-1: argmax where no constraint binds, else the best
    consistent choice. `fixed` labels (e.g. chosen by the search) are kept as they are."""
    fixed = dict(fixed or {})
    labels = [fixed.get(i, argmax(s)) for i, s in enumerate(scores)]
    for component, inside in _components(len(scores), constraints):
        free = [i for i in component if i not in fixed]
        if not free or not any(c.violated(tuple(labels)) for c in inside):
            continue
        if len(free) <= EXACT_LIMIT and len(scores[free[0]]) == 2:
            _exact(labels, scores, inside, free)
        else:
            _greedy(labels, scores, inside, fixed, rounds)
    return labels


def _components(n: int, constraints: Sequence[Constraint]) -> list[tuple[list[int], list[Constraint]]]:
    parent = list(range(n))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for c in constraints:
        parent[root(c.i)] = root(c.j)
    members: dict[int, list[int]] = {}
    for c in constraints:
        for i in (c.i, c.j):
            members.setdefault(root(i), [])
    for i in range(n):
        if root(i) in members:
            members[root(i)].append(i)
    bound: dict[int, list[Constraint]] = {}
    for c in constraints:
        bound.setdefault(root(c.i), []).append(c)
    return [(members[r], bound[r]) for r in members]


def _exact(labels: list[int], scores: Sequence[Sequence[float]], constraints: list[Constraint], free: list[int]) -> None:
    best: Optional[tuple[float, tuple[int, ...]]] = None
    trial = list(labels)
    for choice in itertools.product((0, 1), repeat=len(free)):
        for i, y in zip(free, choice):
            trial[i] = y
        as_tuple = tuple(trial)
        if any(c.violated(as_tuple) for c in constraints):
            continue
        total = sum(scores[i][y] for i, y in zip(free, choice))
        if best is None or total > best[0]:
            best = (total, choice)
    if best is not None:  # no consistent choice at all: leave the argmax
        for i, y in zip(free, best[1]):
            labels[i] = y


def _greedy(labels: list[int], scores: Sequence[Sequence[float]], constraints: list[Constraint],
            fixed: Mapping[int, int], rounds: int) -> None:
    for _ in range(rounds):
        bad = [c for c in constraints if c.violated(tuple(labels))]
        if not bad:
            return
        pair = bad[0]
        options = [
            (a, b) for a, b in _OPTIONS[pair.kind]
            if fixed.get(pair.i, a) == a and fixed.get(pair.j, b) == b
        ]
        if not options:
            return
        a, b = max(options, key=lambda ab: scores[pair.i][ab[0]] + scores[pair.j][ab[1]])
        labels[pair.i], labels[pair.j] = a, b
