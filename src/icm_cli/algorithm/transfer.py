"""Labelling the examples outside the cores: the cores' labels as many-shot context.

A core's labelled examples, in the order its search's prompts used for unlabelled examples,
are one shared prefix of demonstrations; each transferred example costs only its own tokens
after it (backends compute a shared prefix once). This is how the paper uses ICM's labels:
many-shot prompting with the searched labels. With no core (zero-shot) the prefix is empty.

- Chunks: the run reads its units (a consistency group, else a row) in order of first
  appearance, a chunk of about `transfer.chunk_size` examples at a time, scores it, hands its
  rows on and forgets it. A group never straddles two chunks.
- Calibration: for classification, each core's raw label scores are centred on the examples
  being transferred: the mean over a seeded sample of them (batch calibration, as in the
  search, but on the pool rather than on the core, whose labels it already fits).
- Several cores: their calibrated log-probabilities are averaged; the share of cores whose own
  choice is the final label is the row's agreement.
- Consistency: a chunk's groups get the consistent labels with the highest total
  log-probability (consistency.repair), with any member a core labelled held fixed.
Every label is a function of its own example's scores, the centres and its group: chunking
and resuming do not change it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Optional, Sequence

from ..backends.base import Backend, ScoreRequest
from .class_prior import ClassPrior, estimate, matching
from .consistency import repair
from ..data.row_index import RowIndex
from .scoring import PromptSet, layout, log_softmax
from .search import Labels, argmax
from .tasks import Example, TaskShape


def combine(readings: Sequence[Optional[Sequence[float]]], weights: Optional[Sequence[float]] = None) -> list[float]:
    """Normalised readings of one example combined: their mean, weighted where `weights` is given.
    A reading that was not read (None) must weigh nothing, and is left out."""
    if weights is None:
        return log_softmax([sum(col) / len(col) for col in zip(*readings)])  # type: ignore[arg-type]
    kept = [(w, r) for w, r in zip(weights, readings) if r is not None or w]
    total = sum(w for w, _ in kept)
    return log_softmax([sum(w * v for w, v in zip((w for w, _ in kept), col)) / total
                        for col in zip(*(r for _, r in kept))])


def demonstrations(prompts: PromptSet, labels: Labels, order: Sequence[int]) -> tuple[str, ...]:
    """A core's labelled examples as demonstrations, in its search's full-context order."""
    _, everything = layout(order)
    return tuple(prompts.demo(i, labels[i]) for i in everything)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TransferChunk:
    examples: tuple[int, ...]  # example ids in the run
    labels: tuple[int, ...]
    scores: tuple[tuple[float, ...], ...]  # combined, normalised label log-probabilities
    # Share of cores whose own choice is the label; None where the cores' contexts were not read
    # (Transfer.zero_shot_only).
    agreement: tuple[Optional[float], ...]
    # Per example, where the zero-shot reading is averaged in: (the cores' reading's choice, the
    # zero-shot reading's choice), each alone. Empty otherwise, and where only zero-shot is read.
    readings: tuple[tuple[int, int], ...] = ()


@dataclass
class ChunkRows:
    """One chunk as read: every row of its units, the examples to transfer, and the members of
    their groups that a core already labelled."""

    rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)  # (row, fields), ascending within a unit
    targets: list[tuple[int, Example]] = field(default_factory=list)  # (example id, example)
    fixed: list[tuple[int, Example, int]] = field(default_factory=list)  # (example id, example, label)

    def ids(self) -> tuple[int, ...]:
        return tuple(i for i, _ in self.targets)


def plan_chunks(index: RowIndex, shape: TaskShape, core_labels: Mapping[int, Optional[int]],
                size: int) -> Iterator[ChunkRows]:
    """The run's units in order of first appearance, cut into chunks of about `size` examples
    to transfer; a unit never straddles two chunks. `core_labels`: each core example's label
    (None: the search left it unlabelled, so it is transferred too)."""
    current = ChunkRows()
    for unit in _units(index):
        block = ChunkRows()
        for r, fields in unit:
            block.rows.append((r, fields))
            for k, ex in enumerate(shape.examples(r, fields)):
                i = r * shape.per_row + k
                label = core_labels.get(i)
                if label is None:
                    block.targets.append((i, ex))
                else:
                    block.fixed.append((i, ex, label))
        if current.targets and block.targets and len(current.targets) + len(block.targets) > size:
            yield current
            current = ChunkRows()
        current.rows += block.rows
        current.targets += block.targets
        if block.targets:  # fixed members matter only beside examples to transfer
            current.fixed += block.fixed
    if current.rows:
        yield current


def _units(index: RowIndex) -> Iterator[list[tuple[int, dict[str, Any]]]]:
    if index.groups is None:
        for r, row in index.stream():
            yield [(r, row.fields)]
        return
    for unit in range(index.units()):
        rows = index.unit_rows(unit)
        yield [(r, row.fields) for r, row in zip(rows, index.read(rows))]


class Transfer:
    """Scores and labels target examples after each core's demonstrations."""

    def __init__(self, shape: TaskShape, contexts: Sequence[tuple[str, ...]], backend: Backend,
                 label_prefix: str, separator: str, zero_shot: bool = False):
        self.shape = shape
        self.cores = len(contexts)  # the first contexts; agreement counts these
        # With zero_shot, each row is also read alone and that reading averaged in with the cores'
        # (zero_shot_rule.py decides when).
        self.contexts = list(contexts) + [()] if contexts and zero_shot else list(contexts) or [()]
        self.backend = backend
        self.calibrate = shape.calibrate
        self.continuations = tuple(label_prefix + w for w in shape.label_words)
        self._raw: dict[int, list[Optional[list[float]]]] = {}  # example id -> per context; the calibration sample's
        self.keep: set[int] = set()  # ids whose scores are kept when a chunk reads them (the signal check's)
        # (example id, context) -> raw scores an earlier transfer read after the same demonstrations
        # (adopt): not asked of the model again.
        self._known: dict[tuple[int, int], list[float]] = {}
        # The data's class shares as estimated on a sample (class_prior.py), added to every
        # combined reading; None: labels follow the centred readings (equal shares).
        self.prior: Optional[ClassPrior] = None
        # Per context, its weight in the combined reading (None: equal). `core.count: auto` weighs
        # each reading by its agreement with the others (run/second_core.py).
        self.weights: Optional[list[float]] = None

    @property
    def cores_weigh_nothing(self) -> bool:
        """Whether every label is the zero-shot reading alone: the cores weigh nothing (core.count
        auto, their departure unconfirmed: run/second_core.py)."""
        return self.weights is not None and self.cores > 0 and not any(self.weights[:self.cores])

    @property
    def zero_shot_only(self) -> bool:
        """Whether rows not read yet are read zero-shot only (their core readings None): where the
        cores weigh nothing, a row read after two cores' demonstrations costs more than all its
        zero-shot reads, for readings that would not move its label. Apart from
        cores_weigh_nothing, which says what the labels are, because this says only what is read."""
        return self.cores_weigh_nothing and len(self.contexts) > self.cores

    def raw(self, examples: Sequence[tuple[int, Example]], keep: bool = False,
            every_context: bool = False) -> list[list[Optional[list[float]]]]:
        """Per example, per context, the label log-probabilities after that context (None for a
        core's context not read: zero_shot_only, unless `every_context`, as the signal check
        reads the cores' readings the labels left unused)."""
        missing = [(i, ex) for i, ex in examples if i not in self._raw]
        skip_cores = self.zero_shot_only and not every_context
        read = range(self.cores, len(self.contexts)) if skip_cores else range(len(self.contexts))
        wanted = [(i, c, ex) for i, ex in missing for c in read if (i, c) not in self._known]
        requests = [ScoreRequest(self.contexts[c] + (ex.query,), self.continuations) for _, c, ex in wanted]
        got = dict(zip(((i, c) for i, c, _ in wanted), self.backend.score(requests) if requests else []))
        fresh = {i: [got[i, c] if (i, c) in got else self._known.pop((i, c), None) for c in range(len(self.contexts))]
                 for i, _ in missing}
        if keep:
            self._raw.update(fresh)
        elif self.keep:
            self._raw.update((i, v) for i, v in fresh.items() if i in self.keep)
        return [self._raw[i] if i in self._raw else fresh[i] for i, _ in examples]

    def adopt(self, earlier: "Transfer") -> None:
        """Take the scores `earlier` kept after demonstrations this transfer holds too (the first
        core's, when a second core joins): the scores depend only on the prompt, so reading them
        again would cost model time for the same numbers."""
        for c, context in enumerate(self.contexts):
            for e, theirs in enumerate(earlier.contexts):
                if theirs == context:
                    self._known.update(((i, c), scores[e]) for i, scores in earlier._raw.items())
                    break

    def add_zero_shot(self, readings: Mapping[int, list[float]]) -> None:
        """Average each row's zero-shot reading in from here on. `readings` are raw zero-shot
        scores already read; a kept row without one keeps its other scores (in _known) and has
        only its zero-shot reading asked for when it is read: a kept row must hold every context,
        or its label would miss the zero-shot reading."""
        self.contexts.append(())
        for i in list(self._raw):
            if i in readings and len(self._raw[i]) == len(self.contexts) - 1:
                self._raw[i] = self._raw[i] + [list(readings[i])]
            else:
                self._known.update(((i, c), scores) for c, scores in enumerate(self._raw.pop(i)))
        self.known_zero_shot(readings)  # the rows not kept: not read again when transferred

    def known_zero_shot(self, readings: Mapping[int, list[float]]) -> None:
        """Raw zero-shot scores read already (the last context is the zero-shot one): a row not
        kept takes its score from here when it is read, instead of asking for it again."""
        c = len(self.contexts) - 1
        assert self.contexts[c] == (), "the last context is not the zero-shot reading"
        self._known.update(((i, c), list(r)) for i, r in readings.items() if i not in self._raw)

    def centres(self, sample: Sequence[tuple[int, Example]]) -> Optional[list[list[float]]]:
        """Per context, each label's mean raw score over `sample`; None when not calibrating."""
        if not self.calibrate or not sample:
            return None
        raw = self.raw(sample, keep=True)
        labels = len(self.continuations)
        return [
            [sum(r[c][y] for r in raw) / len(raw) for y in range(labels)]
            for c in range(len(self.contexts))
        ]

    def readings(self, scores: Sequence[Optional[Sequence[float]]], centres: Optional[list[list[float]]],
                 with_prior: bool = True) -> tuple[list[Optional[list[float]]], list[float]]:
        """One example's readings (per context, centred and normalised) and their combination:
        the mean (weighted, with weights), with the class prior added."""
        per_context = [None if s is None else log_softmax([v - m for v, m in zip(s, centres[c])] if centres else list(s))
                       for c, s in enumerate(scores)]
        combined = combine(per_context, self.weights)
        if with_prior and self.prior is not None:
            combined = self.prior.apply(combined)
        return per_context, combined

    def estimate_prior(self, sample: Sequence[tuple[int, Example]], centres: Optional[list[list[float]]]) -> ClassPrior:
        """The class shares under which the sample's combined readings are self-consistent."""
        return estimate(self._combined(sample, centres))

    def match_prior(self, sample: Sequence[tuple[int, Example]], centres: Optional[list[list[float]]],
                    shares: Sequence[float]) -> ClassPrior:
        """The offsets under which the sample's combined readings label in the given shares. The
        sample's scores are kept: its rows are transferred later, and not read twice."""
        return matching(self._combined(sample, centres, keep=True), shares)

    def _combined(self, sample: Sequence[tuple[int, Example]], centres: Optional[list[list[float]]],
                  keep: bool = False) -> list[list[float]]:
        return [self.readings(s, centres, with_prior=False)[1] for s in self.raw(list(sample), keep=keep)]

    def label(self, chunk: ChunkRows, centres: Optional[list[list[float]]]) -> TransferChunk:
        per_context: list[list[Optional[list[float]]]] = []  # example -> context -> normalised log-probs
        combined: list[list[float]] = []
        for scores in self.raw(chunk.targets):
            each, both = self.readings(scores, centres)
            per_context.append(each)
            combined.append(both)
        labels = self._consistent(chunk, combined)
        if self.zero_shot_only:
            return TransferChunk(chunk.ids(), tuple(labels), tuple(tuple(s) for s in combined),
                                 tuple(None for _ in labels))
        cores = max(1, self.cores)
        agreement = tuple(
            round(sum(argmax(s) == y for s in ctx[:cores]) / cores, 4) for ctx, y in zip(per_context, labels)
        )
        readings: tuple[tuple[int, int], ...] = ()
        if self.cores and len(self.contexts) > self.cores:
            weights = self.core_weights()
            readings = tuple((argmax(combine(ctx[:self.cores], weights)), argmax(ctx[self.cores])) for ctx in per_context)
        return TransferChunk(chunk.ids(), tuple(labels), tuple(tuple(s) for s in combined), agreement, readings)

    def core_weights(self) -> Optional[list[float]]:
        """The cores' own weights, where they weigh anything (None: equal)."""
        weights = self.weights[:self.cores] if self.weights else None
        return weights if weights and sum(weights) > 0 else None

    def _consistent(self, chunk: ChunkRows, scores: list[list[float]]) -> list[int]:
        examples = [ex for _, ex in chunk.targets] + [ex for _, ex, _ in chunk.fixed]
        groups = self.shape.groups(examples)
        if not groups:
            return [argmax(s) for s in scores]
        # Fixed members take part with their label only; their scores never matter.
        padded = scores + [[0.0] * len(self.continuations) for _ in chunk.fixed]
        held = {len(scores) + k: y for k, (_, _, y) in enumerate(chunk.fixed)}
        return repair(padded, groups, held)[: len(scores)]
