"""One labelling run: the cores are labelled by the search, every other row by transfer.

Phase 1 (search): each core (a seeded sample of the data sized by `core.max_tokens`) is
labelled by `search.method`. Phase 2 (transfer): the run reads its rows again, a chunk at a
time; every example outside the cores, and any core example the search left unlabelled, is
labelled with the cores' labels as many-shot context. Rows are handed out in input order as
soon as they are final, and forgotten. A run's cost thus grows with the data only through
transfer: one read of each row after a shared prefix; its memory holds the cores, one chunk
and the row index (a few bytes a row).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterator, Optional

from ..backends.base import Backend
from ..foundation.config import Config, SearchConfig
from ..algorithm.core_labels import CoreOutcome, label_core
from ..algorithm.cores import Core, RunPlan, demo_cost, plan_run
from .row_emitter import Emitter, HeldLabels, Result, RowsOut, label_row
from ..data.row_index import seeded_sample
from .run_records import Progress, Recorder, RunInput, RunState, RunSummary
from .search_monitor import agreement, core_gold
from .signal_readings import core_zero_shot
from ..algorithm.scoring import PromptSet
from ..algorithm.search import Step, argmax
from ..algorithm.search_trace import CoreTrace
from ..algorithm.tasks import Example, TaskShape
from ..algorithm.transfer import ChunkRows, Transfer, TransferChunk, demonstrations, plan_chunks

__all__ = ["CoreLabeller", "Progress", "Recorder", "Run", "RunInput", "RunState", "RunSummary", "RowsOut", "core_setup",
           "label_dataset", "label_row", "plan"]

# Target examples whose tokens are counted to estimate the transfer's cost (for the ETA).
ESTIMATE_SAMPLE = 64


def core_setup(shape: TaskShape, config: Config, core: Core, c: int) -> tuple[PromptSet, SearchConfig]:
    """The prompts and search parameters of core number c (shared with the dry run)."""
    prompts = PromptSet(
        tuple(ex.query for ex in core.examples), shape.label_words,
        config.task.label_prefix, config.task.separator, shape.calibrate,
    )
    # Cores are independent searches; a distinct seed per core keeps them from starting alike.
    return prompts, dataclasses.replace(config.search, seed=config.search.seed + c)


def plan(run_input: RunInput, config: Config, count_tokens: Callable[[str], int],
         count: Optional[int] = None) -> RunPlan:
    searched = config.search.method != "zero_shot"
    return plan_run(run_input.index, run_input.shape, count_tokens, config.core, config.search.seed,
                    run_input.fixed.rows, count if searched else 0)


# (problem, prompts, backend, params, on_step, resume, ids=...) -> outcome; `icm compare`
# passes its own to label cores with given (gold or random) labels.
CoreLabeller = Callable[..., CoreOutcome]


@dataclasses.dataclass(frozen=True)
class RunHooks:
    """What a caller watches a run through or plugs into it; each is optional, and none changes
    the labels except core_labeller."""

    on_progress: Optional[Callable[[Progress], None]] = None
    monitor_field: Optional[str] = None  # a gold field shown as live agreement, for display only
    recorder: Optional[Recorder] = None  # receives the run's state whenever it changed
    on_rows: Optional[RowsOut] = None  # (row, input fields, label) in input order as rows become final
    core_labeller: Optional[CoreLabeller] = None  # `icm compare`: label the cores another way


def label_dataset(run_input: RunInput, config: Config, backend: Backend, hooks: RunHooks = RunHooks(),
                  resume: Optional[RunState] = None) -> RunSummary:
    """Label every row, watched through `hooks`. Passing the recorder's last state back as
    `resume` continues the run to the labels an uninterrupted run gives."""
    return Run(run_input, config, backend, hooks).run(resume or RunState())


class Run:
    """A run's phases, which `label_dataset` runs in turn; an engine that spreads the transfer
    over machines (ray_engine) runs the search and the calibration, then ships the rest."""

    def __init__(self, run_input: RunInput, config: Config, backend: Backend, hooks: RunHooks = RunHooks()):
        self.run_input = run_input
        self.index, self.shape = run_input.index, run_input.shape
        self.human = run_input.fixed
        self.config = config
        self.backend = backend
        self.on_progress = hooks.on_progress
        self.monitor_field = hooks.monitor_field
        self.recorder = hooks.recorder
        self.core_labeller = hooks.core_labeller
        self.start = time.monotonic()
        self.plan = plan(run_input, config, backend.count_tokens)
        self.emitter = Emitter(self.index, hooks.on_rows or (lambda _: None), hooks.monitor_field)
        self.tokens_before = backend.stats.tokens_computed
        self.requested_before = backend.stats.tokens_requested
        self.summary = RunSummary(
            config.digest(), self.index.digest, backend.model_name, backend.name, config.search.method,
            config.search.seed, self.index.count, self.plan.examples, len(self.plan.cores),
        )
        self.state = RunState()
        self.core_labels: dict[int, Optional[int]] = {}  # core example id -> label (None: transfer it)
        self.core_scores: dict[int, tuple[float, ...]] = {}
        # A person's labels are final from the start: no core and no transfer changes them.
        self.core_labels.update(self.plan.fixed)
        self.transferred = 0
        self.to_transfer = self.plan.examples - self.plan.core_examples()
        self.search_end: Optional[float] = None
        self.outcomes: list[CoreOutcome] = []
        self.calibration_sample: list[int] = []  # example ids whose transfer scores the calibration read
        self.check_sample: list[int] = []  # example ids the signal check reads again
        self.zero_shot_readings: dict[int, list[float]] = {}  # the sample's, read by zero_shot_rule
        self.zero_shot_raw: dict[int, list[float]] = {}  # raw zero-shot scores read already (signal_readings.read_zero_shot)
        self.check_tokens = 0
        self.shares: Optional[Any] = None  # class_shares.SharesReport, where estimated
        self.transfer_tokens = self._transfer_estimate()
        self.traces: list[CoreTrace] = []  # the searches this process watched

    def keep(self, state: RunState, *, save: bool = True) -> None:
        """The run's resumable state from here on, written where a checkpoint is kept, so that a
        kill after this point resumes from it."""
        self.state = state
        if save and self.recorder is not None:
            self.recorder.save(state)

    def replan(self, count: int) -> None:
        """The same plan with `count` cores (core.count auto): the cores there are stay the same."""
        self.plan = plan(self.run_input, self.config, self.backend.count_tokens, count)
        self.summary.cores = len(self.plan.cores)
        self.to_transfer = self.plan.examples - self.plan.core_examples()
        self.transfer_tokens = self._transfer_estimate()

    def _transfer_estimate(self) -> int:
        """What transfer will cost, for the ETA: a sample of targets' tokens, scaled up."""
        in_core = {i for c in self.plan.cores for i in c.ids} | set(self.plan.fixed)
        ids = seeded_sample(self.plan.examples, ESTIMATE_SAMPLE, self.config.search.seed, in_core.__contains__)
        if not ids:
            return 1
        examples = self.examples_of(ids)
        cost = demo_cost(self.shape, self.backend.count_tokens)
        mean = sum(cost(ex) for _, ex in examples) / len(examples)
        return max(1, int(mean * self.to_transfer * max(1, len(self.plan.cores))))

    def core_prompts(self, c: int) -> PromptSet:
        return core_setup(self.shape, self.config, self.plan.cores[c], c)[0]

    def examples_of(self, ids: list[int]) -> list[tuple[int, Example]]:
        """The examples with these ids (ascending), read from their rows."""
        per_row = self.shape.per_row
        rows = sorted({i // per_row for i in ids})
        by_row = {r: self.shape.examples(r, row.fields) for r, row in zip(rows, self.index.read(rows))}
        return [(i, by_row[i // per_row][i % per_row]) for i in ids]

    # ---- the two phases -----------------------------------------------------------------

    def run(self, resume: RunState) -> RunSummary:
        transfer, centres = self.prepare(resume)
        self._transfer(transfer, centres, resume, several=len(self.outcomes) > 1)
        self.check(transfer, centres)
        return self.finish()

    def prepare(self, resume: RunState) -> tuple[Transfer, Optional[list[list[float]]]]:
        """Everything before the transfer: the search, the calibration, a second core where
        core.count is auto and the first departs (second_core.py), the choice of reading."""
        from .second_core import second_core

        if self.config.core.count == "auto" and len(resume.done) > len(self.plan.cores):
            self.replan(len(resume.done))
        outcomes = self.search(resume)
        transfer, centres = self.calibrate(outcomes, resume)
        transfer, centres = second_core(self, transfer, centres, resume)
        return transfer, self.choose_reading(transfer, centres)

    def choose_reading(self, transfer: Transfer, centres: Optional[list[list[float]]]) -> Optional[list[list[float]]]:
        """Whether labels average in the zero-shot reading (zero_shot_rule.py), decided on the
        signal check's sample, whose scores the transfer then keeps as it reads them. Returns the
        centres the transfer uses (one more, for the zero-shot reading, when it is averaged in)."""
        from .signal_check import sample_ids
        from .zero_shot_rule import choose

        mode = self.config.transfer.zero_shot
        searched = bool(self.plan.cores) and self.core_labeller is None
        from .class_shares import decide, not_applied

        sampled = self.config.check.signal or (searched and mode != "off")
        # Shares that only go into the summary are estimated where the sample is read anyway.
        task = self.config.task
        applied = decide(self.config.transfer.class_prior, len(self.shape.label_words), task.class_shares)[0]
        shares = centres is not None and self.to_transfer > 0 and (sampled or applied)
        if applied and not shares:
            self.shares = not_applied(self, centres is None)
        if not (sampled or shares):
            return centres
        self.check_sample = sample_ids(self, centres, self.config.search.seed)
        transfer.keep = set(self.check_sample)
        if searched and mode != "off" and self.check_sample:
            choice, centres = choose(self, transfer, centres, self.check_sample, mode)
            s = self.summary
            s.zero_shot_averaged, s.zero_shot_kappa, s.zero_shot_rule = choice.averaged, choice.kappa, choice.reason
        if searched and self.config.core.count == "auto" and len(self.outcomes) > 1 and self.check_sample:
            from .second_core import weigh

            centres = weigh(self, transfer, centres)
        if shares and self.check_sample:
            from .class_shares import estimate_and_apply

            self.shares = estimate_and_apply(self, transfer, centres, self.check_sample,
                                             self.config.transfer.class_prior)
        return centres

    def check(self, transfer: Transfer, centres: Optional[list[list[float]]]) -> None:
        """The gold-free signal check (signal_check.py), its time apart from the phases'."""
        if not self.config.check.signal:
            return
        from .signal_check import measure

        report = measure(self, transfer, centres, self.config.search.seed)
        self.summary.signal = report.to_json()
        self.summary.readings = report.sample.to_json() if report.sample is not None else None
        self.summary.check_s = report.seconds
        self.check_tokens = report.tokens

    def search(self, resume: RunState) -> list[CoreOutcome]:
        """Phase 1: label the cores (or take them from `resume`)."""
        self.state = RunState(done=resume.done, search=resume.search, core_choice=resume.core_choice,
                              core_kappa=resume.core_kappa)
        self.outcomes = []
        self.search_more(resume)
        return self.outcomes

    def search_more(self, resume: RunState) -> None:
        """The planned cores not searched yet (all of them, the first time)."""
        for c in range(len(self.outcomes), len(self.plan.cores)):
            self.outcomes.append(self._core(c, resume))
        self.search_end = time.monotonic()
        self.summary.tokens_search = self.backend.stats.tokens_computed - self.tokens_before
        self.summary.search_s = round(self.search_end - self.start, 2)

    def _core(self, c: int, resume: RunState) -> CoreOutcome:
        core = self.plan.cores[c]
        if c < len(resume.done):
            outcome = resume.done[c]
        else:
            prompts, params = core_setup(self.shape, self.config, core, c)
            gold = core_gold(core, self.shape.per_row, self.monitor_field)
            search_resume = resume.search if c == len(resume.done) else None
            trace = CoreTrace(c)
            self.traces.append(trace)

            def observe(step: Step) -> None:
                trace.add(step)
                if step.state is not None:
                    self.keep(dataclasses.replace(self.state, search=step.state))
                self._report("search", c, step, agreement(step, gold, self.shape.label_words))

            if self.core_labeller is not None:
                outcome = self.core_labeller(core.problem, prompts, self.backend, params, observe, search_resume,
                                             ids=core.ids)
            else:
                outcome = label_core(core.problem, prompts, self.backend, params, observe, search_resume,
                                     lambda: core_zero_shot(self, core, prompts.continuations()))
            self.keep(RunState(done=self.state.done + (outcome,), core_choice=self.state.core_choice,
                               core_kappa=self.state.core_kappa))
        s = self.summary
        s.iterations += outcome.iterations
        s.proposals += outcome.proposals
        s.accepted += outcome.accepted
        s.evaluations += outcome.evaluations
        s.final_utility.append(round(outcome.utility, 4))
        s.inconsistencies_left += outcome.inconsistent
        s.converged_cores += int(outcome.converged)
        labels, scores = outcome.row_labels(), outcome.scores
        for local, (i, y) in enumerate(zip(core.ids, labels)):
            self.core_labels[i] = y
            if y is not None:
                self.core_scores[i] = scores[local]
        return outcome

    def calibrate(self, outcomes: list[CoreOutcome], resume: RunState,
                  earlier: Optional[Transfer] = None) -> tuple[Transfer, Optional[list[list[float]]]]:
        """The transfer's contexts (the cores' labels as demonstrations) and its calibration;
        scores `earlier` read after the same demonstrations are taken, not read again."""
        config = self.config
        contexts = []
        for c, (core, outcome) in enumerate(zip(self.plan.cores, outcomes)):
            prompts, _ = core_setup(self.shape, config, core, c)
            contexts.append(demonstrations(prompts, outcome.labels, outcome.order))
        self.to_transfer = self.plan.examples - sum(y is not None for y in self.core_labels.values())
        transfer = Transfer(self.shape, contexts, self.backend, config.task.label_prefix, config.task.separator)
        if earlier is not None:
            transfer.adopt(earlier)
        labelled = {i for i, y in self.core_labels.items() if y is not None}
        # Drawn on resume too (no model work): the zero-shot rule and the signal check sample from
        # it, and a resumed run must choose as the uninterrupted one did.
        sample = seeded_sample(self.plan.examples, config.transfer.calibration_size, config.search.seed,
                               labelled.__contains__)
        self.calibration_sample = sample
        if resume.calibrated:
            centres = [list(c) for c in resume.centres] if resume.centres is not None else None
        else:
            centres = transfer.centres(self.examples_of(sample))
        # The centres matter only to a resumed transfer: none is left, nothing to write.
        self.keep(dataclasses.replace(
            self.state, centres=tuple(tuple(c) for c in centres) if centres is not None else None, calibrated=True
        ), save=bool(self.to_transfer))
        return transfer, centres

    def _transfer(self, transfer: Transfer, centres: Optional[list[list[float]]], resume: RunState,
                  several: bool) -> None:
        """Phase 2: every unit in order, a chunk at a time; finished chunks come from the log."""
        logged: Optional[Iterator[TransferChunk]] = iter(resume.chunks)
        k = 0
        for chunk in plan_chunks(self.index, self.shape, self.core_labels, self.config.transfer.chunk_size):
            results: dict[int, Result] = {}
            if chunk.targets:
                done = next(logged, None) if logged is not None else None
                if done is None or done.examples != chunk.ids():
                    logged = None  # the log ends (or no longer matches): score from here on
                    done = transfer.label(chunk, centres)
                    if self.recorder is not None:
                        self.recorder.save_chunk(k, done)
                readings = done.readings or (None,) * len(done.examples)
                for i, y, s, a, two in zip(done.examples, done.labels, done.scores, done.agreement, readings):
                    results[i] = (y, s, a, two)
                k += 1
                self.transferred += len(chunk.targets)
            self._emit(chunk, results, several)
            self._report("transfer", len(self.plan.cores), None, self.emitter.monitor())

    def _emit(self, chunk: ChunkRows, results: dict[int, Result],
              several: bool) -> None:
        held = HeldLabels(self.core_labels, self.core_scores, self.plan.fixed)
        for r, fields in chunk.rows:
            self.emitter.add(r, fields, label_row(self.shape, r, fields, results, held, several))
        self.emitter.flush()

    def finish(self) -> RunSummary:
        s, e = self.summary, self.emitter
        s.label_counts = dict(e.label_counts)
        if self.shares is not None:
            from .class_shares import finish as shares_finish

            s.class_shares = shares_finish(self.shares, s.label_counts, self.shape.label_words).to_json()
        s.search_trace = [dataclasses.asdict(t.thinned()) for t in self.traces if t.iteration]
        s.core_rows = e.core_rows
        s.transfer_rows = e.next - e.core_rows - e.human_rows
        self._fixed_summary(e.human_rows)
        s.mean_agreement = round(sum(e.agreements) / len(e.agreements), 4) if e.agreements else None
        s.acceptance_rate = round(s.accepted / s.proposals, 4) if s.proposals else 0.0
        s.tokens_scored = self.backend.stats.tokens_computed - self.tokens_before
        s.tokens_transfer = s.tokens_scored - s.tokens_search - self.check_tokens
        s.tokens_requested = self.backend.stats.tokens_requested - self.requested_before
        if s.tokens_requested:
            s.prefix_reuse = round(1 - s.tokens_scored / s.tokens_requested, 4)
        now = time.monotonic()
        s.transfer_s = round(now - (self.search_end or now) - s.check_s, 2)
        s.wall_time_s = round(now - self.start, 2)
        return s

    def _fixed_summary(self, rows: int) -> None:
        if not self.plan.fixed:
            return
        s = self.summary
        s.fixed_rows, s.fixed_demonstrations, s.fixed_digest = rows, self.plan.fixed_demos, self.human.digest
        if self.plan.cores and self.outcomes:
            core, outcome = self.plan.cores[0], self.outcomes[0]
            held = core.problem.fixed
            s.fixed_disagreed = len({core.ids[k] // self.shape.per_row for k, y in enumerate(held)
                                     if y is not None and argmax(outcome.scores[k]) != y})

    # ---- progress -------------------------------------------------------------------------

    def _report(self, phase: str, core: int, step: Optional[Step], agreement: Optional[float]) -> None:
        if self.on_progress is None:
            return
        now = time.monotonic()
        elapsed = now - self.start
        tokens = self.backend.stats.tokens_computed - self.tokens_before
        phase_elapsed = now - (self.search_end or self.start) if phase == "transfer" else elapsed
        self.on_progress(Progress(
            phase, core, len(self.plan.cores), step, self.emitter.next, self.index.count, self.transferred,
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
