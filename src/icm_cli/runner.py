"""One labelling run: the cores are labelled by the search, every other row by transfer.

Phase 1 (search): each core (a seeded sample of the data sized by `core.max_tokens`) is
labelled by `search.method`. Phase 2 (transfer): every example outside the cores, and any core
example the search left unlabelled, is labelled with the cores' labels as many-shot context,
in chunks. Rows are handed out in input order as soon as they are final. A run's cost thus
grows with the data only through transfer: one read of each row after a shared prefix.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Protocol

from .backends.base import Backend
from .config import Config, SearchConfig
from .core_labels import CoreOutcome, label_core
from .cores import Core, RunPlan, demo_cost, plan_run
from .data import Dataset
from .scoring import PromptSet
from .search import SearchState, Step
from .tasks import RowLabel, Task, build_task, row_label
from .transfer import Transfer, TransferChunk, calibration_sample, chunks, demonstrations


@dataclass(frozen=True)
class Progress:
    """What a progress view shows."""

    phase: str  # "search" or "transfer"
    core: int
    cores: int
    step: Optional[Step]  # the search's last step (search phase)
    rows_done: int  # rows whose label is final
    rows: int
    transferred: int  # examples transferred so far
    to_transfer: int
    tokens_computed: int
    elapsed: float
    phase_elapsed: float
    eta: Optional[float]  # seconds left for the whole run
    monitor_agreement: Optional[float]


@dataclass(frozen=True)
class RunState:
    """Where a run is: labelled cores, the search state of the core in progress, the transfer
    calibration, and the finished transfer chunks."""

    done: tuple[CoreOutcome, ...] = ()
    search: Optional[SearchState] = None
    centres: Optional[tuple[tuple[float, ...], ...]] = None
    calibrated: bool = False  # centres are final (None then means "not calibrating")
    chunks: tuple[TransferChunk, ...] = ()


class Recorder(Protocol):
    """Where a run's progress is kept (the checkpoint)."""

    def save(self, state: RunState) -> None: ...

    def save_chunk(self, index: int, chunk: TransferChunk) -> None: ...


@dataclass
class RunSummary:
    config_hash: str
    data_hash: str
    model: str
    backend: str
    method: str
    seed: int
    rows: int
    examples: int
    cores: int
    core_rows: int = 0  # rows labelled by the core method (search)
    transfer_rows: int = 0  # rows labelled by transfer
    iterations: int = 0
    proposals: int = 0
    accepted: int = 0
    acceptance_rate: float = 0.0
    evaluations: int = 0
    final_utility: list[float] = field(default_factory=list)
    inconsistencies_left: int = 0
    converged_cores: int = 0
    label_counts: dict[str, int] = field(default_factory=dict)
    mean_agreement: Optional[float] = None  # transfer rows, several cores only
    tokens_scored: int = 0
    tokens_requested: int = 0
    prefix_reuse: float = 0.0
    tokens_search: int = 0
    tokens_transfer: int = 0
    search_s: float = 0.0
    transfer_s: float = 0.0
    wall_time_s: float = 0.0

    def to_json(self) -> dict:
        return dataclasses.asdict(self)


def core_setup(task: Task, config: Config, core: Core, c: int) -> tuple[PromptSet, SearchConfig]:
    """The prompts and search parameters of core number c (shared with the dry run)."""
    prompts = PromptSet(
        tuple(task.examples[i].query for i in core.indices), task.label_words,
        config.task.label_prefix, config.task.separator, task.calibrate,
    )
    # Cores are independent searches; a distinct seed per core keeps them from starting alike.
    return prompts, dataclasses.replace(config.search, seed=config.search.seed + c)


def plan(task: Task, config: Config, count_tokens: Callable[[str], int]) -> RunPlan:
    return plan_run(task, count_tokens, config.core, config.search.seed, config.search.method != "zero_shot")


class _Rows:
    """Example labels in, rows out: each row once all its examples are labelled, in input order."""

    def __init__(self, task: Task, n_rows: int, emit: Callable[[list[tuple[int, RowLabel]]], None]):
        self.task = task
        self.emit = emit
        self.members: list[list[int]] = [[] for _ in range(n_rows)]
        for i, ex in enumerate(task.examples):
            self.members[ex.row].append(i)
        self.labels: dict[int, int] = {}
        self.scores: dict[int, tuple[float, ...]] = {}
        self.source: dict[int, str] = {}
        self.agreement: dict[int, float] = {}
        self.rows: list[Optional[RowLabel]] = [None] * n_rows
        self.next = 0

    def add(self, i: int, label: int, scores: tuple[float, ...], source: str, agreement: Optional[float] = None) -> None:
        self.labels[i], self.scores[i], self.source[i] = label, scores, source
        if agreement is not None:
            self.agreement[i] = agreement

    def flush(self) -> None:
        out = []
        while self.next < len(self.rows):
            members = self.members[self.next]
            if not all(i in self.labels for i in members):
                break
            row = row_label(self.task, members, self.labels, self.scores, self.source, self.agreement)
            self.rows[self.next] = row
            out.append((self.next, row))
            self.next += 1
        if out:
            self.emit(out)


def label_dataset(
    dataset: Dataset,
    config: Config,
    backend: Backend,
    on_progress: Optional[Callable[[Progress], None]] = None,
    monitor: Optional[list[Optional[str]]] = None,
    resume: Optional[RunState] = None,
    recorder: Optional[Recorder] = None,
    on_rows: Optional[Callable[[list[tuple[int, RowLabel]]], None]] = None,
    core_labeller: Optional[CoreLabeller] = None,
) -> tuple[list[RowLabel], RunSummary]:
    """Label every row. `monitor` holds normalised gold per row, for display only.

    `recorder` receives the run's state whenever it changed; passing the last state back as
    `resume` continues the run to the labels an uninterrupted run gives. `on_rows` receives
    rows in input order as they become final.
    """
    run = _Run(dataset, config, backend, on_progress, monitor, recorder, on_rows)
    run.core_labeller = core_labeller
    return run.run(resume or RunState())


# (problem, prompts, backend, params, on_step, resume) -> outcome; `icm compare` passes its own
# to label cores with given (gold or random) labels.
CoreLabeller = Callable[..., CoreOutcome]


class _Run:
    core_labeller: Optional[CoreLabeller] = None

    def __init__(self, dataset, config, backend, on_progress, monitor, recorder, on_rows):
        self.config: Config = config
        self.backend: Backend = backend
        self.on_progress = on_progress
        self.monitor = monitor
        self.recorder: Optional[Recorder] = recorder
        self.start = time.monotonic()
        self.task = build_task(dataset, config.task)
        self.plan = plan(self.task, config, backend.count_tokens)
        self.rows = _Rows(self.task, len(dataset.rows), on_rows or (lambda _: None))
        self.tokens_before = backend.stats.tokens_computed
        self.requested_before = backend.stats.tokens_requested
        self.summary = RunSummary(
            config.digest(), dataset.digest, backend.model_name, backend.name, config.search.method,
            config.search.seed, len(dataset.rows), len(self.task.examples), len(self.plan.cores),
        )
        self.state = RunState()
        self.transferred = 0
        self.to_transfer = len(self.plan.targets)
        self.search_end: Optional[float] = None
        cost = demo_cost(self.task, backend.count_tokens)
        # What transfer will cost, for the ETA: each target after each core's prefix.
        self.transfer_tokens = max(1, len(self.plan.cores) or 1) * sum(cost(i) for i in self.plan.targets)

    # ---- the two phases -----------------------------------------------------------------

    def run(self, resume: RunState) -> tuple[list[RowLabel], RunSummary]:
        self.state = RunState(done=resume.done, search=resume.search)
        outcomes = [self._core(c, resume) for c in range(len(self.plan.cores))]
        self.search_end = time.monotonic()
        self.summary.tokens_search = self.backend.stats.tokens_computed - self.tokens_before
        self.summary.search_s = round(self.search_end - self.start, 2)
        self._transfer(outcomes, resume)
        return self._finish()

    def _core(self, c: int, resume: RunState) -> CoreOutcome:
        core = self.plan.cores[c]
        if c < len(resume.done):
            outcome = resume.done[c]
        else:
            prompts, params = core_setup(self.task, self.config, core, c)
            gold = self._gold(core.indices)
            search_resume = resume.search if c == len(resume.done) else None

            def observe(step: Step) -> None:
                if self.recorder is not None and step.state is not None:
                    self.state = dataclasses.replace(self.state, search=step.state)
                    self.recorder.save(self.state)
                self._report("search", c, step, _agreement(step, gold, self.task.label_words))

            if self.core_labeller is not None:
                outcome = self.core_labeller(core.problem, prompts, self.backend, params, observe, search_resume,
                                             indices=core.indices)
            else:
                outcome = label_core(core.problem, prompts, self.backend, params, observe, search_resume)
            self.state = RunState(done=self.state.done + (outcome,))
            if self.recorder is not None:
                self.recorder.save(self.state)
        s = self.summary
        s.iterations += outcome.iterations
        s.proposals += outcome.proposals
        s.accepted += outcome.accepted
        s.evaluations += outcome.evaluations
        s.final_utility.append(round(outcome.utility, 4))
        s.inconsistencies_left += outcome.inconsistent
        s.converged_cores += int(outcome.converged)
        for local, (i, y) in enumerate(zip(core.indices, outcome.row_labels())):
            if y is not None:
                self.rows.add(i, y, outcome.scores[local], "core")
        return outcome

    def _transfer(self, outcomes: list[CoreOutcome], resume: RunState) -> None:
        task, config = self.task, self.config
        contexts = []
        for c, (core, outcome) in enumerate(zip(self.plan.cores, outcomes)):
            prompts, _ = core_setup(task, config, core, c)
            contexts.append(demonstrations(prompts, outcome.labels, outcome.order))
        unlabelled = [i for core, o in zip(self.plan.cores, outcomes)
                      for local, i in enumerate(core.indices) if o.labels[local] is None]
        targets = sorted(self.plan.targets + tuple(unlabelled))
        self.to_transfer = len(targets)
        transfer = Transfer(task, contexts, self.backend, config.task.label_prefix, config.task.separator,
                            task.calibrate)
        if resume.calibrated:
            centres = [list(c) for c in resume.centres] if resume.centres is not None else None
        else:
            sample = calibration_sample(targets, config.transfer.calibration_size, config.search.seed)
            centres = transfer.centres(sample)
        self.state = dataclasses.replace(
            self.state, centres=tuple(tuple(c) for c in centres) if centres is not None else None, calibrated=True
        )
        if self.recorder is not None and targets:
            self.recorder.save(self.state)
        fixed = dict(self.rows.labels)
        planned = chunks(task, targets, config.transfer.chunk_size)
        self.rows.flush()
        for k, examples in enumerate(planned):
            if k < len(resume.chunks) and resume.chunks[k].examples == examples:
                chunk = resume.chunks[k]
            else:
                chunk = transfer.label(examples, centres, fixed)
                if self.recorder is not None:
                    self.recorder.save_chunk(k, chunk)
            for i, y, s, a in zip(chunk.examples, chunk.labels, chunk.scores, chunk.agreement):
                self.rows.add(i, y, s, "transfer", a if len(outcomes) > 1 else None)
            self.transferred += len(examples)
            self.rows.flush()
            self._report("transfer", len(outcomes), None, self._transfer_agreement())
        self.rows.flush()

    def _finish(self) -> tuple[list[RowLabel], RunSummary]:
        s = self.summary
        rows = [r for r in self.rows.rows if r is not None]
        for r in rows:
            s.label_counts[r.label] = s.label_counts.get(r.label, 0) + 1
        s.core_rows = sum(r.source == "core" for r in rows)
        s.transfer_rows = len(rows) - s.core_rows
        agreements = [r.agreement for r in rows if r.agreement is not None]
        s.mean_agreement = round(sum(agreements) / len(agreements), 4) if agreements else None
        s.acceptance_rate = round(s.accepted / s.proposals, 4) if s.proposals else 0.0
        s.tokens_scored = self.backend.stats.tokens_computed - self.tokens_before
        s.tokens_transfer = s.tokens_scored - s.tokens_search
        s.tokens_requested = self.backend.stats.tokens_requested - self.requested_before
        if s.tokens_requested:
            s.prefix_reuse = round(1 - s.tokens_scored / s.tokens_requested, 4)
        now = time.monotonic()
        s.transfer_s = round(now - (self.search_end or now), 2)
        s.wall_time_s = round(now - self.start, 2)
        return rows, s

    # ---- progress -------------------------------------------------------------------------

    def _report(self, phase: str, core: int, step: Optional[Step], agreement: Optional[float]) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        elapsed = now - self.start
        tokens = self.backend.stats.tokens_computed - self.tokens_before
        phase_elapsed = now - (self.search_end or self.start) if phase == "transfer" else elapsed
        self.on_progress(Progress(
            phase, core, len(self.plan.cores), step, self.rows.next, len(self.rows.rows), self.transferred,
            self.to_transfer, tokens, elapsed, phase_elapsed, self._eta(phase, core, step, tokens, elapsed), agreement,
        ))

    def _eta(self, phase: str, core: int, step: Optional[Step], tokens: int, elapsed: float) -> Optional[float]:
        rate = tokens / elapsed if elapsed > 0 and tokens > 0 else None
        left = self.to_transfer - self.transferred
        if phase == "transfer":
            spent = elapsed - ((self.search_end or self.start) - self.start)
            if self.transferred and spent > 0:
                return left * spent / self.transferred
            return self.transfer_tokens / rate if rate else None
        cores = len(self.plan.cores)
        done = (core + (step.iteration / step.iterations if step and step.iterations else 0.0)) / max(1, cores)
        if done < 0.02 or rate is None:
            return None
        return elapsed * (1 - done) / done + self.transfer_tokens / rate

    def _gold(self, indices: tuple[int, ...]) -> Optional[list[Optional[str]]]:
        if self.monitor is None:
            return None
        out = []
        for i in indices:
            ex = self.task.examples[i]
            gold = self.monitor[ex.row]
            if ex.swapped and gold is not None:
                # The swapped order is true exactly when the original is false.
                gold = {"true": "false", "false": "true"}.get(gold, gold)
            out.append(gold)
        return out

    def _transfer_agreement(self) -> Optional[float]:
        if self.monitor is None:
            return None
        hits = total = 0
        for r, row in enumerate(self.rows.rows):
            if row is None or row.source != "transfer" or self.monitor[r] is None:
                continue
            total += 1
            hits += _norm(row.label) == self.monitor[r]
        return hits / total if total else None


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
