"""Agreement between predicted and gold labels: accuracy with a bootstrap CI, Cohen's kappa,
per-class scores, confusion matrix, id coverage, label-set overlap, and accuracy by confidence
threshold or by group. Pure logic: no I/O, no printing."""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

_TRUE = frozenset({"true", "1", "1.0"})
_FALSE = frozenset({"false", "0", "0.0"})
N_EXAMPLE_IDS = 5


def normalize_label(value: object) -> str:
    """Map a label to a canonical string so gold files in different formats compare equal.

    Booleans, 1/0 (int, float or string) and true/false strings in any case become
    "true"/"false"; any other string is stripped and lower-cased.
    """
    if value is None:
        raise ValueError("null is not a label")
    # bool before int: bool is a subclass of int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        if value == 1:
            return "true"
        if value == 0:
            return "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value).lower()
    if isinstance(value, str):
        text = value.strip().lower()
        if not text:
            raise ValueError("an empty string is not a label")
        if text in _TRUE:
            return "true"
        if text in _FALSE:
            return "false"
        return text
    raise ValueError(f"a {type(value).__name__} is not a label (expected a string, number or boolean)")


@dataclass(frozen=True)
class ClassStats:
    precision: float
    recall: float
    f1: float
    support: int  # number of matched ids whose gold label is this class

    def to_json(self) -> dict[str, Any]:
        return {"precision": self.precision, "recall": self.recall, "f1": self.f1, "support": self.support}


@dataclass(frozen=True)
class Coverage:
    gold_total: int
    pred_total: int
    missing_in_pred: int
    missing_in_gold: int
    # First few missing ids, in the order they appear in their file.
    missing_in_pred_examples: tuple[str, ...]
    missing_in_gold_examples: tuple[str, ...]

    @property
    def labelled_fraction(self) -> float:
        """Share of gold ids that have a predicted label (what --min-coverage gates)."""
        return (self.gold_total - self.missing_in_pred) / self.gold_total if self.gold_total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {
            "labelled_fraction": self.labelled_fraction,
            "gold_total": self.gold_total,
            "pred_total": self.pred_total,
            "missing_in_pred": self.missing_in_pred,
            "missing_in_gold": self.missing_in_gold,
            "missing_in_pred_examples": list(self.missing_in_pred_examples),
            "missing_in_gold_examples": list(self.missing_in_gold_examples),
        }


@dataclass(frozen=True)
class Agreement:
    n: int
    accuracy: float
    ci95: tuple[float, float]
    kappa: float
    labels: list[str]
    per_class: Mapping[str, ClassStats]
    confusion: Mapping[str, Mapping[str, int]]  # gold label -> predicted label -> count
    coverage: Coverage

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "accuracy": self.accuracy,
            "ci95": [self.ci95[0], self.ci95[1]],
            "kappa": self.kappa,
            "labels": list(self.labels),
            "per_class": {label: stats.to_json() for label, stats in self.per_class.items()},
            "confusion": {g: dict(row) for g, row in self.confusion.items()},
            "coverage": self.coverage.to_json(),
        }


def compute_agreement(
    pred: Mapping[str, str],
    gold: Mapping[str, str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> Agreement:
    """Compare normalized labels on the ids present in both `pred` and `gold`.

    Raises ValueError when no id is shared or `n_bootstrap` is not positive.
    """
    if n_bootstrap < 1:
        raise ValueError("n_bootstrap must be at least 1")
    ids = [i for i in gold if i in pred]
    if not ids:
        raise ValueError("no ids in common")
    n = len(ids)
    pairs = [(gold[i], pred[i]) for i in ids]
    # Classes come from matched ids only: a class seen only on unmatched ids would add an
    # all-zero row and column that says nothing about agreement.
    labels = sorted({g for g, _ in pairs} | {p for _, p in pairs})

    counts = Counter(pairs)
    confusion = {g: {p: counts[(g, p)] for p in labels} for g in labels}
    gold_counts = Counter(g for g, _ in pairs)
    pred_counts = Counter(p for _, p in pairs)
    correct = sum(counts[(c, c)] for c in labels)
    accuracy = correct / n

    expected = sum(gold_counts[c] * pred_counts[c] for c in labels) / (n * n)
    kappa = 0.0 if math.isclose(expected, 1.0) else (accuracy - expected) / (1.0 - expected)

    per_class: dict[str, ClassStats] = {}
    for c in labels:
        tp = counts[(c, c)]
        precision = tp / pred_counts[c] if pred_counts[c] else 0.0
        recall = tp / gold_counts[c] if gold_counts[c] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[c] = ClassStats(precision, recall, f1, gold_counts[c])

    return Agreement(
        n=n,
        accuracy=accuracy,
        ci95=_bootstrap_ci(correct, n, n_bootstrap, seed),
        kappa=kappa,
        labels=labels,
        per_class=per_class,
        confusion=confusion,
        coverage=_coverage(pred, gold),
    )


def _bootstrap_ci(correct: int, n: int, n_bootstrap: int, seed: int) -> tuple[float, float]:
    # Resampling n ids with replacement from n ids of which `correct` are right gives a number
    # right that is exactly Binomial(n, correct/n), so drawing that directly is the same
    # percentile bootstrap without an n_bootstrap x n index matrix.
    rng = np.random.default_rng(seed)
    resampled = rng.binomial(n, correct / n, size=n_bootstrap) / n
    low, high = np.percentile(resampled, [2.5, 97.5])
    return float(low), float(high)


def _coverage(pred: Mapping[str, str], gold: Mapping[str, str]) -> Coverage:
    missing_in_pred = [i for i in gold if i not in pred]
    missing_in_gold = [i for i in pred if i not in gold]
    return Coverage(
        gold_total=len(gold),
        pred_total=len(pred),
        missing_in_pred=len(missing_in_pred),
        missing_in_gold=len(missing_in_gold),
        missing_in_pred_examples=tuple(missing_in_pred[:N_EXAMPLE_IDS]),
        missing_in_gold_examples=tuple(missing_in_gold[:N_EXAMPLE_IDS]),
    )


@dataclass(frozen=True)
class LabelSets:
    """Labels only one file uses, with how many of its rows carry each."""

    pred_only: Mapping[str, int]
    gold_only: Mapping[str, int]
    pred_labels: tuple[str, ...]
    gold_labels: tuple[str, ...]

    @property
    def disjoint(self) -> bool:
        return set(self.pred_labels).isdisjoint(self.gold_labels)


def compare_label_sets(pred: Mapping[str, str], gold: Mapping[str, str]) -> LabelSets:
    """Which labels only one side ever uses. Whole files, not just the matched ids: on a few
    matched ids two compatible label sets can fail to meet by chance."""
    pred_counts = Counter(pred.values())
    gold_counts = Counter(gold.values())
    return LabelSets(
        pred_only={c: n for c, n in sorted(pred_counts.items()) if c not in gold_counts},
        gold_only={c: n for c, n in sorted(gold_counts.items()) if c not in pred_counts},
        pred_labels=tuple(sorted(pred_counts)),
        gold_labels=tuple(sorted(gold_counts)),
    )


@dataclass(frozen=True)
class Slice:
    """Accuracy on a subset of the matched ids; accuracy and ci95 are None when it is empty."""

    n: int
    correct: int
    accuracy: float | None
    ci95: tuple[float, float] | None

    def to_json(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "correct": self.correct,
            "accuracy": self.accuracy,
            "ci95": None if self.ci95 is None else [self.ci95[0], self.ci95[1]],
        }


@dataclass(frozen=True)
class ConfidenceRow:
    threshold: float
    kept: Slice  # matched ids whose confidence is >= threshold
    coverage: float  # kept.n / matched ids that have a confidence

    def to_json(self) -> dict[str, Any]:
        return {"threshold": self.threshold, "coverage": self.coverage, **self.kept.to_json()}


def _slice(ids: list[str], pred: Mapping[str, str], gold: Mapping[str, str], n_bootstrap: int, seed: int) -> Slice:
    if not ids:
        return Slice(0, 0, None, None)
    correct = sum(pred[i] == gold[i] for i in ids)
    return Slice(len(ids), correct, correct / len(ids), _bootstrap_ci(correct, len(ids), n_bootstrap, seed))


def accuracy_by_confidence(
    pred: Mapping[str, str],
    gold: Mapping[str, str],
    confidence: Mapping[str, float],
    thresholds: Sequence[float],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> list[ConfidenceRow]:
    """Accuracy and coverage of the matched ids kept when only confidence >= each threshold is kept."""
    ids = [i for i in gold if i in pred and i in confidence]
    # Sorted once by confidence, with a running count of correct ids from the top: each cut-off
    # is then a binary search, not a pass over every id (a report asks for dozens of cut-offs).
    ids.sort(key=lambda i: confidence[i])
    values = [confidence[i] for i in ids]
    correct_from = [0] * (len(ids) + 1)
    for k in range(len(ids) - 1, -1, -1):
        correct_from[k] = correct_from[k + 1] + (pred[ids[k]] == gold[ids[k]])
    rows = []
    for t in thresholds:
        first = bisect.bisect_left(values, t)
        n, correct = len(ids) - first, correct_from[first]
        kept = (Slice(n, correct, correct / n, _bootstrap_ci(correct, n, n_bootstrap, seed)) if n
                else Slice(0, 0, None, None))
        rows.append(ConfidenceRow(t, kept, n / len(ids) if ids else 0.0))
    return rows


def accuracy_by_group(
    pred: Mapping[str, str],
    gold: Mapping[str, str],
    group: Mapping[str, str],
    *,
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> dict[str, Slice]:
    """Accuracy of the matched ids in each group (e.g. icm_source: core vs transfer), groups sorted."""
    members: dict[str, list[str]] = {}
    for i in gold:
        if i in pred and i in group:
            members.setdefault(group[i], []).append(i)
    return {g: _slice(members[g], pred, gold, n_bootstrap, seed) for g in sorted(members)}
