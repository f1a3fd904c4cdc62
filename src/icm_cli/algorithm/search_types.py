"""The search's vocabulary: labels, constraints and consistency groups, the problem a search
is given, what a scorer returns, and what a search reports and returns. Pure data, shared by the
search (search.py), the consistency repair and the core labellers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional, Protocol, Sequence

Labels = tuple[Optional[int], ...]
TRUE = 0  # in binary claim tasks the first label word means "true"

ConstraintKind = Literal["not_both_true", "equal", "exactly_one_true"]

# The label pairs that satisfy each kind of constraint (ConsistencyFix's options).
OPTIONS: dict[str, tuple[tuple[int, int], ...]] = {
    "not_both_true": ((TRUE, 1), (1, TRUE)),
    "exactly_one_true": ((TRUE, 1), (1, TRUE)),
    "equal": ((TRUE, TRUE), (1, 1)),
}


@dataclass(frozen=True)
class Constraint:
    i: int
    j: int
    kind: ConstraintKind

    def violated(self, labels: Labels) -> bool:
        a, b = labels[self.i], labels[self.j]
        if a is None or b is None:
            return False
        if self.kind == "not_both_true":
            return a == TRUE and b == TRUE
        if self.kind == "exactly_one_true":
            return (a == TRUE) == (b == TRUE)
        return a != b


@dataclass(frozen=True)
class ConsistencyGroup:
    """Examples (by index) that constrain each other, as a whole: a claims group (true answers
    exclude each other; equal keys agree) or a comparison's two orders (exactly one is true)."""

    kind: Literal["claims", "pair"]
    members: tuple[int, ...]
    keys: tuple[str, ...] = ()  # claims: each member's key

    def pairs(self) -> list[Constraint]:
        """The group as ConsistencyFix's pairs: quadratic in its size, so for cores only."""
        if self.kind == "pair":
            return [Constraint(self.members[0], self.members[1], "exactly_one_true")]
        m, keys = self.members, self.keys
        return [Constraint(m[a], m[b], "equal" if keys[a] == keys[b] else "not_both_true")
                for a in range(len(m)) for b in range(a + 1, len(m))]


@dataclass(frozen=True)
class Problem:
    n: int
    num_labels: int
    constraints: tuple[Constraint, ...] = ()
    groups: tuple[Optional[str], ...] = ()  # consistency group per example, for sampling weights
    consistency: tuple[ConsistencyGroup, ...] = ()  # the constraints as groups (repair reads these)
    # Per example, the label a person gave (never changed), else None; empty: nothing is fixed.
    fixed: tuple[Optional[int], ...] = ()

    def held(self, i: int) -> Optional[int]:
        return self.fixed[i] if self.fixed else None

    def held_labels(self) -> dict[int, int]:
        """{example: label} of the fixed examples (what consistency.repair holds)."""
        return {i: y for i, y in enumerate(self.fixed) if y is not None}

    def free(self) -> tuple[int, ...]:
        """The examples the search chooses labels for."""
        return tuple(i for i in range(self.n) if self.held(i) is None)

    def with_fixed(self, labels: Labels) -> Labels:
        """`labels` with every fixed example's label put back."""
        if not self.fixed:
            return labels
        return tuple(y if f is None else f for y, f in zip(labels, self.fixed))


@dataclass(frozen=True)
class Evaluation:
    """Per example, normalised log-probabilities of each label.

    For a labelled example the context is every other labelled example (leave-one-out);
    for an unlabelled one it is the whole labelled set. Proposals read these too, so a
    proposal costs no model call.
    """

    scores: tuple[tuple[float, ...], ...]


class Scorer(Protocol):
    def evaluate(self, labels: Labels, order: Sequence[int]) -> Evaluation:
        """Scores of `labels`; `order` lists the labelled examples in the order they were labelled."""
        ...


class ReadAhead(Protocol):
    """A scorer that can take several evaluations at once (see `read_ahead`)."""

    lookahead: int  # how many evaluations are worth handing over at once

    def cached(self, labels: Labels, order: Sequence[int]) -> bool: ...

    def prefetch(self, items: Sequence[tuple[Labels, tuple[int, ...]]]) -> None:
        """Evaluate these together and keep the results for evaluate()."""
        ...


def extend_order(order: tuple[int, ...], labels: Labels) -> tuple[int, ...]:
    """The labelling order after `labels`: examples labelled for the first time go last.

    Relabelling keeps an example's place. Prompts put late-labelled examples late, so a
    scorer that keeps attention state across evaluations recomputes little when one is added.
    """
    have = set(order)
    kept = tuple(i for i in order if labels[i] is not None)
    return kept + tuple(i for i, y in enumerate(labels) if y is not None and i not in have)


@dataclass(frozen=True)
class SearchState:
    """Everything needed to continue a search exactly where it was (the evaluation is recomputed)."""

    labels: Labels
    rng_state: tuple
    iteration: int
    flips: int
    proposals: int
    accepted: int
    evaluations: int
    order: tuple[int, ...] = ()  # the labelled examples in the order they were labelled


@dataclass(frozen=True)
class Step:
    iteration: int
    iterations: int
    temperature: float
    utility: float
    predictability: float
    inconsistent: int
    labelled: int
    n: int
    proposals: int
    accepted: int
    label_counts: tuple[int, ...]
    labels: Labels
    # Set when this step changed the search's state (a proposal, or the start): the moment to
    # save a checkpoint. Steps in between only advance the RNG and are replayed on resume.
    state: Optional[SearchState] = None


@dataclass(frozen=True)
class SearchResult:
    labels: Labels
    order: tuple[int, ...]  # the labelled examples in labelling order (prompts follow it)
    evaluation: Evaluation
    utility: float
    predictability: float
    inconsistent: int
    iterations: int
    proposals: int
    accepted: int
    evaluations: int
    converged: bool
