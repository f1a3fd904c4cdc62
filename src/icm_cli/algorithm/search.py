"""ICM's search (Algorithm 1) and ConsistencyFix (Algorithm 2), as pure logic.

Knows nothing of files, terminals or models: it sees a Problem, a Scorer that turns a label
assignment into per-example label scores, and a seed. Same inputs, same labels.

Labels a person gave (`Problem.fixed`) are part of every labelling from the start: they are
demonstrations and count in P(D) like any other, but no proposal picks them and no repair
flips them (a violated pair whose members are both fixed stays violated, counted in I(D)).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

from ..foundation.config import SearchConfig
# The search's vocabulary lives in search_types; these names are imported from here as before.
from .search_types import OPTIONS, TRUE, ConsistencyGroup, Constraint, ConstraintKind, Evaluation, Labels, Problem, ReadAhead, Scorer, SearchResult, SearchState, Step, extend_order

__all__ = ["ConsistencyGroup", "Constraint", "ConstraintKind", "Evaluation", "Labels", "OPTIONS", "Problem",
    "ReadAhead", "Scorer", "SearchResult", "SearchState", "Step", "TRUE", "extend_order", "run_search",
    "utility", "predictability", "violations", "temperature", "argmax", "initial_labels", "is_fixed_point"]


def _labelled(labels: Labels) -> tuple[int, ...]:
    return tuple(i for i, y in enumerate(labels) if y is not None)


def utility(labels: Labels, evaluation: Evaluation, constraints: Sequence[Constraint], params: SearchConfig) -> float:
    """U(D) = alpha * P(D) - I(D)."""
    return params.alpha * predictability(labels, evaluation, params.objective) - len(violations(labels, constraints))


def predictability(labels: Labels, evaluation: Evaluation, objective: str) -> float:
    """P(D): the paper's sum of label log-probabilities, or the reference code's mean signed log-odds."""
    terms = []
    for i, y in enumerate(labels):
        if y is None:
            continue
        logp = evaluation.scores[i][y]
        if objective == "sum_logprob":
            terms.append(logp)
        else:
            # log p - log(1 - p); in binary tasks this is the signed log-odds of the label.
            rest = -math.expm1(logp) if logp < 0 else 0.0
            terms.append(logp - math.log(max(rest, 1e-300)))
    if not terms:
        return 0.0
    return sum(terms) if objective == "sum_logprob" else sum(terms) / len(terms)


def violations(labels: Labels, constraints: Sequence[Constraint]) -> list[Constraint]:
    return [c for c in constraints if c.violated(labels)]


def temperature(params: SearchConfig, iteration: int, flips: int) -> float:
    if params.schedule == "paper":
        t = params.t0 / (1 + params.beta * math.log(max(iteration, 1)))
    else:
        t = params.t0 / (1 + 2 * math.log(1 + flips))
    return max(params.t_min, t)


def argmax(scores: Sequence[float]) -> int:
    best = 0
    for k, s in enumerate(scores):
        if s > scores[best]:
            best = k
    return best


@dataclass
class _State:
    labels: Labels
    order: tuple[int, ...]
    evaluation: Evaluation
    utility: float
    predictability: float
    inconsistent: int
    open: int = 0  # violations a repair can still change (one member at least is not fixed)


@dataclass
class _Search:
    problem: Problem
    scorer: Scorer
    params: SearchConfig
    rng: random.Random
    evaluations: int = 0
    _group_index: dict[str, list[int]] = field(default_factory=dict)
    # Recent share of proposals accepted (a moving average): reading ahead past an acceptance is
    # wasted, so the look ahead is about one acceptance long.
    acceptance: float = 0.5
    free: tuple[int, ...] = ()  # the examples proposals may pick (not fixed by a person)
    # The constraints a repair can act on: all of them unless both members are fixed.
    repairable: tuple[Constraint, ...] = ()

    def __post_init__(self) -> None:
        self.free = self.problem.free()
        held = self.problem.held
        self.repairable = tuple(c for c in self.problem.constraints if held(c.i) is None or held(c.j) is None)

    def outcome(self, accepted: bool) -> None:
        self.acceptance = 0.8 * self.acceptance + 0.2 * float(accepted)

    def ahead(self) -> int:
        k = getattr(self.scorer, "lookahead", 1)
        return max(1, min(k, round(1 / max(self.acceptance, 1e-3))))

    def state(self, labels: Labels, order: tuple[int, ...]) -> _State:
        self.evaluations += 1
        order = extend_order(order, labels)
        evaluation = self.scorer.evaluate(labels, order)
        p = predictability(labels, evaluation, self.params.objective)
        bad = len(violations(labels, self.problem.constraints))
        fixable = len(violations(labels, self.repairable)) if self.problem.fixed else bad
        return _State(labels, order, evaluation, self.params.alpha * p - bad, p, bad, fixable)

    def initial_labels(self) -> tuple[Labels, tuple[int, ...]]:
        """Fixed examples with their labels (first in labelling order: the stable part of every
        prompt), then random seed labels on free ones."""
        k = min(self.params.initial_labels, len(self.free))
        chosen = self.rng.sample(self.free, k)
        # Balanced random seed labels (half True, half False in the binary case).
        words = [c % self.problem.num_labels for c in range(k)]
        self.rng.shuffle(words)
        labels: list[Optional[int]] = list(self.problem.fixed) or [None] * self.problem.n
        for i, y in zip(chosen, words):
            labels[i] = y
        return tuple(labels), tuple(self.problem.held_labels()) + tuple(chosen)

    def allows(self, i: int, y: int) -> bool:
        held = self.problem.held(i)
        return held is None or held == y

    def consistency_fix(self, current: _State) -> _State:
        tried: set[Constraint] = set()
        for _ in range(self.params.fix_rounds):
            bad = [c for c in violations(current.labels, self.repairable) if c not in tried]
            if not bad:
                break
            pair = self.rng.choice(bad)
            tried.add(pair)
            best: Optional[_State] = None
            for a, b in OPTIONS[pair.kind]:
                if not (self.allows(pair.i, a) and self.allows(pair.j, b)):
                    continue  # a fixed member keeps its label: only options that agree with it
                option = list(current.labels)
                option[pair.i], option[pair.j] = a, b
                candidate = self.state(tuple(option), current.order)
                if best is None or candidate.utility > best.utility:
                    best = candidate
            if best is not None and best.utility > current.utility:
                current = best
        return current

    def pick(self, labels: Labels, rng: Optional[random.Random] = None) -> int:
        rng = rng or self.rng
        groups = self.problem.groups
        if not groups or self.params.group_weight == 1:
            return self.free[rng.randrange(len(self.free))]
        active = {groups[i] for i, y in enumerate(labels) if y is not None and groups[i] is not None}
        weights = [
            0.0 if self.problem.held(i) is not None
            else self.params.group_weight if y is None and groups[i] in active else 1.0
            for i, y in enumerate(labels)
        ]
        return rng.choices(range(self.problem.n), weights=weights)[0]

    def read_ahead(self, current: _State, iteration: int, flips: int) -> None:
        """Hand the scorer the evaluations the next iterations would ask for if each proposal
        were rejected, in one batch, when the next one is not already at hand.

        Exact: the loop below still decides every step one at a time, with the same RNG draws;
        it only finds its evaluations ready. A simulated proposal that breaks a constraint ends
        the look ahead (the repair's draws depend on its evaluations). Worth it where one wide
        call costs about what one narrow call does (a GPU); a scorer without `lookahead` > 1 is
        never asked.
        """
        scorer = self.scorer
        k = self.ahead()
        if k <= 1:
            return
        rng = random.Random()
        rng.setstate(self.rng.getstate())
        items: list[tuple[Labels, tuple[int, ...]]] = []
        for it in range(iteration, self.params.iterations + 1):
            if len(items) >= k or is_fixed_point(current, self.problem):
                break
            t = temperature(self.params, it, flips)
            i = self.pick(current.labels, rng)
            proposal = argmax(current.evaluation.scores[i])
            if current.labels[i] == proposal:
                continue
            changed = list(current.labels)
            changed[i] = proposal
            labels = tuple(changed)
            order = extend_order(current.order, labels)
            if not items and scorer.cached(labels, order):  # type: ignore[attr-defined]
                return
            items.append((labels, order))
            if violations(labels, self.problem.constraints):
                break
            if t > 0:
                rng.random()  # the acceptance draw a rejection takes
        if len(items) > 1:
            scorer.prefetch(items)  # type: ignore[attr-defined]

    def read_ahead_quench(self, current: _State, start: int) -> None:
        """The quench's next proposals (index order, no RNG), as read_ahead does for the loop."""
        k = self.ahead()
        if k <= 1:
            return
        items: list[tuple[Labels, tuple[int, ...]]] = []
        for i in range(start, self.problem.n):
            proposal = argmax(current.evaluation.scores[i])
            if current.labels[i] == proposal or self.problem.held(i) is not None:
                continue
            changed = list(current.labels)
            changed[i] = proposal
            labels = tuple(changed)
            order = extend_order(current.order, labels)
            if not items and self.scorer.cached(labels, order):  # type: ignore[attr-defined]
                return
            items.append((labels, order))
            if len(items) >= k or violations(labels, self.problem.constraints):
                break
        if len(items) > 1:
            self.scorer.prefetch(items)  # type: ignore[attr-defined]


def initial_labels(problem: Problem, params: SearchConfig) -> tuple[Labels, tuple[int, ...]]:
    """The seed labels a search from random labels starts with (no model needed): the dry run
    shows the prompts they make."""
    return _Search(problem, None, params, random.Random(params.seed)).initial_labels()  # type: ignore[arg-type]


def is_fixed_point(state: _State, problem: Problem) -> bool:
    """True when no pick can propose a change, so further iterations are provably no-ops
    (fixed examples are never picked, and a violation between two of them never repaired)."""
    return state.open == 0 and all(
        y is not None and (problem.held(i) is not None or argmax(state.evaluation.scores[i]) == y)
        for i, y in enumerate(state.labels)
    )


def _quench(search: _Search, current: _State, passes: int = 3) -> tuple[_State, tuple[int, int]]:
    """Greedy passes (temperature 0) in index order until no single proposal raises U.

    The annealing schedule rarely reaches a low temperature within a practical iteration budget,
    so the last state can sit a few uphill moves from a local optimum. It saves no checkpoint of
    its own: a resumed run replays it from the last saved state (RNG included) identically.
    """
    proposals = accepted = 0
    for _ in range(passes):
        improved = False
        for i in range(search.problem.n):
            proposal = argmax(current.evaluation.scores[i])
            if current.labels[i] == proposal or search.problem.held(i) is not None:
                continue
            search.read_ahead_quench(current, i)
            changed = list(current.labels)
            changed[i] = proposal
            proposals += 1
            candidate = search.consistency_fix(search.state(tuple(changed), current.order))
            search.outcome(candidate.utility > current.utility)
            if candidate.utility > current.utility:
                current, improved = candidate, True
                accepted += 1
        if not improved:
            break
    return current, (proposals, accepted)


def run_search(
    problem: Problem,
    scorer: Scorer,
    params: SearchConfig,
    on_step: Optional[Callable[[Step], None]] = None,
    resume: Optional[SearchState] = None,
    start: Optional[Labels] = None,
) -> SearchResult:
    """Algorithm 1. `start`: labels to begin from instead of random seed labels (fixed
    examples keep theirs whatever `start` says)."""
    search = _Search(problem, scorer, params, random.Random(params.seed))
    if resume is None:
        if start is not None:
            start = problem.with_fixed(start)
        first_labels = (start, _labelled(start)) if start is not None else search.initial_labels()
        current = search.consistency_fix(search.state(*first_labels))
        flips = proposals = accepted = 0
        first = 1
    else:
        search.rng.setstate(resume.rng_state)
        current = search.state(resume.labels, resume.order)
        search.evaluations = resume.evaluations
        flips, proposals, accepted = resume.flips, resume.proposals, resume.accepted
        first = resume.iteration + 1
    iteration = first - 1
    converged = False

    def report(t: float, changed: bool) -> None:
        if on_step is None:
            return
        counts = [0] * problem.num_labels
        for y in current.labels:
            if y is not None:
                counts[y] += 1
        state = None
        if changed:
            state = SearchState(current.labels, search.rng.getstate(), iteration, flips, proposals,
                                accepted, search.evaluations, current.order)
        on_step(
            Step(iteration, params.iterations, t, current.utility, current.predictability,
                 current.inconsistent, sum(counts), problem.n, proposals, accepted, tuple(counts),
                 current.labels, state)
        )

    report(temperature(params, iteration, flips), resume is None)
    for iteration in range(first, params.iterations + 1):
        t = temperature(params, iteration, flips)
        if is_fixed_point(current, problem):
            converged = True
            report(t, False)
            break
        search.read_ahead(current, iteration, flips)
        i = search.pick(current.labels)
        proposal = argmax(current.evaluation.scores[i])
        if current.labels[i] == proposal:
            report(t, False)
            continue
        proposals += 1
        changed = list(current.labels)
        changed[i] = proposal
        candidate = search.consistency_fix(search.state(tuple(changed), current.order))
        delta = candidate.utility - current.utility
        taken = delta > 0 or (t > 0 and search.rng.random() < math.exp(delta / t))
        search.outcome(taken)
        if taken:
            current = candidate
            accepted += 1
            flips += 1
        report(t, True)
    if params.final_quench and not converged:
        current, quenched = _quench(search, current)
        proposals += quenched[0]
        accepted += quenched[1]
        converged = is_fixed_point(current, problem)
        report(temperature(params, iteration, flips), False)
    return SearchResult(
        current.labels, current.order, current.evaluation, current.utility, current.predictability,
        current.inconsistent, iteration, proposals, accepted, search.evaluations, converged,
    )
