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
- balance: the share of the commonest label, in the run and zero-shot; one label taking nearly
  everything, or the two disagreeing about the balance, is a warning.

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
import random
import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from ..foundation.agreement import bootstrap_interval, cohen_kappa, kappa_with_interval
from ..backends.base import ScoreRequest
from ..data.row_index import seeded_sample
from ..algorithm.scoring import layout, centred_readings
from ..algorithm.search import argmax
from ..algorithm.tasks import Example
from ..algorithm.transfer import combine

SAMPLE = 256  # rows read again; the kappa's interval is about +-0.1 at this size
MIN_ROWS = 16  # fewer than this: no verdict (an interval over a handful of rows says nothing)
NO_CONTENT = 1.1  # content ratio: words that make a difference spread the readings more than this
CONTENT = 1.5
AGREEMENT = 0.4  # zero-shot kappa, lower end of its interval, for `signal`
ONE_LABEL = 0.95  # majority share past which the labels say nothing about the rows
# The content ratio's denominator is read from at least this many scrambles (up to MAX_SCRAMBLES
# of each sampled row): on a 32-row sample one scramble each leaves it too noisy (random letters'
# ratio ran 1.02-1.31 over six scramble seeds of one run; at 1.31 its interval cleared 1.1).
SCRAMBLED_READS = 128
MAX_SCRAMBLES = 4


def scrambles_per_row(rows: int) -> int:
    return min(MAX_SCRAMBLES, max(1, math.ceil(SCRAMBLED_READS / max(1, rows))))


@dataclass(frozen=True)
class Figure:
    name: str
    value: float
    interval: Optional[tuple[float, float]]
    meaning: str  # one line: what the figure says


@dataclass(frozen=True)
class ReadingSample:
    """The sample the check read, each example's label probabilities as the many-shot (run's
    context), zero-shot and scrambled readings give them: what `icm report` draws. `rows` are
    positions in OUT (its rows are the input's, in order); with several examples a row
    (comparisons), `examples` says which."""

    label_words: list[str]
    rows: list[int]
    examples: list[int]
    labels: list[int]  # the run's labels
    many_shot: list[list[float]]
    zero_shot: list[list[float]]
    scrambled: list[list[float]]
    # Small samples read each row scrambled more than once (scrambles_per_row): the further
    # scrambles, each of every example, in the order of `rows`.
    more_scrambled: list[list[list[float]]] = field(default_factory=list)
    # Where a run has two cores, each one's own label for each example: the verdict's two-core
    # figures can be recomputed from the summary.
    core_labels: list[list[int]] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


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


def scramble(text: str, seed: int) -> str:
    """The text's letters in a seeded random order, every other character (spaces, digits,
    punctuation, emoji) left where it was: the shape of the text kept, its words gone."""
    letters = [c for c in text if c.isalpha()]
    random.Random(seed).shuffle(letters)
    mixed = iter(letters)
    return "".join(next(mixed) if c.isalpha() else c for c in text)


@dataclass
class Readings:
    """One sample, read three ways: label log-probs per example."""

    labels: list[int]  # the run's labels (with transfer.zero_shot, the zero-shot reading averaged in)
    mine: list[list[float]]  # the run's many-shot reading: after the cores' demonstrations
    scrambled: list[list[float]]  # the same, the rows' letters shuffled
    zero_shot: list[list[float]]  # no context, calibrated as the run calibrates
    ids: list[int] = field(default_factory=list)  # the examples', in the same order
    cores: list[list[list[float]]] = field(default_factory=list)  # each core's reading, where two
    more_scrambled: list[list[list[float]]] = field(default_factory=list)  # further scrambles (small samples)

    def sample(self, words: Sequence[str], per_row: int) -> ReadingSample:
        def probabilities(readings: list[list[float]]) -> list[list[float]]:
            return [[round(math.exp(v), 4) for v in r] for r in readings]

        return ReadingSample(list(words), [i // per_row for i in self.ids], [i % per_row for i in self.ids],
                             list(self.labels), probabilities(self.mine), probabilities(self.zero_shot),
                             probabilities(self.scrambled), [probabilities(m) for m in self.more_scrambled],
                             [[argmax(s) for s in reading] for reading in self.cores])


def measure(run: Any, transfer: Any, centres: Optional[list[list[float]]], seed: int) -> SignalReport:
    start, before = time.monotonic(), run.backend.stats.tokens_computed
    readings = _transferred(run, transfer, centres, seed) or _core(run, seed)
    if readings is None or len(readings.labels) < MIN_ROWS:
        return SignalReport("unchecked", f"fewer than {MIN_ROWS} labelled rows to read again: too few to check",
                            seconds=round(time.monotonic() - start, 2))
    report = judge(readings, len(run.shape.label_words), seed)
    if readings.ids:
        report.sample = readings.sample(run.shape.label_words, run.shape.per_row)
    report.seconds = round(time.monotonic() - start, 2)
    report.tokens = run.backend.stats.tokens_computed - before
    return report


def judge(r: Readings, labels: int, seed: int) -> SignalReport:
    """The figures of one sample's readings, and the verdict they give."""
    zs_labels = [argmax(s) for s in r.zero_shot]
    # The many-shot reading's labels, not the run's: with transfer.zero_shot the run's labels
    # already hold the zero-shot reading, and would agree with it by construction.
    kappa, kappa_ci = kappa_with_interval([argmax(s) for s in r.mine], zs_labels, seed)
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
        Figure("zero_shot_kappa", round(kappa, 3), (round(kappa_ci[0], 3), round(kappa_ci[1], 3)),
               "agreement of the many-shot reading's labels with the model's zero-shot labels beyond chance "
               "(0: none, 1: all)"),
        Figure("majority_share", round(major, 3), None, "the share of rows the commonest label takes"),
        Figure("zero_shot_majority_share", round(zs_major, 3), None, "the same, for the zero-shot labels"),
    ]
    warnings = []
    if major >= ONE_LABEL:
        warnings.append(f"one label takes {major:.0%} of the rows: the labels say little about any row")
    if abs(major - zs_major) > 0.2:
        warnings.append(f"the run and zero-shot disagree about the balance: the commonest label takes {major:.0%} of "
                        f"the run's labels and {zs_major:.0%} of zero-shot's")
    verdict, reason = _verdict(ratio_ci, kappa_ci, major)
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


def _verdict(ratio_ci: tuple[float, float], kappa_ci: tuple[float, float], major: float) -> tuple[str, str]:
    if major >= ONE_LABEL:
        return "none", "one label takes nearly every row"
    if ratio_ci[0] <= NO_CONTENT:
        return "none", "the readings vary as much on the rows' shuffled letters as on their words"
    if ratio_ci[0] > CONTENT and kappa_ci[0] > AGREEMENT:
        return "signal", ("the readings follow the words, and the many-shot reading's labels agree with the model's "
                          "zero-shot reading")
    if ratio_ci[0] > CONTENT:
        return "weak", ("the readings follow the words, but the many-shot reading's labels depart from the model's "
                        "zero-shot reading")
    return "weak", "the words make only a small difference to the readings"


# ---- reading a sample three ways


def sample_ids(run: Any, centres: Optional[list[list[float]]], seed: int) -> list[int]:
    """The transferred examples the check reads again: a quarter of them, at most SAMPLE (two
    more reads of a quarter keep the check's cost well under the transfer's own), taken from the
    calibration sample where there is one (already read in the run's context)."""
    transferred = run.plan.examples - sum(y is not None for y in run.core_labels.values())
    size = min(SAMPLE, max(2 * MIN_ROWS, transferred // 4))
    pool = run.calibration_sample
    if centres is not None and len(pool) >= size:
        return sorted(random.Random(seed + 7919).sample(pool, size))
    labelled = {i for i, y in run.core_labels.items() if y is not None}
    return seeded_sample(run.plan.examples, size, seed + 7919, labelled.__contains__)


def _transferred(run: Any, transfer: Any, centres: Optional[list[list[float]]], seed: int) -> Optional[Readings]:
    """A sample of the rows the run transferred (their scores in the run's context were kept as
    the transfer read them, so the run's own reading costs nothing more)."""
    ids = run.check_sample or sample_ids(run, centres, seed)
    if len(ids) < 2 * MIN_ROWS:
        return None
    examples = run.examples_of(ids)

    cores = max(1, transfer.cores)
    # core.count auto weighs the readings (second_core.weigh): the many-shot reading is the cores'
    # as the labels weigh them, so a drifted core the weights outvote does not speak for the run.
    weights = transfer.core_weights()
    # Where the cores weigh nothing (their departure unconfirmed), the labels are the zero-shot
    # reading, and that is the reading judged.
    alone = transfer.cores_weigh_nothing

    def in_context(items: Sequence[tuple[int, Example]]) -> tuple[list[list[float]], list[int], list[list[list[float]]]]:
        """The many-shot reading (the cores' contexts), the run's labels (every context), and
        each core's own reading."""
        many, labels, each = [], [], []
        for scores in transfer.raw(list(items)):
            per_context, combined = transfer.readings(scores, centres)
            many.append(combine(per_context, transfer.weights) if alone else combine(per_context[:cores], weights))
            labels.append(argmax(combined))
            each.append(per_context[:cores])
        return many, labels, [[row[c] for row in each] for c in range(cores)]

    mine, labels, per_core = in_context(examples)
    variants = scrambles_per_row(len(examples))
    # Negative ids: scrambles are never kept, and each variant of each row is its own request.
    mixed, _, _ = in_context([(-1 - v * len(examples) - n, ex) for v in range(variants)
                              for n, (_, ex) in enumerate(_scrambled(run, examples, seed, v))])
    first, *more = [mixed[v * len(examples):(v + 1) * len(examples)] for v in range(variants)]
    return Readings(labels, mine, first, _zero_shot(run, examples, transfer.continuations), [i for i, _ in examples],
                    per_core if cores == 2 else [], more)


def _core(run: Any, seed: int) -> Optional[Readings]:
    """The first core, each example read with the others as context (the search's own
    leave-one-out prompts): for runs that are (nearly) all core."""
    if not run.plan.cores or not run.outcomes:
        return None
    core, outcome = run.plan.cores[0], run.outcomes[0]
    labels = outcome.row_labels()
    local = [k for k, y in enumerate(labels) if y is not None]
    if len(local) < MIN_ROWS:
        return None
    prompts = run.core_prompts(0)
    contexts, _ = layout([k for k in outcome.order if outcome.labels[k] is not None])
    examples = [(core.ids[k], core.examples[k]) for k in local]
    variants = [[ex.query for _, ex in _scrambled(run, examples, seed, v)]
                for v in range(scrambles_per_row(len(examples)))]
    conts = prompts.continuations()

    def read(queries: Sequence[str]) -> list[list[float]]:
        requests = [ScoreRequest(tuple(prompts.demo(j, outcome.labels[j]) for j in contexts.get(k, ())) + (q,), conts)
                    for k, q in zip(local, queries)]
        raw = run.backend.score(requests)
        return centred_readings(raw, prompts.calibrate)

    mine = read([core.examples[k].query for k in local])
    final = [run.core_labels[core.ids[k]] for k in local]
    first, *more = [read(queries) for queries in variants]
    return Readings(final, mine, first, _zero_shot(run, examples, conts), [i for i, _ in examples], more_scrambled=more)


def _scrambled(run: Any, examples: Sequence[tuple[int, Example]], seed: int, variant: int = 0) -> list[tuple[int, Example]]:
    """Each example as its row would read with the letters of its template's fields shuffled
    (`variant`: another shuffle of the same rows)."""
    shape = run.shape
    rows = sorted({i // shape.per_row for i, _ in examples})
    fields = {r: row.fields for r, row in zip(rows, run.index.read(rows))}
    out = []
    for i, _ in examples:
        r = i // shape.per_row
        mixed = {k: scramble(v, seed * 1_000_003 + r + variant * 1_000_000_007) if isinstance(v, str) and k in shape.needed else v
                 for k, v in fields[r].items()}
        out.append((i, shape.examples(r, mixed)[i % shape.per_row]))
    return out


def _zero_shot(run: Any, examples: Sequence[tuple[int, Example]], continuations: tuple[str, ...]) -> list[list[float]]:
    known = run.zero_shot_readings
    if known and all(i in known for i, _ in examples):
        return [known[i] for i, _ in examples]  # read before the transfer, by zero_shot_rule
    raw = run.backend.score([ScoreRequest((ex.query,), continuations) for _, ex in examples])
    return centred_readings(raw, run.shape.calibrate)


def _logodds(scores: Sequence[float]) -> float:
    return scores[0] - max(scores[1:])


def _spread_ratio(a: Sequence[float], b: Sequence[float]) -> float:
    sa, sb = _sd(a), _sd(b)
    return sa / sb if sb > 0 else (math.inf if sa > 0 else 1.0)


def _sd(values: Sequence[float]) -> float:
    return statistics.pstdev(values) if len(values) > 1 else 0.0

