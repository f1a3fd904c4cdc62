"""Labelling the examples outside the cores: the cores' labels as many-shot context.

A core's labelled examples, in the order its search's prompts used for unlabelled examples,
are one shared prefix of demonstrations; each transferred example costs only its own tokens
after it (backends compute a shared prefix once). This is how the paper uses ICM's labels:
many-shot prompting with the searched labels. With no core (zero-shot) the prefix is empty.

- Calibration: for classification, each core's raw label scores are centred on the examples
  being transferred: the mean over a seeded sample of them (batch calibration, as in the
  search, but on the pool rather than on the core, whose labels it already fits).
- Several cores: their calibrated log-probabilities are averaged; the share of cores whose own
  choice is the final label is the row's agreement.
- Consistency: examples of one consistency group are transferred in one chunk, and get the
  consistent labels with the highest total log-probability (consistency.repair), with any
  member the core already labelled held fixed.
Every label is a function of its own example's scores, the centres and its group: chunking
and resuming do not change it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from .backends.base import Backend, ScoreRequest
from .consistency import repair
from .scoring import PromptSet, layout, log_softmax
from .search import Constraint, Labels, argmax
from .tasks import Task


def demonstrations(prompts: PromptSet, labels: Labels, order: Sequence[int]) -> tuple[str, ...]:
    """A core's labelled examples as demonstrations, in its search's full-context order."""
    _, everything = layout(order)
    return tuple(prompts.demo(i, labels[i]) for i in everything)  # type: ignore[arg-type]


@dataclass(frozen=True)
class TransferChunk:
    examples: tuple[int, ...]  # task example indices
    labels: tuple[int, ...]
    scores: tuple[tuple[float, ...], ...]  # combined, normalised label log-probabilities
    agreement: tuple[float, ...]  # share of cores whose own choice is the label


def chunks(task: Task, targets: Sequence[int], size: int) -> list[tuple[int, ...]]:
    """Targets in input order, cut into chunks of about `size`; a consistency group (or a
    row's pair of examples) never straddles two chunks."""
    blocks: dict[object, list[int]] = {}
    for i in targets:
        ex = task.examples[i]
        blocks.setdefault(("group", ex.group) if ex.group is not None else ("row", ex.row), []).append(i)
    out: list[tuple[int, ...]] = []
    current: list[int] = []
    for block in blocks.values():
        if current and len(current) + len(block) > size:
            out.append(tuple(current))
            current = []
        current.extend(block)
    if current:
        out.append(tuple(current))
    return out


def calibration_sample(targets: Sequence[int], size: int, seed: int) -> tuple[int, ...]:
    if len(targets) <= size:
        return tuple(targets)
    return tuple(sorted(random.Random(seed).sample(list(targets), size)))


class Transfer:
    """Scores and labels target examples after each core's demonstrations."""

    def __init__(self, task: Task, contexts: Sequence[tuple[str, ...]], backend: Backend,
                 label_prefix: str, separator: str, calibrate: bool):
        self.task = task
        self.contexts = list(contexts) or [()]
        self.backend = backend
        self.calibrate = calibrate
        self.continuations = tuple(label_prefix + w for w in task.label_words)
        self._raw: dict[int, list[list[float]]] = {}  # example -> per context; the calibration sample's

    def raw(self, examples: Sequence[int], keep: bool = False) -> list[list[list[float]]]:
        """Per example, per context, the label log-probabilities after that context."""
        missing = [i for i in examples if i not in self._raw]
        requests = [
            ScoreRequest(context + (self.task.examples[i].query,), self.continuations)
            for i in missing for context in self.contexts
        ]
        values = self.backend.score(requests) if requests else []
        k = len(self.contexts)
        fresh = {i: values[n * k:(n + 1) * k] for n, i in enumerate(missing)}
        if keep:
            self._raw.update(fresh)
        return [self._raw[i] if i in self._raw else fresh[i] for i in examples]

    def centres(self, sample: Sequence[int]) -> Optional[list[list[float]]]:
        """Per context, each label's mean raw score over `sample`; None when not calibrating."""
        if not self.calibrate or not sample:
            return None
        raw = self.raw(sample, keep=True)
        labels = len(self.continuations)
        return [
            [sum(r[c][y] for r in raw) / len(raw) for y in range(labels)]
            for c in range(len(self.contexts))
        ]

    def label(self, examples: Sequence[int], centres: Optional[list[list[float]]],
              fixed: Mapping[int, int]) -> TransferChunk:
        """Labels for `examples`; `fixed`: labels the cores gave other members of their groups."""
        per_context: list[list[list[float]]] = []  # example -> context -> normalised log-probs
        for scores in self.raw(examples):
            per_context.append([
                log_softmax([v - m for v, m in zip(s, centres[c])] if centres else s)
                for c, s in enumerate(scores)
            ])
        combined = [log_softmax([sum(col) / len(col) for col in zip(*ctx)]) for ctx in per_context]
        labels = self._consistent(examples, combined, fixed)
        agreement = tuple(
            round(sum(argmax(s) == y for s in ctx) / len(ctx), 4) for ctx, y in zip(per_context, labels)
        )
        return TransferChunk(tuple(examples), tuple(labels), tuple(tuple(s) for s in combined), agreement)

    def _consistent(self, examples: Sequence[int], scores: list[list[float]], fixed: Mapping[int, int]) -> list[int]:
        local = {g: k for k, g in enumerate(examples)}
        extra: dict[int, int] = {}
        constraints: list[Constraint] = []
        for c in self.task.constraints:
            if c.i not in local and c.j not in local:
                continue
            for end in (c.i, c.j):
                if end not in local:
                    if end not in fixed:
                        break
                    extra.setdefault(end, len(local) + len(extra))
            else:
                where = {**local, **extra}
                constraints.append(Constraint(where[c.i], where[c.j], c.kind))
        if not constraints:
            return [argmax(s) for s in scores]
        # Fixed members take part with their label only; their scores never matter.
        padded = scores + [[0.0] * len(self.continuations) for _ in extra]
        held = {k: fixed[g] for g, k in extra.items()}
        return repair(padded, constraints, held)[: len(examples)]

