"""Does the model know? A gold-free check of a run's labels: signal, weak or none.

A run's summary looks the same whether its labels track the asked-for concept or are noise the
search made self-consistent. This check reads a seeded sample of the labelled rows two more ways,
with nothing but the model, and compares:

- content: how far the run's reading of each row spreads (its label log-odds, in the run's own
  context: after the cores' demonstrations, centred as the run centres them) against the same
  reading of the same row with the letters of its fields shuffled (spaces, digits and
  punctuation kept: the text's shape without its words). Readings that follow what the words say
  spread more on the rows than on their scrambles; readings of text whose words say nothing
  (random letters) spread alike.
- zero-shot agreement: the labels of the run's many-shot reading (the run's labels, but where
  zero-shot is averaged in) against the model's calibrated zero-shot labels (no demonstrations
  at all), as Cohen's kappa with a bootstrap interval. The search and the
  demonstrations may move labels; they should not turn them away from what the model reads in
  the rows themselves.
  Where the labels are the zero-shot reading alone (core.count auto: two cores that did not
  confirm their departure from it), there is no other reading to set against it: the kappa is
  left out and the verdict rests on the content ratio and the balance.
- balance: the share of the commonest label, in the run and zero-shot; one label taking nearly
  everything, or the two disagreeing about the balance, is a warning.

A comparison is judged a row at a time, on both its orders read together (signal_readings.pair_up):
the first order's log-odds less the second's, the part of the readings that compares the two
candidates. Each order alone mostly reads what both share (the query, a bias to one answer),
which follows the words as well and made a model that compared nothing look like `signal`.

Verdict: `none` when the words make no measurable difference to the readings (the content ratio's
interval reaches 1.1) or one label takes nearly every row; `signal` when they clearly do (its
interval above 1.5) and the labels agree with zero-shot well beyond chance (kappa's interval
above 0.4), or, where a run has two cores, the two agree with each other beyond chance and not
clearly less than zero-shot agrees with one of them (TwoCores: the departure from zero-shot is
read twice, so it is not one search's drift; on three classes zero-shot is poor and a run that
beats it departs from it); `weak` otherwise. Measured on the embedded model (README, "Is there signal?").

It rules out noise, not error: a model that reads a salient feature which is not the asked-for
concept passes it; `icm compare` on a little gold is how to measure accuracy. Where a run has
fewer than 32 rows outside its core, the check reads the core itself, each example with the
others as context (the search's leave-one-out prompts).
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from ..foundation.agreement import bootstrap_interval, cohen_kappa, kappa_with_interval
from ..algorithm.search import argmax
from .signal_readings import (MIN_ROWS, ReadingSample, Readings, read_core, read_transferred, sample_ids, scramble,
                              scrambles_per_row)

__all__ = ["Figure", "ReadingSample", "Readings", "SignalReport", "TwoCores", "judge", "measure", "sample_ids",
           "scramble", "scrambles_per_row", "two_cores"]

NO_CONTENT = 1.1  # content ratio: words that make a difference spread the readings more than this
CONTENT = 1.5
AGREEMENT = 0.4  # zero-shot kappa, lower end of its interval, for `signal`
ONE_LABEL = 0.95  # majority share past which the labels say nothing about the rows


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
    sample: Optional[ReadingSample] = None  # kept apart in the summary (`readings`), not in `signal`

    def to_json(self) -> dict:
        doc = asdict(self)
        del doc["sample"]
        return doc


def measure(run: Any, transfer: Any, centres: Optional[list[list[float]]], seed: int) -> SignalReport:
    start, before = time.monotonic(), run.backend.stats.tokens_computed
    readings = read_transferred(run, transfer, centres, seed) or read_core(run, seed)
    if readings is None or len(readings.labels) < MIN_ROWS:
        return SignalReport("unchecked", f"fewer than {MIN_ROWS} labelled rows to read again: too few to check",
                            seconds=round(time.monotonic() - start, 2))
    report = judge(readings, len(run.shape.label_words), seed)
    if readings.ids:
        report.sample = readings.sample(run.shape.label_words, run.shape.per_row, run.shape.calibrate)
    report.seconds = round(time.monotonic() - start, 2)
    report.tokens = run.backend.stats.tokens_computed - before
    return report


def judge(r: Readings, labels: int, seed: int) -> SignalReport:
    """The figures of one sample's readings, and the verdict they give."""
    zs_labels = [argmax(s) for s in r.zero_shot]
    # The many-shot reading's labels, not the run's: with transfer.zero_shot the run's labels
    # already hold the zero-shot reading, and would agree with it by construction. Where the
    # labels are the zero-shot reading alone, there is no other reading to set against it.
    agreement = None if r.zero_shot_alone else kappa_with_interval([argmax(s) for s in r.mine], zs_labels, seed)
    spread = [_logodds(s) for s in r.mine]
    # Each row's scrambles stay together when the interval resamples rows.
    spread_mixed = [[_logodds(s) for s in scrambles] for scrambles in zip(r.scrambled, *r.more_scrambled)]

    def content(idx: Sequence[int]) -> float:
        return _spread_ratio([spread[i] for i in idx], [v for i in idx for v in spread_mixed[i]])

    ratio = content(range(len(spread)))
    ratio_ci = bootstrap_interval(content, len(spread), seed)
    major = max(r.labels.count(y) for y in range(labels)) / len(r.labels)
    zs_major = max(zs_labels.count(y) for y in range(labels)) / len(zs_labels)
    figures = [
        Figure("content_ratio", round(ratio, 3), (round(ratio_ci[0], 3), round(ratio_ci[1], 3)),
               "how much more the run's readings vary on the rows than on their letters shuffled (1: the words add nothing)"),
        Figure("majority_share", round(major, 3), None, "the share of the sample the commonest label takes"),
        Figure("zero_shot_majority_share", round(zs_major, 3), None, "the same, for the zero-shot labels"),
    ]
    if agreement is not None:
        kappa, kappa_ci = agreement
        figures.insert(1, Figure("zero_shot_kappa", round(kappa, 3), (round(kappa_ci[0], 3), round(kappa_ci[1], 3)),
                                 "agreement of the many-shot reading's labels with the model's zero-shot labels "
                                 "beyond chance (0: none, 1: all)"))
    warnings = []
    if major >= ONE_LABEL:
        warnings.append(f"one label takes {major:.0%} of the rows: the labels say little about any row")
    if abs(major - zs_major) > 0.2:
        warnings.append(f"the run and zero-shot disagree about the balance: the commonest label takes {major:.0%} of "
                        f"the run's labels and {zs_major:.0%} of zero-shot's")
    verdict, reason = _verdict(ratio_ci, agreement[1] if agreement else None, major)
    if len(r.cores) == 2:
        cores = two_cores(*([argmax(s) for s in reading] for reading in r.cores), zs_labels, seed)
        figures.extend(cores.figures())
        if verdict == "weak" and ratio_ci[0] > CONTENT and cores.one_reads_as_well():
            verdict, reason = "signal", cores.reason()
    return SignalReport(verdict, reason, figures, warnings, rows=len(r.labels))


@dataclass(frozen=True)
class TwoCores:
    """Two cores searched on disjoint samples and zero-shot, read as three noisy readers of the
    same rows: if each errs independently of the others given the true label, the kappa of two
    readers is about the product of their qualities, so a core reads the rows at least as well
    as zero-shot exactly when it agrees with the other core at least as well as zero-shot agrees
    with that core. A search that drifted is alone in what it reads: the cores then agree less
    than zero-shot agrees with either, beyond what 256 rows of sampling explain. Two that read the
    same departure from a poor zero-shot reading carry signal zero-shot lacks.

    `margin` is the cores' kappa minus the lower of their kappas with zero-shot, with a bootstrap
    interval over the same rows: the run is not taken for a drift unless the whole interval is
    below 0 (and the cores agree beyond chance)."""

    between: float  # kappa of the two cores
    interval: tuple[float, float]
    margin: float
    margin_interval: tuple[float, float]

    def one_reads_as_well(self) -> bool:
        return self.interval[0] > 0 and self.margin_interval[1] >= 0

    def confirms(self) -> bool:
        """The departure from zero-shot is read twice beyond sampling: the cores agree beyond
        chance, and with each other more than either agrees with zero-shot over the whole
        interval (second_core.weigh keeps the cores' reading only then)."""
        return self.interval[0] > 0 and self.margin_interval[0] > 0

    def reason(self) -> str:
        return (f"the readings follow the words; the many-shot reading's labels depart from the model's zero-shot "
                f"reading, but the two cores agree with each other (kappa {self.between:.2f}) about as well as "
                f"zero-shot agrees with one of them (margin {self.margin:+.2f}, interval up to "
                f"{self.margin_interval[1]:+.2f}): the departure is read twice, not one search's drift")

    def figures(self) -> list[Figure]:
        return [
            Figure("cores_kappa", round(self.between, 3), (round(self.interval[0], 3), round(self.interval[1], 3)),
                   "agreement of the two cores' many-shot labels beyond chance (core.count auto)"),
            Figure("cores_margin", round(self.margin, 3),
                   (round(self.margin_interval[0], 3), round(self.margin_interval[1], 3)),
                   "the cores' kappa minus the lower of their kappas with zero-shot: clearly below 0, one core "
                   "reads alone (a drift)"),
        ]


def two_cores(a: Sequence[int], b: Sequence[int], zs_labels: Sequence[int], seed: int) -> TwoCores:
    """The two cores' agreement and margin over zero-shot, from the labels each reading gives."""

    def margin(idx: Sequence[int]) -> float:
        x, y, z = [a[i] for i in idx], [b[i] for i in idx], [zs_labels[i] for i in idx]
        return cohen_kappa(x, y) - min(cohen_kappa(x, z), cohen_kappa(y, z))

    between, interval = kappa_with_interval(a, b, seed)
    return TwoCores(between, interval, margin(range(len(a))), bootstrap_interval(margin, len(a), seed))


def _verdict(ratio_ci: tuple[float, float], kappa_ci: Optional[tuple[float, float]], major: float) -> tuple[str, str]:
    """`kappa_ci` None: the labels are the zero-shot reading alone, judged on its content."""
    if major >= ONE_LABEL:
        return "none", "one label takes nearly every row"
    if ratio_ci[0] <= NO_CONTENT:
        return "none", "the readings vary as much on the rows' shuffled letters as on their words"
    if kappa_ci is None:
        alone = ("the labels are the model's zero-shot reading, as the two cores did not confirm their departure "
                 "from it, so its agreement with zero-shot is no test and is not reported")
        if ratio_ci[0] > CONTENT:
            return "signal", f"the readings follow the words; {alone}"
        return "weak", f"the words make only a small difference to the readings; {alone}"
    if ratio_ci[0] > CONTENT and kappa_ci[0] > AGREEMENT:
        return "signal", ("the readings follow the words, and the many-shot reading's labels agree with the model's "
                          "zero-shot reading")
    if ratio_ci[0] > CONTENT:
        return "weak", ("the readings follow the words, but the many-shot reading's labels depart from the model's "
                        "zero-shot reading")
    return "weak", "the words make only a small difference to the readings"


def _logodds(scores: Sequence[float]) -> float:
    return scores[0] - max(scores[1:])


def _spread_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    sa, sb = _sd(a), _sd(b)
    return sa / sb if sb > 0 else (math.inf if sa > 0 else 1.0)


def _sd(values: Sequence[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0

