"""Chance-corrected agreement between two labellings of the same items, with an interval.

Pure logic: Cohen's kappa, and a seeded bootstrap interval for any statistic of paired labels.
"""

from __future__ import annotations

import random
from typing import Callable, Sequence


def cohen_kappa(a: Sequence[int], b: Sequence[int]) -> float:
    """Agreement beyond what the two labellings' label rates give by chance; 1 is perfect, 0 chance.

    Where both give every item one and the same label there is nothing to agree beyond chance,
    and kappa is 0 (not undefined): such labels carry no information either way.
    """
    n = len(a)
    if n == 0:
        return 0.0
    observed = sum(x == y for x, y in zip(a, b)) / n
    labels = set(a) | set(b)
    expected = sum((sum(x == k for x in a) / n) * (sum(y == k for y in b) / n) for k in labels)
    if expected >= 1.0:
        return 0.0
    return (observed - expected) / (1 - expected)


def bootstrap_interval(statistic: Callable[[list[int]], float], n: int, seed: int = 0, rounds: int = 1000,
                       level: float = 0.95) -> tuple[float, float]:
    """A percentile bootstrap interval: `statistic` is given resampled item indices."""
    if n == 0:
        return (0.0, 0.0)
    rng = random.Random(seed)
    values = sorted(statistic([rng.randrange(n) for _ in range(n)]) for _ in range(rounds))
    low = values[int((1 - level) / 2 * rounds)]
    high = values[min(rounds - 1, int((1 + level) / 2 * rounds))]
    return (low, high)


def kappa_with_interval(a: Sequence[int], b: Sequence[int], seed: int = 0) -> tuple[float, tuple[float, float]]:
    a, b = list(a), list(b)
    return cohen_kappa(a, b), bootstrap_interval(lambda idx: cohen_kappa([a[i] for i in idx], [b[i] for i in idx]),
                                                 len(a), seed)
