"""Does the model know? A gold-free check of a run's labels: signal, weak or none.

A run's summary looks the same whether its labels track the asked-for concept or are noise the
search made self-consistent. This check reads a seeded sample of the rows a second and third
way, with nothing but the model, and compares:

- zero-shot agreement: the run's labels against the model's calibrated zero-shot labels (no
  demonstrations at all), as Cohen's kappa with a bootstrap interval. Two annotators that share
  no context agree beyond chance only if the rows themselves carry what they label.
- content: how far the run's reading of each row (its calibrated log-odds, after the cores'
  demonstrations) spreads, against the same reading of the same row with the characters of its
  fields shuffled (same letters, same length, no words). Labels that follow meaning spread more
  on the rows than on their scrambles; labels of text that carries none (random letters) do not.
- balance: the share of the commonest label, in the run and zero-shot.

It costs about three reads of the sample (a few hundred short prompts, most after a prefix the
backend has already computed). It rules out noise, not error: a model that reads a salient
feature which is not the asked-for concept passes it; `icm compare` on a little gold measures
accuracy.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from .agreement import bootstrap_interval, kappa_with_interval
from .backends.base import ScoreRequest
from .row_index import seeded_sample
from .scoring import log_softmax
from .search import argmax
from .tasks import Example

SAMPLE = 256  # rows read again; the kappa's interval is about +-0.1 at this size


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    interval: Optional[tuple[float, float]]
    meaning: str  # one line: what the figure says


@dataclass
class SignalReport:
    verdict: str  # signal | weak | none | unchecked
    reason: str  # one line
    figures: list[Figure] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rows: int = 0  # the sample's size
    seconds: float = 0.0
    tokens: int = 0  # what the check had the model compute

    def to_json(self) -> dict:
        return asdict(self)


def scramble(text: str, seed: int) -> str:
    """The same characters in a seeded random order: length and letters kept, words gone."""
    chars = list(text)
    random.Random(seed).shuffle(chars)
    return "".join(chars)


class SignalCheck:
    """Reads a sample of the run's examples three ways: with the run's context, zero-shot, and
    scrambled with the run's context."""

    def __init__(self, run: Any, transfer: Any, centres: Optional[list[list[float]]], seed: int):
        self.run, self.transfer, self.centres, self.seed = run, transfer, centres, seed
        self.shape = run.shape
        self.continuations = transfer.continuations

    def sample(self) -> list[tuple[int, Example]]:
        """Examples the run transferred: part of its calibration sample where it read one (their
        scores in the run's context are kept, so reading them again costs nothing)."""
        pool = self.run.calibration_sample
        if self.centres is not None and len(pool) >= SAMPLE:
            ids = sorted(random.Random(self.seed + 7919).sample(pool, SAMPLE))
        else:
            labelled = {i for i, y in self.run.core_labels.items() if y is not None}
            ids = seeded_sample(self.run.plan.examples, SAMPLE, self.seed + 7919, labelled.__contains__)
        return self.run._examples(ids) if ids else []

    def in_context(self, examples: Sequence[tuple[int, Example]]) -> list[list[float]]:
        """The run's own reading: after every core's demonstrations, centred as the transfer is."""
        out = []
        for scores in self.transfer.raw(list(examples)):
            per_context = [log_softmax([v - m for v, m in zip(s, self.centres[c])] if self.centres else s)
                           for c, s in enumerate(scores)]
            out.append(log_softmax([sum(col) / len(col) for col in zip(*per_context)]))
        return out

    def zero_shot(self, examples: Sequence[tuple[int, Example]]) -> list[list[float]]:
        raw = self.run.backend.score([ScoreRequest((ex.query,), self.continuations) for _, ex in examples])
        return _centred(raw) if self.shape.calibrate else [log_softmax(r) for r in raw]

    def scrambled(self, examples: Sequence[tuple[int, Example]], fields: dict[int, dict[str, Any]]) -> list[list[float]]:
        """The run's reading of each example with its row's text fields scrambled."""
        shuffled = []
        for i, ex in examples:
            r = i // self.shape.per_row
            mixed = {k: scramble(v, self.seed * 1_000_003 + r) if isinstance(v, str) else v
                     for k, v in fields[r].items()}
            shuffled.append((-1 - i, self.shape.examples(r, mixed)[i % self.shape.per_row]))
        return self.in_context(shuffled)


def _centred(raw: Sequence[Sequence[float]]) -> list[list[float]]:
    mean = [sum(col) / len(col) for col in zip(*raw)]
    return [log_softmax([v - m for v, m in zip(r, mean)]) for r in raw]


def margin(scores: Sequence[float]) -> float:
    """How decided a reading is: the top label's log-prob over the next one's."""
    top = sorted(scores, reverse=True)
    return top[0] - top[1]


def measure(run: Any, transfer: Any, centres: Optional[list[list[float]]], seed: int) -> SignalReport:
    start, before = time.monotonic(), run.backend.stats.tokens_computed
    check = SignalCheck(run, transfer, centres, seed)
    examples = check.sample()
    if len(examples) < 32:
        return SignalReport("unchecked", "fewer than 32 rows outside the core: too few to check",
                            rows=len(examples), seconds=round(time.monotonic() - start, 2))
    rows = sorted({i // run.shape.per_row for i, _ in examples})
    fields = {r: row.fields for r, row in zip(rows, run.index.read(rows))}
    mine = check.in_context(examples)
    zs = check.zero_shot(examples)
    mixed = check.scrambled(examples, fields)
    labels = [argmax(s) for s in mine]
    zs_labels = [argmax(s) for s in zs]
    kappa, kappa_ci = kappa_with_interval(labels, zs_labels, seed)
    spread = [_logodds(s) for s in mine]
    spread_mixed = [_logodds(s) for s in mixed]
    ratio = _spread_ratio(spread, spread_mixed)
    ratio_ci = bootstrap_interval(lambda idx: _spread_ratio([spread[i] for i in idx], [spread_mixed[i] for i in idx]),
                                  len(spread), seed)
    k = len(run.shape.label_words)
    major = max(labels.count(y) for y in range(k)) / len(labels)
    zs_major = max(zs_labels.count(y) for y in range(k)) / len(zs_labels)
    figures = [
        Figure("zero_shot_kappa", round(kappa, 3), (round(kappa_ci[0], 3), round(kappa_ci[1], 3)),
               "agreement of the run's labels with the model's zero-shot labels, beyond chance (0: none, 1: all)"),
        Figure("content_ratio", round(ratio, 3), (round(ratio_ci[0], 3), round(ratio_ci[1], 3)),
               "spread of the run's readings on the rows over the spread on their scrambles (1: text meaning adds nothing)"),
        Figure("majority_share", round(major, 3), None, "share of the sample the commonest label takes"),
        Figure("zero_shot_majority_share", round(zs_major, 3), None, "the same, for the zero-shot labels"),
        Figure("mean_margin", round(statistics.fmean(margin(s) for s in mine), 3), None,
               "mean log-prob lead of each row's label over the next label"),
    ]
    report = SignalReport("unchecked", "", figures, rows=len(examples))
    report.seconds = round(time.monotonic() - start, 2)
    report.tokens = run.backend.stats.tokens_computed - before
    return report


def _logodds(scores: Sequence[float]) -> float:
    return scores[0] - max(scores[1:])


def _spread_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    sa, sb = _sd(a), _sd(b)
    return sa / sb if sb > 0 else math.inf


def _sd(values: Sequence[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0
