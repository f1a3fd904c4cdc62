"""Labelling one core: ICM's search, or the simpler methods it is compared with.

- icm: Algorithm 1 (search.run_search), from random seed labels or from the calibrated
  zero-shot labels (`search.init`).
- bootstrap: start from the calibrated zero-shot labels; each round scores every core example
  with all the others (with their current labels) as context, exactly as a U evaluation does,
  and takes the consistent labels those scores prefer; stops when a round changes nothing.
  Cheap (one evaluation a round) and, in published comparisons, close to ICM.
Examples a person labelled (`Problem.fixed`) keep their labels in every method, and every
consistency repair holds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from ..backends.base import Backend
from ..foundation.config import SearchConfig
from .consistency import repair
from .scoring import CoherenceScorer, PromptSet, log_softmax, centred_readings
from .search import Evaluation, Labels, Problem, SearchResult, SearchState, Step, run_search, utility, violations


@dataclass(frozen=True)
class CoreOutcome:
    """A labelled core: what a checkpoint keeps so a resumed run need not redo it."""

    labels: Labels
    order: tuple[int, ...]  # labelling order; transfer prompts follow it
    scores: tuple[tuple[float, ...], ...]
    iterations: int
    proposals: int
    accepted: int
    evaluations: int
    utility: float
    inconsistent: int
    converged: bool
    # Given demonstration labels (golden or random, for comparisons only): the core's rows are
    # then reported with these leave-one-out predictions, not with the labels they were given.
    predictions: Optional[Labels] = None

    def row_labels(self) -> Labels:
        return self.predictions if self.predictions is not None else self.labels

    @staticmethod
    def of(result: SearchResult) -> "CoreOutcome":
        return CoreOutcome(
            result.labels, result.order, result.evaluation.scores, result.iterations, result.proposals,
            result.accepted, result.evaluations, result.utility, result.inconsistent, result.converged,
        )


def zero_shot_scores(problem: Problem, prompts: PromptSet, backend: Backend) -> list[list[float]]:
    """Each example read alone; for classification centred on the core (batch calibration)."""
    evaluation = CoherenceScorer(prompts, backend).evaluate(tuple(None for _ in range(problem.n)))
    scores = [list(s) for s in evaluation.scores]
    return centred_readings(scores, True) if prompts.calibrate else scores


def zero_shot_labels(problem: Problem, prompts: PromptSet, backend: Backend,
                     raw: Optional[Sequence[Sequence[float]]] = None) -> Labels:
    """`raw`: the examples' raw zero-shot scores where the caller read them already."""
    scores = zero_shot_scores(problem, prompts, backend) if raw is None else centred_readings(raw, prompts.calibrate)
    return tuple(repair(scores, problem.consistency, problem.held_labels()))


def with_zero_shot(outcome: CoreOutcome, zero_shot: Sequence[Sequence[float]],
                   problem: Problem) -> tuple[Labels, tuple[tuple[float, ...], ...]]:
    """The core's final row labels: each labelled example's leave-one-out reading (the search's
    last evaluation) averaged with its zero-shot reading, consistency repaired. Examples the
    search left unlabelled stay so (the transfer labels them). Fixed examples keep their labels."""
    combined = [tuple(log_softmax([(a + b) / 2 for a, b in zip(s, z)])) for s, z in zip(outcome.scores, zero_shot)]
    return _repaired(outcome, combined, problem)


def zero_shot_alone(outcome: CoreOutcome, zero_shot: Sequence[Sequence[float]],
                    problem: Problem) -> tuple[Labels, tuple[tuple[float, ...], ...]]:
    """The core's final row labels from the zero-shot reading alone (consistency repaired), for
    the examples the search labelled; the others stay unlabelled. Fixed examples keep theirs."""
    return _repaired(outcome, [tuple(log_softmax(list(z))) for z in zero_shot], problem)


def _repaired(outcome: CoreOutcome, readings: list[tuple[float, ...]],
              problem: Problem) -> tuple[Labels, tuple[tuple[float, ...], ...]]:
    labels = repair(readings, problem.consistency, problem.held_labels())
    return tuple(y if x is not None else None for x, y in zip(outcome.labels, labels)), tuple(readings)


def label_core(
    problem: Problem,
    prompts: PromptSet,
    backend: Backend,
    params: SearchConfig,
    on_step: Optional[Callable[[Step], None]] = None,
    resume: Optional[SearchState] = None,
    zero_shot: Optional[Callable[[], Sequence[Sequence[float]]]] = None,
) -> CoreOutcome:
    """`zero_shot`: the core's raw zero-shot scores, where a run reads them once for all its uses
    (the search's start, the zero-shot rule, the signal check); else read here."""
    scorer = CoherenceScorer(prompts, backend)
    if params.method == "bootstrap":
        return _bootstrap(problem, prompts, backend, scorer, params)
    start = None
    if params.init == "zero_shot" and resume is None:
        start = zero_shot_labels(problem, prompts, backend, zero_shot() if zero_shot else None)
    return CoreOutcome.of(run_search(problem, scorer, params, on_step, resume, start))


def given_labels(problem: Problem, prompts: PromptSet, backend: Backend, params: SearchConfig,
                 labels: Labels) -> CoreOutcome:
    """A core whose demonstration labels are given (gold: the many-shot ceiling; random: the
    few-shot baseline). Each core example is predicted from all the others with their given
    labels, the same leave-one-out prompts ICM scores."""
    scorer = CoherenceScorer(prompts, backend)
    order = tuple(range(problem.n))
    evaluation = scorer.evaluate(labels, order)
    predicted = tuple(repair(evaluation.scores, problem.consistency))
    u = utility(labels, evaluation, problem.constraints, params)
    return CoreOutcome(labels, order, evaluation.scores, 0, 0, 0, scorer.evaluations, u,
                       len(violations(labels, problem.constraints)), True, predicted)


def _bootstrap(problem: Problem, prompts: PromptSet, backend: Backend, scorer: CoherenceScorer,
               params: SearchConfig) -> CoreOutcome:
    labels = zero_shot_labels(problem, prompts, backend)
    order = tuple(range(problem.n))
    evaluation: Evaluation = scorer.evaluate(labels, order)
    rounds = changes = 0
    converged = False
    held = problem.held_labels()
    for rounds in range(1, params.rounds + 1):
        relabelled = tuple(repair(evaluation.scores, problem.consistency, held))
        if relabelled == labels:
            converged = True
            break
        changes += sum(a != b for a, b in zip(labels, relabelled))
        labels = relabelled
        evaluation = scorer.evaluate(labels, order)
    u = utility(labels, evaluation, problem.constraints, params)
    return CoreOutcome(labels, order, evaluation.scores, rounds, changes, changes, scorer.evaluations, u,
                       len(violations(labels, problem.constraints)), converged)
