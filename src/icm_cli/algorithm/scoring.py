"""Mutual predictability as model requests: the prompts of one U evaluation, laid out to share prefixes.

For labelled example i the prompt is every other labelled example as a demonstration,
then i's input; its label is scored. The order of the demonstrations is fixed by a
halving recursion: split the labelled set D into halves A and B; every prompt for an
example in A starts with all of B, every prompt for B starts with all of A; recurse.
Each prompt still holds exactly D minus i, but prompts share long prefixes, so a backend
that reuses prefixes computes O(n log n) tokens instead of O(n^2).

The search adds examples one at a time, and a backend that keeps attention state across
evaluations recomputes everything after the first token that changed. So the newest
examples (the last `len(D) % TAIL_BLOCK` in labelling order, the tail) come after the
halving part in every prompt: adding one recomputes only itself and each prompt's input,
O(n) tokens. Every TAIL_BLOCK additions the tail joins the halving part. The layout is a
pure function of the labelled set and its labelling order, which the search state holds.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Optional, Sequence

from ..backends.base import Backend, ScoreRequest
from .search import Evaluation, Labels


@dataclass(frozen=True)
class PromptSet:
    """Everything needed to write prompts for one batch of examples."""

    queries: tuple[str, ...]  # each example's rendered input, ending where its label goes
    label_words: tuple[str, ...]
    label_prefix: str = " "
    separator: str = "\n\n"
    calibrate: bool = False

    def demo(self, i: int, label: int) -> str:
        return self.queries[i] + self.label_prefix + self.label_words[label] + self.separator

    def continuations(self) -> tuple[str, ...]:
        return tuple(self.label_prefix + w for w in self.label_words)


# Tail size bound: larger means fewer full rebuilds but longer per-prompt tails.
TAIL_BLOCK = 8


def leave_one_out_contexts(members: Sequence[int]) -> dict[int, list[int]]:
    """For each member, the other members in the halving order (see module docstring)."""
    out: dict[int, list[int]] = {}

    def split(group: Sequence[int], prefix: list[int]) -> None:
        if len(group) == 1:
            out[group[0]] = prefix
            return
        half = len(group) // 2
        first, second = group[:half], group[half:]
        split(first, prefix + list(second))
        split(second, prefix + list(first))

    if members:
        split(list(members), [])
    return out


def _labelled(labels: Labels) -> tuple[int, ...]:
    """The labelled examples in index order (the default labelling order)."""
    return tuple(i for i, y in enumerate(labels) if y is not None)


def layout(order: Sequence[int], tail_block: int = TAIL_BLOCK) -> tuple[dict[int, list[int]], list[int]]:
    """Each member's leave-one-out context, and the full context, for members in labelling order."""
    order = list(order)
    cut = len(order) - len(order) % tail_block
    settled, tail = order[:cut], order[cut:]
    contexts = {i: ctx + tail for i, ctx in leave_one_out_contexts(settled).items()}
    contexts.update({i: settled + ctx for i, ctx in leave_one_out_contexts(tail).items()})
    return contexts, settled + tail


class CoherenceScorer:
    """Turns a label assignment into per-example label scores (the search's Scorer)."""

    def __init__(self, prompts: PromptSet, backend: Backend, memo_size: int = 512):
        self.prompts = prompts
        self.backend = backend
        self.memo_size = memo_size
        # Evaluations worth handing the backend at once (search.read_ahead): more than one where
        # a wide call costs about what a narrow one does (the hf backend on a GPU).
        self.lookahead = max(1, int(getattr(backend, "lookahead", 1)))
        self._memo: OrderedDict[tuple, Evaluation] = OrderedDict()
        self.memo_hits = 0
        self.evaluations = 0  # computed, not served from the memo

    def requests(self, labels: Labels, order: Optional[Sequence[int]] = None) -> tuple[list[ScoreRequest], list[int]]:
        """The requests of one evaluation, and the example each one scores.

        `order`: the labelled examples in labelling order (default: index order).
        """
        p = self.prompts
        conts = p.continuations()
        members = _labelled(labels)
        if order is None:
            order = members
        elif sorted(order) != list(members):
            raise ValueError("order must list exactly the labelled examples")
        demos = {i: p.demo(i, labels[i]) for i in members}
        contexts, everything = layout(order)
        requests: list[ScoreRequest] = []
        examples: list[int] = []
        for i, context in contexts.items():
            requests.append(ScoreRequest(tuple(demos[j] for j in context) + (p.queries[i],), conts))
            examples.append(i)
        # Proposals for unlabelled examples read the whole labelled set, in the order that
        # shares the longest prefix with the tail's prompts above.
        full = tuple(demos[j] for j in everything)
        for i, y in enumerate(labels):
            if y is None:
                requests.append(ScoreRequest(full + (p.queries[i],), conts))
                examples.append(i)
        return requests, examples

    @staticmethod
    def _key(labels: Labels, order: Optional[Sequence[int]]) -> tuple:
        # The default order is index order: key it as such so both spellings share one entry.
        return (labels, tuple(order) if order is not None else _labelled(labels))

    def cached(self, labels: Labels, order: Optional[Sequence[int]] = None) -> bool:
        return self._key(labels, order) in self._memo

    def evaluate(self, labels: Labels, order: Optional[Sequence[int]] = None) -> Evaluation:
        key = self._key(labels, order)
        if key in self._memo:
            self.memo_hits += 1
        else:
            self.prefetch([(labels, order)])
        self._memo.move_to_end(key)
        return self._memo[key]

    def prefetch(self, items: Sequence[tuple[Labels, Optional[Sequence[int]]]]) -> None:
        """Evaluate several labellings in one backend call and keep them for evaluate()."""
        todo = [(labels, order) for labels, order in dict.fromkeys(
            (labels, tuple(order) if order is not None else None) for labels, order in items)
            if not self.cached(labels, order)]
        requests: list[ScoreRequest] = []
        spans: list[tuple[Labels, Optional[Sequence[int]], list[int], int]] = []
        for labels, order in todo:
            reqs, examples = self.requests(labels, order)
            spans.append((labels, order, examples, len(requests)))
            requests.extend(reqs)
        values = self.backend.score(requests) if requests else []
        for labels, order, examples, first in spans:
            self.evaluations += 1
            raw: list[list[float]] = [[] for _ in labels]
            for i, v in zip(examples, values[first:first + len(examples)]):
                raw[i] = v
            if self.prompts.calibrate:
                raw = _batch_calibrated(raw, labels)
            self._memo[self._key(labels, order)] = Evaluation(tuple(tuple(log_softmax(v)) for v in raw))
            if len(self._memo) > self.memo_size:
                self._memo.popitem(last=False)


def _batch_calibrated(raw: list[list[float]], labels: Labels) -> list[list[float]]:
    """Subtract each label's mean log-probability over the labelled set (batch calibration).

    What the context says about every input alike cancels; what the input adds remains.
    With the reference objective and two labels, a labelling that gives every example one label
    then has P(D) = 0 exactly (with more labels, below 0), while labels that follow the model's
    reading of each input score above 0.
    """
    members = _labelled(labels)
    if len(members) < 2:
        return raw
    k = len(raw[members[0]])
    mean = [sum(raw[i][y] for i in members) / len(members) for y in range(k)]
    return [[v - m for v, m in zip(values, mean)] for values in raw]


def centred_readings(raw: Sequence[Sequence[float]], calibrate: bool) -> list[list[float]]:
    """Label log-probabilities of a batch of inputs each read after the same context (none, for
    zero-shot): centred on the batch's mean score per label where the task calibrates (what the
    label words score on every input alike cancels), normalised either way."""
    if not calibrate or not raw:
        return [log_softmax(r) for r in raw]
    mean = [sum(col) / len(col) for col in zip(*raw)]
    return [log_softmax([v - m for v, m in zip(r, mean)]) for r in raw]


def log_softmax(values: Sequence[float]) -> list[float]:
    top = max(values)
    total = top + math.log(sum(math.exp(v - top) for v in values))
    return [v - total for v in values]
