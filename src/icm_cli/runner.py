"""One labelling run: task -> batches -> an ICM search per batch -> one label per row, and a summary."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from .backends.base import Backend
from .config import Config, SearchConfig
from .data import Dataset
from .scoring import CoherenceScorer, PromptSet
from .search import SearchResult, SearchState, Step, run_search
from .tasks import Batch, RowLabel, Task, build_task, make_batches, row_labels


@dataclass(frozen=True)
class Progress:
    """What a progress view shows: the search's step, plus where in the run it is."""

    batch: int
    batches: int
    step: Step
    tokens_computed: int
    elapsed: float
    monitor_agreement: Optional[float]


@dataclass(frozen=True)
class BatchOutcome:
    """A finished batch: what a checkpoint keeps so a resumed run need not redo it."""

    labels: tuple[Optional[int], ...]
    scores: tuple[tuple[float, ...], ...]
    iterations: int
    proposals: int
    accepted: int
    evaluations: int
    utility: float
    inconsistent: int
    converged: bool

    @staticmethod
    def of(result: SearchResult) -> "BatchOutcome":
        return BatchOutcome(
            result.labels, result.evaluation.scores, result.iterations, result.proposals,
            result.accepted, result.evaluations, result.utility, result.inconsistent, result.converged,
        )


@dataclass(frozen=True)
class RunState:
    """Where a run is: finished batches, and the search state of the one in progress."""

    done: tuple[BatchOutcome, ...] = ()
    search: Optional[SearchState] = None


@dataclass
class RunSummary:
    config_hash: str
    data_hash: str
    model: str
    backend: str
    seed: int
    rows: int
    examples: int
    batches: int
    iterations: int = 0
    proposals: int = 0
    accepted: int = 0
    acceptance_rate: float = 0.0
    evaluations: int = 0
    final_utility: list[float] = field(default_factory=list)
    inconsistencies_left: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    unsearched_rows: int = 0
    tokens_scored: int = 0
    tokens_requested: int = 0
    prefix_reuse: float = 0.0
    wall_time_s: float = 0.0
    converged_batches: int = 0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def label_dataset(
    dataset: Dataset,
    config: Config,
    backend: Backend,
    on_progress: Optional[Callable[[Progress], None]] = None,
    monitor: Optional[list[Optional[str]]] = None,
    resume: Optional[RunState] = None,
    save: Optional[Callable[[RunState], None]] = None,
) -> tuple[list[RowLabel], RunSummary]:
    """Label every row. `monitor` holds normalised gold per row for display only.

    `save` receives the run's state whenever the search changed it; passing that state back
    as `resume` continues the run to the same labels an uninterrupted run would give.
    """
    start = time.monotonic()
    task: Task = build_task(dataset, config.task)
    batches = make_batches(task, backend.count_tokens, config.batch.max_tokens, config.search.seed)
    summary = RunSummary(
        config.digest(), dataset.digest, backend.model_name, backend.name, config.search.seed,
        len(dataset.rows), len(task.examples), len(batches),
    )
    tokens_before = backend.stats.tokens_computed
    requested_before = backend.stats.tokens_requested
    labels: dict[int, Optional[int]] = {}
    scores: dict[int, tuple[float, ...]] = {}
    done = list(resume.done) if resume else []
    for b, batch in enumerate(batches):
        if b < len(done):
            outcome = done[b]
        else:
            outcome = _run_batch(
                b, batches, task, config, backend, monitor, on_progress, start, tokens_before,
                resume.search if resume and b == len(resume.done) else None,
                (lambda state: save(RunState(tuple(done), state))) if save else None,
            )
            done.append(outcome)
            if save:
                save(RunState(tuple(done), None))
        for local, global_index in enumerate(batch.indices):
            labels[global_index] = outcome.labels[local]
            scores[global_index] = outcome.scores[local]
        summary.iterations += outcome.iterations
        summary.proposals += outcome.proposals
        summary.accepted += outcome.accepted
        summary.evaluations += outcome.evaluations
        summary.final_utility.append(round(outcome.utility, 4))
        summary.inconsistencies_left += outcome.inconsistent
        summary.converged_batches += int(outcome.converged)
    rows = row_labels(task, len(dataset.rows), labels, scores)
    for r in rows:
        summary.label_counts[r.label] = summary.label_counts.get(r.label, 0) + 1
    summary.unsearched_rows = sum(not r.searched for r in rows)
    summary.acceptance_rate = round(summary.accepted / summary.proposals, 4) if summary.proposals else 0.0
    summary.tokens_scored = backend.stats.tokens_computed - tokens_before
    summary.tokens_requested = backend.stats.tokens_requested - requested_before
    if summary.tokens_requested:
        summary.prefix_reuse = round(1 - summary.tokens_scored / summary.tokens_requested, 4)
    summary.wall_time_s = round(time.monotonic() - start, 2)
    return rows, summary


def batch_setup(task: Task, config: Config, batch: Batch, b: int) -> tuple[PromptSet, SearchConfig]:
    """The prompts and search parameters of batch number b (shared with the dry run)."""
    prompts = PromptSet(
        tuple(task.examples[i].query for i in batch.indices), task.label_words,
        config.task.label_prefix, config.task.separator, task.calibrate,
    )
    # Each batch is an independent run; a distinct seed per batch keeps them from starting
    # identically while staying a pure function of the configured seed.
    return prompts, dataclasses.replace(config.search, seed=config.search.seed + b)


def _run_batch(b, batches, task, config, backend, monitor, on_progress, start, tokens_before, resume, save) -> BatchOutcome:
    batch = batches[b]
    prompts, params = batch_setup(task, config, batch, b)
    gold = _batch_gold(task, batch.indices, monitor)

    def observe(step: Step) -> None:
        if save is not None and step.state is not None:
            save(step.state)
        if on_progress is not None:
            on_progress(Progress(
                b, len(batches), step, backend.stats.tokens_computed - tokens_before,
                time.monotonic() - start, _agreement(step, gold, task.label_words),
            ))

    return BatchOutcome.of(run_search(batch.problem, CoherenceScorer(prompts, backend), params, observe, resume))


def _batch_gold(task: Task, indices: tuple[int, ...], monitor: Optional[list[Optional[str]]]) -> Optional[list[Optional[str]]]:
    if monitor is None:
        return None
    out = []
    for i in indices:
        ex = task.examples[i]
        gold = monitor[ex.row]
        if ex.swapped and gold is not None:
            # The swapped order is true exactly when the original is false.
            gold = {"true": "false", "false": "true"}.get(gold, gold)
        out.append(gold)
    return out


def _agreement(step: Step, gold: Optional[list[Optional[str]]], words: tuple[str, ...]) -> Optional[float]:
    if gold is None:
        return None
    hits = total = 0
    names = [_norm(w) for w in words]
    for y, g in zip(step.labels, gold):
        if y is None or g is None:
            continue
        total += 1
        hits += names[y] == g
    return hits / total if total else None


def _norm(word: str) -> str:
    from .metrics import normalize_label

    return normalize_label(word)
