"""Class shares without gold: the prior adjustment of Saerens, Latinne and Decaestecker (2002).

Batch calibration centres each label's score on its mean over a sample, which reads every class
as equally common: on data where one class is rare, the rare class is then over-predicted (on
600 three-class tweets with 16% positive, calibrated readings labelled about a third positive).
Read the centred scores as likelihoods under a uniform prior instead, and find by EM the class
shares under which they are consistent with themselves: each round, a class's share is the mean
of its posterior over the sample, and the posteriors take the new shares as their prior. On
balanced data the shares stay near uniform; where the readings see a class as rare, it becomes
rare in the labels too. A few pseudo-rows of a uniform prior (a Dirichlet) keep a small sample
from running away.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

ROUNDS = 200
TOLERANCE = 1e-7
PSEUDO_ROWS = 16.0


@dataclass(frozen=True)
class ClassPrior:
    shares: tuple[float, ...]  # estimated share of each label in the data
    rows: int  # the sample it was estimated on

    @property
    def log_odds(self) -> tuple[float, ...]:
        """What to add to a row's centred log-probabilities (0 everywhere for uniform shares)."""
        k = len(self.shares)
        return tuple(math.log(max(p, 1e-12) * k) for p in self.shares)

    def apply(self, scores: Sequence[float]) -> list[float]:
        return _log_softmax([v + p for v, p in zip(scores, self.log_odds)])


def uniform(labels: int) -> ClassPrior:
    return ClassPrior(tuple(1 / labels for _ in range(labels)), 0)


def estimate(readings: Sequence[Sequence[float]], pseudo_rows: float = PSEUDO_ROWS) -> ClassPrior:
    """The shares that make these centred log-probabilities (one row each) self-consistent."""
    if not readings:
        raise ValueError("no readings to estimate class shares from")
    k = len(readings[0])
    likelihood = [[math.exp(v) for v in row] for row in readings]
    shares = [1 / k] * k
    for _ in range(ROUNDS):
        counts = [pseudo_rows / k] * k
        for row in likelihood:
            weighted = [p * s for p, s in zip(row, shares)]
            total = sum(weighted)
            for y in range(k):
                counts[y] += weighted[y] / total
        new = [c / (len(likelihood) + pseudo_rows) for c in counts]
        moved = max(abs(a - b) for a, b in zip(new, shares))
        shares = new
        if moved < TOLERANCE:
            break
    return ClassPrior(tuple(round(s, 6) for s in shares), len(readings))


MATCH_ROUNDS = 400


def matching(readings: Sequence[Sequence[float]], shares: Sequence[float]) -> ClassPrior:
    """The offsets under which these readings' labels (their argmax) take the given shares.

    For shares a user states. Adding log(shares) to centred readings would not do: they are no
    likelihoods (the EM estimate above shows how far off that goes), so the offsets are found on
    the labels themselves: each round moves every label's offset by how far its share of the
    labels is from the wanted one, in steps that shrink; the closest round wins. Returned as the
    prior whose log-odds are those offsets (softmax of them), so it applies like an estimate.
    """
    if not readings:
        raise ValueError("no readings to match class shares on")
    k, n = len(shares), len(readings)
    smooth = 0.5 / n  # a class with no labels yet still moves by a finite step
    offsets, best, best_gap = [0.0] * k, [0.0] * k, math.inf
    for r in range(MATCH_ROUNDS):
        counts = [0] * k
        for row in readings:
            counts[max(range(k), key=lambda y: row[y] + offsets[y])] += 1
        got = [c / n for c in counts]
        gap = sum(abs(a - b) for a, b in zip(got, shares)) / 2
        if gap < best_gap:
            best, best_gap = list(offsets), gap
        if gap <= 0.5 / n:
            break
        step = 0.5 * (1 - r / MATCH_ROUNDS) + 0.01
        offsets = [o + step * (math.log(w + smooth) - math.log(g + smooth)) for o, w, g in zip(offsets, shares, got)]
    return ClassPrior(tuple(round(math.exp(v), 12) for v in _log_softmax(best)), len(readings))


def _log_softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    total = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - total for v in values]
