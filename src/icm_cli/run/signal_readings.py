"""The gold-free signal check's sample, read three ways (signal_check.py judges it): the run's
own reading of each sampled row (after the cores' demonstrations, as its labels weigh them), the
same rows with their letters shuffled, and the model's calibrated zero-shot reading. Where a run
has fewer than 32 rows outside its core, the core itself is read, each example with the others
as context (the search's leave-one-out prompts)."""

from __future__ import annotations

import math
import random
from functools import partial
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Sequence

from ..backends.base import ScoreRequest
from ..data.row_index import seeded_sample
from ..algorithm.scoring import layout, centred_readings, log_softmax
from ..algorithm.search import argmax
from ..algorithm.tasks import Example
from ..algorithm.transfer import combine

SAMPLE = 256  # rows read again; the kappa's interval is about +-0.1 at this size
MIN_ROWS = 16  # fewer than this: no verdict (an interval over a handful of rows says nothing)
# The content ratio's denominator is read from at least this many scrambles (up to MAX_SCRAMBLES
# of each sampled row): on a 32-row sample one scramble each leaves it too noisy (random letters'
# ratio ran 1.02-1.31 over six scramble seeds of one run; at 1.31 its interval cleared 1.1).
SCRAMBLED_READS = 128
MAX_SCRAMBLES = 4


def scrambles_per_row(rows: int) -> int:
    return min(MAX_SCRAMBLES, max(1, math.ceil(SCRAMBLED_READS / max(1, rows))))


@dataclass(frozen=True)
class ReadingSample:
    """The sample the check read, each example's label probabilities as the many-shot (run's
    context), zero-shot and scrambled readings give them: what `icm report` draws. `rows` are
    positions in OUT (its rows are the input's, in order); `examples` says which of a row's
    examples (0 for a comparison, whose entries are its rows, both orders read together: pair_up;
    its label words then say whether the first candidate is the better)."""

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
    # Where the two cores did not confirm their departure, the labels are the zero-shot reading:
    # `many_shot` is then that reading (the one judged), and `cores_reading` the cores' own, the
    # departure that was left unused.
    zero_shot_alone: bool = False
    cores_reading: list[list[float]] = field(default_factory=list)
    # How the readings were taken: zero-shot centred on the batch (a classification's), or as read
    # (a comparison's: its two orders' difference cancels what the label words score alike);
    # each entry one row in both orders (pair_up).
    centred: bool = True
    both_orders: bool = False

    def to_json(self) -> dict:
        return asdict(self)


def scramble(text: str, seed: int) -> str:
    """The text's letters in a seeded random order, every other character (spaces, digits,
    punctuation, emoji) left where it was: the shape of the text kept, its words gone."""
    letters = [c for c in text if c.isalpha()]
    random.Random(seed).shuffle(letters)
    mixed = iter(letters)
    return "".join(next(mixed) if c.isalpha() else c for c in text)


@dataclass
class Readings:
    """One sample, read three ways: label log-probs per example (per row for a comparison)."""

    labels: list[int]  # the run's labels (with transfer.zero_shot, the zero-shot reading averaged in)
    mine: list[list[float]]  # the run's many-shot reading: after the cores' demonstrations
    scrambled: list[list[float]]  # the same, the rows' letters shuffled
    zero_shot: list[list[float]]  # no context, calibrated as the run calibrates
    ids: list[int] = field(default_factory=list)  # the examples', in the same order
    cores: list[list[list[float]]] = field(default_factory=list)  # each core's reading, where two
    more_scrambled: list[list[list[float]]] = field(default_factory=list)  # further scrambles (small samples)
    # The labels are the zero-shot reading (the cores' departure unconfirmed): `mine` is that
    # reading, `departed` the cores' reading it replaced.
    zero_shot_alone: bool = False
    departed: list[list[float]] = field(default_factory=list)

    def sample(self, words: Sequence[str], per_row: int, centred: bool) -> ReadingSample:
        def probabilities(readings: list[list[float]]) -> list[list[float]]:
            return [[round(math.exp(v), 4) for v in r] for r in readings]

        return ReadingSample(list(words), [i // per_row for i in self.ids], [i % per_row for i in self.ids],
                             list(self.labels), probabilities(self.mine), probabilities(self.zero_shot),
                             probabilities(self.scrambled), [probabilities(m) for m in self.more_scrambled],
                             [[argmax(s) for s in reading] for reading in self.cores], self.zero_shot_alone,
                             probabilities(self.departed), centred, per_row == 2)


def sample_ids(run: Any, centres: Optional[list[list[float]]], seed: int) -> list[int]:
    """The transferred examples the check reads again: a quarter of them, at most SAMPLE (two
    more reads of a quarter keep the check's cost well under the transfer's own), taken from the
    calibration sample where there is one (already read in the run's context). A comparison's
    sample is rows, each in both orders (both_orders): the run's decisions and the check judge a
    row on both, and the transfer keeps what they read."""
    transferred = run.plan.examples - sum(y is not None for y in run.core_labels.values())
    size = min(SAMPLE, max(2 * MIN_ROWS, transferred // 4))
    pool = run.calibration_sample
    if centres is not None and len(pool) >= size:
        ids = sorted(random.Random(seed + 7919).sample(pool, size))
    else:
        labelled = {i for i, y in run.core_labels.items() if y is not None}
        ids = seeded_sample(run.plan.examples, size, seed + 7919, labelled.__contains__)
    return both_orders(run, ids) if run.shape.per_row == 2 else ids


def pair_up(readings: Sequence[Sequence[float]]) -> list[list[float]]:
    """A comparison's readings, its two orders one after the other, as one reading a row: the
    row's label is what the two orders say together (the first candidate better: the first order
    true and the second false), as the transfer's consistency repair reads a pair. Its log-odds
    are the first order's less the second's: the part of the readings that compares the two
    candidates, without what both orders read alike (the query; a bias to one answer)."""
    return [log_softmax([ab[0] + ba[1], ab[1] + ba[0]]) for ab, ba in zip(readings[0::2], readings[1::2])]


def by_row(run: Any, readings: Sequence[Sequence[float]]) -> list[list[float]]:
    """A sample's readings as one a row: a comparison's two orders paired (pair_up; the sample
    holds both, in turn), a classification's as they are. Every agreement the run measures on a
    comparison is between these: each order alone reads mostly what both share."""
    return pair_up(readings) if run.shape.per_row == 2 else [list(r) for r in readings]


def both_orders(run: Any, ids: Sequence[int]) -> list[int]:
    """A comparison's sample as rows, each in both orders (a row is judged on both; the sample
    drew examples): every sampled row, so the sample holds up to twice the examples it drew (half
    as many rows left a no-signal Alpaca sample `weak` where all of them said `none`: README,
    "Is there signal?")."""
    labelled = {i for i, y in run.core_labels.items() if y is not None}
    rows = sorted({i // 2 for i in ids if 2 * (i // 2) not in labelled and 2 * (i // 2) + 1 not in labelled})
    return [i for r in rows for i in (2 * r, 2 * r + 1)]


def read_transferred(run: Any, transfer: Any, centres: Optional[list[list[float]]], seed: int) -> Optional[Readings]:
    """A sample of the rows the run transferred (their scores in the run's context were kept as
    the transfer read them, so the run's own reading costs nothing more). A comparison's rows are
    read in both orders and judged a row at a time (pair_up)."""
    ids = run.check_sample or sample_ids(run, centres, seed)
    if len(ids) < 2 * MIN_ROWS:  # a comparison's: at least MIN_ROWS rows
        return None
    per_row = run.shape.per_row
    examples = run.examples_of(list(ids))

    cores = max(1, transfer.cores)
    # core.count auto weighs the readings (second_core.weigh): the many-shot reading is the cores'
    # as the labels weigh them, so a drifted core the weights outvote does not speak for the run.
    weights = transfer.core_weights()
    # Where the cores weigh nothing (their departure unconfirmed), the labels are the zero-shot
    # reading, and that is the reading judged.
    alone = transfer.cores_weigh_nothing

    def in_context(items: Sequence[tuple[int, Example]], cores_too: bool = False) -> tuple[list[list[float]], list[list[float]], list[list[list[float]]]]:
        """The reading judged (the cores' contexts as the labels weigh them; zero-shot where they
        weigh nothing), the run's (every context: its labels), and each core's own reading
        (`cores_too`: read where the labels did not need it, a comparison's other order)."""
        many, run_reading, each = [], [], []
        for scores in transfer.raw(list(items), every_context=cores_too):
            per_context, combined = transfer.readings(scores, centres)
            many.append(combine(per_context, transfer.weights) if alone else combine(per_context[:cores], weights))
            run_reading.append(combined)
            each.append(per_context[:cores])
        return many, run_reading, [[row[c] for row in each] for c in range(cores)]

    rows = partial(by_row, run)
    mine, run_reading, per_core = in_context(examples, cores_too=True)
    departed = [combine(reading) for reading in zip(*per_core)] if alone else []
    variants = scrambles_per_row(len(examples) // per_row)
    # Negative ids: scrambles are never kept, and each variant of each row is its own request.
    mixed, _, _ = in_context([(-1 - v * len(examples) - n, ex) for v in range(variants)
                              for n, (_, ex) in enumerate(_scrambled(run, examples, seed, v))])
    first, *more = [rows(mixed[v * len(examples):(v + 1) * len(examples)]) for v in range(variants)]
    ids = [i for i, _ in examples][::per_row]
    return Readings([argmax(s) for s in rows(run_reading)], rows(mine), first,
                    rows(_zero_shot(run, examples, transfer.continuations)), ids,
                    [rows(reading) for reading in per_core] if cores == 2 else [], more, alone, rows(departed))


def read_core(run: Any, seed: int) -> Optional[Readings]:
    """The first core, each example read with the others as context (the search's own
    leave-one-out prompts): for runs that are (nearly) all core."""
    if not run.plan.cores or not run.outcomes:
        return None
    core, outcome = run.plan.cores[0], run.outcomes[0]
    labels = outcome.row_labels()
    local = [k for k, y in enumerate(labels) if y is not None]
    per_row = run.shape.per_row
    if per_row == 2:  # a comparison's rows whose two orders are both labelled, each row's orders in turn
        at = {core.ids[k]: k for k in local}
        local = [at[i] for r in sorted({i // 2 for i in at}) if 2 * r in at and 2 * r + 1 in at
                 for i in (2 * r, 2 * r + 1)]
    rows = partial(by_row, run)
    if len(local) // per_row < MIN_ROWS:
        return None
    prompts = run.core_prompts(0)
    contexts, _ = layout([k for k in outcome.order if outcome.labels[k] is not None])
    examples = [(core.ids[k], core.examples[k]) for k in local]
    variants = [[ex.query for _, ex in _scrambled(run, examples, seed, v)]
                for v in range(scrambles_per_row(len(examples) // per_row))]
    conts = prompts.continuations()

    def read(queries: Sequence[str]) -> list[list[float]]:
        requests = [ScoreRequest(tuple(prompts.demo(j, outcome.labels[j]) for j in contexts.get(k, ())) + (q,), conts)
                    for k, q in zip(local, queries)]
        raw = run.backend.score(requests)
        return centred_readings(raw, prompts.calibrate)

    mine = read([core.examples[k].query for k in local])
    # A comparison row's label is its first order's (the second's is its opposite once consistent).
    final = [run.core_labels[core.ids[k]] for k in local][::per_row]
    first, *more = [rows(read(queries)) for queries in variants]
    return Readings(final, rows(mine), first, rows(_zero_shot(run, examples, conts)),
                    [i for i, _ in examples][::per_row], more_scrambled=more)


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


def read_zero_shot(run: Any, continuations: Sequence[str], examples: Sequence[tuple[int, Example]]) -> None:
    """The examples' raw zero-shot scores into run.zero_shot_raw, asked only for those not read
    yet: one prompt is read by several of the run's decisions. The search's zero-shot start
    (`search.init: zero_shot`) reads the cores' rows; zero_shot_rule reads its sample and them; core.count auto reads a sample to compare the first core with, and its
    zero-shot fallback centres on more rows and relabels the cores' rows (second_core.py); the
    signal check reads its sample and, for a run that is nearly all core, the core's rows."""
    known = run.zero_shot_raw
    missing = [(i, ex) for i, ex in examples if i not in known]
    if missing:
        requests = [ScoreRequest((ex.query,), tuple(continuations)) for _, ex in missing]
        known.update(zip((i for i, _ in missing), run.backend.score(requests)))


def core_zero_shot(run: Any, core: Any, continuations: Sequence[str]) -> list[list[float]]:
    """A core's raw zero-shot scores, read once in the run: the search's zero-shot start, the
    zero-shot rule and the signal check ask for the same prompts."""
    read_zero_shot(run, continuations, list(zip(core.ids, core.examples)))
    return [run.zero_shot_raw[i] for i in core.ids]


def _zero_shot(run: Any, examples: Sequence[tuple[int, Example]], continuations: tuple[str, ...]) -> list[list[float]]:
    known = run.zero_shot_readings
    if known and all(i in known for i, _ in examples):
        return [known[i] for i, _ in examples]  # read before the transfer, by zero_shot_rule
    # Rows the run read already (core.count auto's sample, the cores' rows) are not asked for again.
    read_zero_shot(run, continuations, examples)
    return centred_readings([run.zero_shot_raw[i] for i, _ in examples], run.shape.calibrate)
