"""Unit tests for icm_cli.algorithm.search: constraints, objective, temperature, and the ICM search loop.

Everything here runs against deterministic fake scorers; no model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import random
import types
from collections import Counter
from typing import Optional, Sequence

import pytest

import icm_cli.algorithm.search as search_module
from icm_cli.foundation.config import SearchConfig
from icm_cli.algorithm.search import TRUE, Constraint, Evaluation, Problem, Step, predictability, run_search, temperature, violations

FALSE = 1


# --------------------------------------------------------------------------- helpers


def _log_softmax(values: Sequence[float]) -> tuple[float, ...]:
    top = max(values)
    total = top + math.log(sum(math.exp(v - top) for v in values))
    return tuple(v - total for v in values)


def _ev(*probs: Sequence[float]) -> Evaluation:
    """An Evaluation from per-example label probabilities."""
    return Evaluation(tuple(tuple(math.log(p) for p in row) for row in probs))


def params(**overrides) -> SearchConfig:
    # Algorithm 1 exactly as the reference defines it; the final quench is tested on its own.
    return dataclasses.replace(SearchConfig(final_quench=False), **overrides)


class ContextScorer:
    """A fake model whose reading of example i depends on how 'true' the other labels are.

    Each example's score favours its hidden true label by `bias + strength * (2 * agree - 1)`,
    where `agree` is the share of the *other* labelled examples that carry their true label.
    With bias > strength the model reads every example correctly whatever the context, more
    confidently the more coherent (correct) the context is, so predictability is highest at
    the hidden labelling and it is the only fixed point, as ICM assumes of a model that
    already knows the concept.
    """

    def __init__(self, truth: Sequence[int], num_labels: int = 2, bias: float = 2.0, strength: float = 1.5):
        self.truth = tuple(truth)
        self.num_labels = num_labels
        self.bias = bias
        self.strength = strength
        self.calls = 0
        self.seen: list[tuple[Optional[int], ...]] = []
        self.orders: list[Optional[tuple[int, ...]]] = []

    def evaluate(self, labels, order=None):
        self.calls += 1
        self.seen.append(tuple(labels))
        self.orders.append(tuple(order) if order is not None else None)
        n = len(self.truth)
        assert len(labels) == n
        if order is not None:
            assert sorted(order) == [j for j, y in enumerate(labels) if y is not None]
        labelled = [j for j, y in enumerate(labels) if y is not None]
        rows = []
        for i in range(n):
            others = [j for j in labelled if j != i]
            agree = sum(labels[j] == self.truth[j] for j in others) / len(others) if others else 0.5
            margin = self.bias + self.strength * (2 * agree - 1)
            logits = [0.0] * self.num_labels
            logits[self.truth[i]] = margin
            rows.append(_log_softmax(logits))
        return Evaluation(tuple(rows))


class StaticScorer:
    """A fake model whose per-example label probabilities ignore the context."""

    def __init__(self, probs: Sequence[Sequence[float]]):
        self.scores = tuple(tuple(math.log(p) for p in row) for row in probs)
        self.calls = 0

    def evaluate(self, labels, order=None):
        self.calls += 1
        assert len(labels) == len(self.scores)
        return Evaluation(self.scores)


TRUTH12 = (0, 1, 1, 0, 0, 1, 0, 1, 1, 0, 1, 0)


# --------------------------------------------------------------------------- Constraint


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(TRUE, TRUE, True), (TRUE, FALSE, False), (FALSE, TRUE, False), (FALSE, FALSE, False)],
)
def test_not_both_true(a, b, expected):
    assert Constraint(0, 1, "not_both_true").violated((a, b)) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(TRUE, TRUE, True), (TRUE, FALSE, False), (FALSE, TRUE, False), (FALSE, FALSE, True)],
)
def test_exactly_one_true(a, b, expected):
    assert Constraint(0, 1, "exactly_one_true").violated((a, b)) is expected


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [(TRUE, TRUE, False), (TRUE, FALSE, True), (FALSE, TRUE, True), (FALSE, FALSE, False), (2, 2, False), (1, 2, True)],
)
def test_equal(a, b, expected):
    assert Constraint(0, 1, "equal").violated((a, b)) is expected


@pytest.mark.parametrize("kind", ["not_both_true", "exactly_one_true", "equal"])
@pytest.mark.parametrize("pair", [(None, None), (None, TRUE), (TRUE, None), (None, FALSE), (FALSE, None)])
def test_unlabelled_member_never_violates(kind, pair):
    assert Constraint(0, 1, kind).violated(pair) is False


def test_constraint_reads_its_own_indices():
    labels = (TRUE, None, FALSE, TRUE)
    assert Constraint(0, 3, "not_both_true").violated(labels)
    assert not Constraint(0, 2, "not_both_true").violated(labels)
    assert Constraint(2, 3, "equal").violated(labels)
    assert not Constraint(1, 3, "equal").violated(labels)


def test_violations_lists_exactly_the_violated_constraints():
    constraints = [
        Constraint(0, 1, "not_both_true"),  # T,T -> violated
        Constraint(0, 2, "equal"),  # T,F -> violated
        Constraint(1, 2, "exactly_one_true"),  # T,F -> fine
        Constraint(2, 3, "equal"),  # F,None -> fine
        Constraint(3, 4, "exactly_one_true"),  # None,F -> fine
    ]
    labels = (TRUE, TRUE, FALSE, None, FALSE)
    assert violations(labels, constraints) == [constraints[0], constraints[1]]
    assert violations(labels, []) == []
    assert violations((None,) * 5, constraints) == []


# --------------------------------------------------------------------------- predictability


def test_mean_logodds_by_hand():
    ev = _ev((0.8, 0.2), (0.3, 0.7), (0.6, 0.4))
    labels = (TRUE, TRUE, FALSE)
    expected = (math.log(0.8 / 0.2) + math.log(0.3 / 0.7) + math.log(0.4 / 0.6)) / 3
    assert predictability(labels, ev, "mean_logodds") == pytest.approx(expected, rel=1e-12)


def test_sum_logprob_by_hand():
    ev = _ev((0.8, 0.2), (0.3, 0.7), (0.6, 0.4))
    labels = (TRUE, TRUE, FALSE)
    expected = math.log(0.8) + math.log(0.3) + math.log(0.4)
    assert predictability(labels, ev, "sum_logprob") == pytest.approx(expected, rel=1e-12)


def test_predictability_skips_unlabelled_examples():
    ev = _ev((0.8, 0.2), (0.01, 0.99), (0.6, 0.4))
    labels = (TRUE, None, FALSE)
    assert predictability(labels, ev, "mean_logodds") == pytest.approx(
        (math.log(4.0) + math.log(0.4 / 0.6)) / 2, rel=1e-12
    )
    assert predictability(labels, ev, "sum_logprob") == pytest.approx(math.log(0.8) + math.log(0.4), rel=1e-12)


def test_mean_logodds_three_labels_is_log_p_minus_log_rest():
    ev = _ev((0.5, 0.3, 0.2), (0.1, 0.1, 0.8))
    labels = (1, 2)
    expected = (math.log(0.3 / 0.7) + math.log(0.8 / 0.2)) / 2
    assert predictability(labels, ev, "mean_logodds") == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("objective", ["mean_logodds", "sum_logprob"])
def test_predictability_of_empty_labelling_is_zero(objective):
    ev = _ev((0.8, 0.2), (0.3, 0.7))
    assert predictability((None, None), ev, objective) == 0.0
    assert predictability((), Evaluation(()), objective) == 0.0


def test_mean_logodds_is_finite_for_a_certain_label():
    ev = Evaluation(((0.0, -math.inf),))
    value = predictability((TRUE,), ev, "mean_logodds")
    assert math.isfinite(value) and value > 100


def test_mean_logodds_is_antisymmetric_in_binary_tasks():
    ev = _ev((0.9, 0.1), (0.25, 0.75))
    assert predictability((TRUE, TRUE), ev, "mean_logodds") == pytest.approx(
        -predictability((FALSE, FALSE), ev, "mean_logodds"), rel=1e-12
    )


# --------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("flips", [0, 1, 2, 5, 10, 100])
def test_log_flips_schedule(flips):
    p = params(schedule="log_flips", t0=10.0, t_min=0.01)
    expected = max(0.01, 10.0 / (1 + 2 * math.log(1 + flips)))
    assert temperature(p, iteration=999, flips=flips) == pytest.approx(expected, rel=1e-12)


def test_log_flips_ignores_iteration():
    p = params(schedule="log_flips")
    assert temperature(p, 1, 3) == temperature(p, 1000, 3)
    assert temperature(p, 5, 0) == p.t0


@pytest.mark.parametrize("iteration", [1, 2, 3, 10, 100, 3000])
def test_paper_schedule(iteration):
    p = params(schedule="paper", t0=10.0, t_min=0.01, beta=0.99)
    expected = max(0.01, 10.0 / (1 + 0.99 * math.log(iteration)))
    assert temperature(p, iteration, flips=0) == pytest.approx(expected, rel=1e-12)


def test_paper_schedule_ignores_flips_and_starts_at_t0():
    p = params(schedule="paper", beta=2.0)
    assert temperature(p, 7, 0) == temperature(p, 7, 50)
    assert temperature(p, 1, 0) == p.t0
    assert temperature(p, 0, 0) == p.t0  # iteration 0 (the report before the loop) is well defined


@pytest.mark.parametrize("schedule", ["log_flips", "paper"])
def test_temperature_floor(schedule):
    p = params(schedule=schedule, t0=1.0, t_min=0.5, beta=5.0)
    assert temperature(p, 10**9, 10**9) == 0.5
    temps = [temperature(p, n, n) for n in range(1, 200)]
    assert all(t >= 0.5 for t in temps)
    assert temps == sorted(temps, reverse=True)  # non-increasing


# --------------------------------------------------------------------------- run_search


@pytest.mark.parametrize("seed", range(5))
def test_recovers_hidden_labelling(seed):
    scorer = ContextScorer(TRUTH12)
    problem = Problem(len(TRUTH12), 2)
    result = run_search(problem, scorer, params(seed=seed, iterations=400))
    assert result.labels == TRUTH12
    assert result.converged
    assert result.inconsistent == 0
    assert result.predictability == pytest.approx(3.5)  # bias + strength, every example read correctly
    assert result.utility == pytest.approx(30.0 * 3.5)
    assert result.evaluations == scorer.calls


def test_recovers_hidden_labelling_three_labels():
    truth = (0, 1, 2, 2, 1, 0, 0, 2, 1, 1, 0, 2)
    scorer = ContextScorer(truth, num_labels=3)
    result = run_search(Problem(len(truth), 3), scorer, params(seed=3, iterations=600, initial_labels=6))
    assert result.labels == truth
    assert result.converged


def test_same_seed_same_result_and_trajectory():
    def run(seed):
        steps: list[Step] = []
        result = run_search(Problem(12, 2), ContextScorer(TRUTH12), params(seed=seed, iterations=200), steps.append)
        return result, steps

    a, steps_a = run(7)
    b, steps_b = run(7)
    assert a == b
    assert steps_a == steps_b


def test_different_seeds_can_take_different_paths():
    trajectories = set()
    initial = set()
    for seed in range(8):
        steps: list[Step] = []
        run_search(Problem(12, 2), ContextScorer(TRUTH12), params(seed=seed, iterations=200), steps.append)
        trajectories.add(tuple(s.labels for s in steps))
        initial.add(steps[0].labels)
    assert len(trajectories) > 1
    assert len(initial) > 1


@pytest.mark.parametrize(
    ("n", "num_labels", "k", "expected"),
    [(12, 2, 8, [4, 4]), (12, 2, 7, [4, 3]), (20, 3, 7, [3, 2, 2]), (5, 2, 8, [3, 2]), (30, 4, 8, [2, 2, 2, 2])],
)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_initial_labels_are_balanced(n, num_labels, k, expected, seed):
    probs = [[1.0 / num_labels] * num_labels for _ in range(n)]
    result = run_search(
        Problem(n, num_labels), StaticScorer(probs), params(seed=seed, iterations=0, initial_labels=k)
    )
    counts = Counter(y for y in result.labels if y is not None)
    assert sorted(counts.values(), reverse=True) == expected
    assert sum(y is not None for y in result.labels) == min(k, n)
    assert result.iterations == 0 and result.proposals == 0 and result.evaluations == 1


def test_initial_labels_vary_with_seed():
    firsts = {
        run_search(Problem(12, 2), StaticScorer([[0.5, 0.5]] * 12), params(seed=s, iterations=0)).labels
        for s in range(6)
    }
    assert len(firsts) > 1


def _mutex_problem(n_pairs: int, kind: str) -> Problem:
    return Problem(2 * n_pairs, 2, tuple(Constraint(2 * p, 2 * p + 1, kind) for p in range(n_pairs)))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(
    ("kind", "probs"),
    [
        # The model prefers True for everything, but pairs may not both be true.
        ("not_both_true", [0.9, 0.1]),
        ("exactly_one_true", [0.9, 0.1]),
        # The model prefers False for everything, but exactly one of each pair must be true.
        ("exactly_one_true", [0.1, 0.9]),
    ],
)
def test_consistency_fix_resolves_contradictions(seed, kind, probs):
    n_pairs = 6
    problem = _mutex_problem(n_pairs, kind)
    preferred = (TRUE if probs[0] > probs[1] else FALSE,) * problem.n
    assert violations(preferred, problem.constraints)  # the model's favourite labelling is inconsistent
    steps: list[Step] = []
    result = run_search(
        problem, StaticScorer([probs] * problem.n), params(seed=seed, alpha=0.05, iterations=300), steps.append
    )
    assert result.inconsistent == 0
    assert violations(result.labels, problem.constraints) == []
    assert all(s.inconsistent == 0 for s in steps)


@pytest.mark.parametrize("seed", range(4))
def test_consistency_fix_resolves_implications(seed):
    # Examples 2p and 2p+1 must agree, but the model reads them oppositely.
    n_pairs = 5
    problem = _mutex_problem(n_pairs, "equal")
    probs = [[0.85, 0.15], [0.2, 0.8]] * n_pairs
    result = run_search(problem, StaticScorer(probs), params(seed=seed, alpha=0.05, iterations=300))
    assert result.inconsistent == 0
    assert violations(result.labels, problem.constraints) == []


@pytest.mark.parametrize("seed", range(6))
def test_consistency_fix_costs_two_evaluations_per_violated_pair(seed):
    problem = _mutex_problem(4, "equal")
    probs = [[0.5, 0.5]] * problem.n

    def run(fix_rounds):
        scorer = StaticScorer(probs)
        cfg = params(seed=seed, iterations=0, initial_labels=problem.n, alpha=1.0, fix_rounds=fix_rounds)
        return run_search(problem, scorer, cfg), scorer

    unfixed, _ = run(0)  # fix_rounds=0 draws nothing from the rng: these are the initial labels
    bad = len(violations(unfixed.labels, problem.constraints))
    assert unfixed.inconsistent == bad
    fixed, scorer = run(10)
    assert fixed.inconsistent == 0
    assert fixed.evaluations == scorer.calls == 1 + 2 * bad
    # Only violated pairs are touched.
    for c in problem.constraints:
        if not c.violated(unfixed.labels):
            assert (fixed.labels[c.i], fixed.labels[c.j]) == (unfixed.labels[c.i], unfixed.labels[c.j])


def test_consistency_fix_keeps_inconsistency_when_predictability_outweighs_it():
    # U trades the penalty against alpha * P: a very confident model and a large alpha keep both true.
    problem = Problem(2, 2, (Constraint(0, 1, "not_both_true"),))
    probs = [[0.999, 0.001], [0.999, 0.001]]
    result = run_search(problem, StaticScorer(probs), params(seed=0, alpha=100.0, iterations=50, initial_labels=2))
    assert result.labels == (TRUE, TRUE)
    assert result.inconsistent == 1
    assert result.utility == pytest.approx(100.0 * math.log(999) - 1)


def test_consistency_fix_picks_the_better_option():
    # Pair must be equal; the model is sure of example 0 being true, unsure of example 1.
    problem = Problem(2, 2, (Constraint(0, 1, "equal"),))
    probs = [[0.95, 0.05], [0.45, 0.55]]
    for seed in range(6):
        result = run_search(
            problem, StaticScorer(probs), params(seed=seed, alpha=1.0, iterations=0, initial_labels=2)
        )
        assert result.labels == (TRUE, TRUE)


def test_converges_early_at_fixed_point_without_wasting_evaluations():
    scorer = ContextScorer(TRUTH12)
    result = run_search(Problem(12, 2), scorer, params(seed=1, iterations=3000))
    assert result.converged
    assert result.iterations < 3000
    assert result.evaluations == scorer.calls
    # Each evaluation is the initial state or a proposal (no constraints, so no fix options).
    assert scorer.calls == 1 + result.proposals
    assert result.proposals <= result.iterations


def test_proposal_equal_to_current_label_costs_no_evaluation():
    # Both examples end up True (alpha makes the violation worth it) and the model agrees with
    # every label, yet the state is inconsistent, so it is not a fixed point and the loop runs on.
    # Every later pick proposes the label already there: no evaluation may be spent.
    problem = Problem(2, 2, (Constraint(0, 1, "not_both_true"),))
    scorer = StaticScorer([[0.9, 0.1], [0.9, 0.1]])
    steps: list[Step] = []
    result = run_search(
        problem, scorer, params(seed=0, alpha=100.0, fix_rounds=0, initial_labels=2, iterations=500), steps.append
    )
    assert result.labels == (TRUE, TRUE)
    assert not result.converged
    assert result.iterations == 500
    assert result.proposals == 1 and result.accepted == 1
    assert scorer.calls == result.evaluations == 2
    assert len(steps) == 501


def test_no_evaluation_after_convergence_even_with_huge_budget():
    scorer = ContextScorer(TRUTH12)
    result = run_search(Problem(12, 2), scorer, params(seed=4, iterations=10**7))
    assert result.converged
    assert scorer.calls < 200


def test_zero_iterations():
    scorer = ContextScorer(TRUTH12)
    steps: list[Step] = []
    result = run_search(Problem(12, 2), scorer, params(seed=0, iterations=0), steps.append)
    assert result.iterations == 0 and not result.converged
    assert scorer.calls == 1
    assert len(steps) == 1 and steps[0].iteration == 0


class _FixedDraw(random.Random):
    """A seeded Random whose uniform draws (the acceptance test) return a set value."""

    draw = 0.5
    draws: list[float] = []

    def random(self):  # noqa: A003 - overriding random.Random.random
        type(self).draws.append(self.draw)
        return self.draw

    # Keep integer draws (sample, shuffle, randrange) on the seeded bit stream: a subclass that
    # overrides only random() would otherwise make them use random() too.
    def getrandbits(self, k):
        return super().getrandbits(k)


def _worse_move_setup():
    # One example starts True, the other False; the model prefers True for both, but both True
    # violates the constraint and alpha is too small to pay for it: moving the False one to True
    # is a worse move, with dU = 0.5 * ln 4 - 1 whichever example it is.
    problem = Problem(2, 2, (Constraint(0, 1, "not_both_true"),))
    probs = [[0.8, 0.2], [0.8, 0.2]]
    T = 2.0
    cfg = params(alpha=0.5, fix_rounds=0, initial_labels=2, iterations=1, t0=T, t_min=T)
    ev = _ev(*probs)
    return problem, probs, cfg, ev, T


@pytest.mark.parametrize("seed", range(30))
def test_worse_state_accepted_exactly_when_draw_below_exp_du_over_t(monkeypatch, seed):
    problem, probs, cfg, ev, T = _worse_move_setup()
    cfg = dataclasses.replace(cfg, seed=seed)
    monkeypatch.setattr(search_module, "random", types.SimpleNamespace(Random=_FixedDraw))
    # Find the initial labels, and whether the one pick proposes a change.
    _FixedDraw.draws = []
    _FixedDraw.draw = 0.0
    steps: list[Step] = []
    first = run_search(problem, StaticScorer(probs), cfg, steps.append)
    start = steps[0].labels
    assert sorted(start) == [TRUE, FALSE]
    if first.proposals == 0:
        assert first.labels == start and _FixedDraw.draws == []
        return  # this seed picked the True example, whose label already matches its argmax
    # The only proposal moves the False example to True.
    u_before = cfg.alpha * predictability(start, ev, cfg.objective)
    u_after = cfg.alpha * predictability((TRUE, TRUE), ev, cfg.objective) - 1
    delta = u_after - u_before
    assert delta == pytest.approx(0.5 * math.log(4) - 1)
    threshold = math.exp(delta / T)
    for draw, accepted in [(threshold * 0.999, True), (threshold * 1.001, False), (0.0, True), (0.9999, False)]:
        _FixedDraw.draws = []
        _FixedDraw.draw = draw
        result = run_search(problem, StaticScorer(probs), cfg)
        assert result.proposals == 1
        assert _FixedDraw.draws == [draw]  # exactly one acceptance draw
        assert result.accepted == int(accepted)
        assert result.labels == ((TRUE, TRUE) if accepted else start)
        if accepted:
            assert result.utility == pytest.approx(u_after)
            assert result.inconsistent == 1


def test_better_state_accepted_without_a_draw(monkeypatch):
    problem = Problem(2, 2)
    probs = [[0.9, 0.1], [0.7, 0.3]]
    monkeypatch.setattr(search_module, "random", types.SimpleNamespace(Random=_FixedDraw))
    for seed in range(10):
        _FixedDraw.draws = []
        _FixedDraw.draw = 0.999999  # would reject anything that needed luck
        result = run_search(problem, StaticScorer(probs), params(seed=seed, initial_labels=2, iterations=50))
        assert result.labels == (TRUE, TRUE)
        assert result.converged
        assert _FixedDraw.draws == []


def test_worse_state_acceptance_rate_matches_exp_du_over_t():
    problem, probs, cfg, ev, T = _worse_move_setup()
    delta = cfg.alpha * (
        predictability((TRUE, TRUE), ev, cfg.objective) - predictability((TRUE, FALSE), ev, cfg.objective)
    ) - 1
    assert delta < 0
    # Runs whose one pick hit the example already True propose nothing; count the others.
    proposed = accepted = 0
    for seed in range(2000):
        result = run_search(problem, StaticScorer(probs), dataclasses.replace(cfg, seed=seed))
        if result.proposals == 0:
            continue
        proposed += 1
        accepted += result.accepted
    expected = math.exp(delta / T)
    assert proposed > 400
    rate = accepted / proposed
    sd = math.sqrt(expected * (1 - expected) / proposed)
    assert abs(rate - expected) < 5 * sd


def test_zero_temperature_is_greedy_not_a_crash():
    problem = Problem(2, 2, (Constraint(0, 1, "not_both_true"),))
    probs = [[0.9, 0.1], [0.9, 0.1]]
    result = run_search(
        problem, StaticScorer(probs),
        params(seed=0, alpha=0.01, fix_rounds=0, initial_labels=2, iterations=20, t0=0.0, t_min=0.0),
    )
    assert result.inconsistent == 0  # greedy: a worse move is never taken


def test_on_step_values():
    steps: list[Step] = []
    cfg = params(seed=2, iterations=300)
    result = run_search(Problem(12, 2), ContextScorer(TRUTH12), cfg, steps.append)
    assert steps, "on_step never called"
    assert [s.iteration for s in steps] == list(range(len(steps)))
    assert steps[0].iteration == 0
    assert steps[-1].iteration == result.iterations
    prev_proposals = prev_accepted = 0
    for s in steps:
        assert s.iterations == cfg.iterations
        assert s.n == 12
        assert len(s.labels) == 12
        assert s.labelled == sum(y is not None for y in s.labels) == sum(s.label_counts)
        assert list(s.label_counts) == [sum(y == k for y in s.labels) for k in range(2)]
        assert cfg.t_min <= s.temperature <= cfg.t0
        assert s.proposals >= prev_proposals and s.accepted >= prev_accepted
        assert s.accepted <= s.proposals
        assert s.utility == pytest.approx(cfg.alpha * s.predictability - s.inconsistent)
        prev_proposals, prev_accepted = s.proposals, s.accepted
    assert steps[0].labelled == cfg.initial_labels
    assert steps[0].temperature == cfg.t0
    last = steps[-1]
    assert last.labels == result.labels
    assert last.utility == result.utility
    assert last.proposals == result.proposals and last.accepted == result.accepted
    assert last.labelled == 12


def test_sum_logprob_objective_runs_and_is_consistent():
    steps: list[Step] = []
    cfg = params(seed=0, iterations=200, objective="sum_logprob")
    result = run_search(Problem(12, 2), ContextScorer(TRUTH12), cfg, steps.append)
    assert result.predictability == pytest.approx(predictability(result.labels, result.evaluation, "sum_logprob"))
    assert result.predictability <= 0


def test_group_weight_favours_unlabelled_members_of_active_groups():
    # Examples 0-1 share group "g" (0 labelled); 2-9 are ungrouped and unlabelled.
    problem = Problem(10, 2, (), ("g", "g") + (None,) * 8)
    s = search_module._Search(problem, StaticScorer([[0.5, 0.5]] * 10), params(group_weight=100.0), random.Random(0))
    labels = (TRUE,) + (None,) * 9
    picks = Counter(s.pick(labels) for _ in range(2000))
    # weight 100 for example 1, 1 for the other nine: about 100/109 of picks
    assert picks[1] / 2000 > 0.85
    s1 = search_module._Search(problem, StaticScorer([[0.5, 0.5]] * 10), params(group_weight=1.0), random.Random(0))
    uniform = Counter(s1.pick(labels) for _ in range(2000))
    assert uniform[1] / 2000 < 0.2


def test_resume_from_any_saved_state_gives_the_same_result():
    cfg = params(seed=5, iterations=400)
    problem = Problem(12, 2)
    states: list = []
    full = run_search(problem, ContextScorer(TRUTH12), cfg, lambda s: s.state and states.append(s.state))
    assert len(states) > 3
    for saved in (states[0], states[len(states) // 2], states[-1]):
        resumed = run_search(problem, ContextScorer(TRUTH12), cfg, resume=saved)
        assert resumed.labels == full.labels
        assert resumed.iterations == full.iterations
        assert (resumed.proposals, resumed.accepted) == (full.proposals, full.accepted)


def test_final_quench_ends_at_a_local_optimum_and_never_lowers_u():
    problem = Problem(12, 2)
    for seed in range(4):
        # Few iterations at high temperature: the annealed state is usually not yet optimal.
        plain = run_search(problem, ContextScorer(TRUTH12), params(seed=seed, iterations=15))
        quenched = run_search(problem, ContextScorer(TRUTH12), params(seed=seed, iterations=15, final_quench=True))
        assert quenched.utility >= plain.utility
        scorer = ContextScorer(TRUTH12)
        final = scorer.evaluate(quenched.labels)
        for i in range(problem.n):
            proposal = max(range(2), key=lambda k: final.scores[i][k])
            if quenched.labels[i] == proposal:
                continue
            changed = list(quenched.labels)
            changed[i] = proposal
            u = SearchConfig().alpha * predictability(tuple(changed), scorer.evaluate(tuple(changed)), "mean_logodds")
            assert u <= quenched.utility + 1e-9, f"seed {seed}: example {i} could still raise U"
