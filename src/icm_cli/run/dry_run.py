"""`icm label --dry-run`: what a run would do, from the config, the data and a tokenizer only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..backends.base import ScoreRequest
from ..foundation.config import Config
from ..algorithm.cores import RunPlan, demo_cost
from ..data.row_index import seeded_sample
from .runner import RunInput, core_setup, plan
from ..algorithm.scoring import CoherenceScorer
from ..algorithm.search import initial_labels
from ..algorithm.tasks import Example

# Share of a full U evaluation's tokens an iteration computed in measured searches (the
# embedded model, tweets; 442k tokens over 250 iterations of 32-example cores): most
# iterations change one label, and kept attention state serves the rest.
TOKENS_PER_ITERATION = 0.25


@dataclass(frozen=True)
class CoreEstimate:
    examples: int
    constraints: int
    tokens_per_evaluation: int  # one U evaluation with every example labelled, prefixes shared
    tokens_from_scratch: int  # the same evaluation with every prompt computed on its own
    max_evaluations: int  # one per proposal, plus two per ConsistencyFix round where constraints exist
    expected_tokens: int  # what a search typically computes (see TOKENS_PER_ITERATION)


@dataclass(frozen=True)
class DryRunReport:
    rows: int
    examples: int
    method: str
    cores: list[CoreEstimate]
    transfer_examples: int
    transfer_tokens: int  # each transferred example after each core's (computed once) prefix
    first_prompts: list[tuple[str, tuple[str, ...]]]  # (prompt text, continuations)
    fixed_rows: int = 0  # --fixed: rows that keep a person's label
    fixed_demos: int = 0  # of them, the rows each core holds as demonstrations

    def search_tokens(self) -> int:
        return sum(c.expected_tokens for c in self.cores)

    def search_tokens_bound(self) -> int:
        """An upper bound: every iteration a proposal, every evaluation at the full core."""
        return sum(c.tokens_per_evaluation * c.max_evaluations for c in self.cores)


def shared_prefix_tokens(requests: list[ScoreRequest], count: Callable[[str], int]) -> tuple[int, int]:
    """Tokens of a set of requests with equal leading pieces counted once, and counted per request."""
    seen: set[tuple[str, ...]] = set()
    shared = scratch = 0
    for r in requests:
        tail = max(count(c) for c in r.continuations) - 1
        for k in range(1, len(r.segments) + 1):
            size = count(r.segments[k - 1])
            scratch += size
            if r.segments[:k] not in seen:
                seen.add(r.segments[:k])
                shared += size
        shared += tail
        scratch += tail
    return shared, scratch


def dry_run(run_input: RunInput, config: Config, count: Callable[[str], int], show: int = 2) -> DryRunReport:
    shape = run_input.shape
    run = plan(run_input, config, count)
    cost = demo_cost(shape, count)
    estimates: list[CoreEstimate] = []
    first: list[tuple[str, tuple[str, ...]]] = []
    search = config.search
    for c, core in enumerate(run.cores):
        prompts, params = core_setup(shape, config, core, c)
        scorer = CoherenceScorer(prompts, backend=None)  # type: ignore[arg-type]  # requests() only
        everything = tuple(0 for _ in core.ids)
        shared, scratch = shared_prefix_tokens(scorer.requests(everything)[0], count)
        if search.method == "bootstrap":
            evaluations = 1 + search.rounds
            expected = shared * evaluations
        else:
            fixes = 2 * search.fix_rounds if core.problem.constraints else 0
            evaluations = 1 + search.iterations * (1 + fixes)
            expected = int(shared * (1 + TOKENS_PER_ITERATION * search.iterations))
        estimates.append(CoreEstimate(core.problem.n, len(core.problem.constraints), shared, scratch, evaluations,
                                      expected))
        if c == 0:
            if search.method == "icm" and search.init == "random":
                # The search's own first labels (seeded, no model needed): these are the first
                # prompts the model will read, character for character.
                start, order = initial_labels(core.problem, params)
                requests = scorer.requests(start, order)[0]
            else:
                # A zero-shot start (init zero_shot, bootstrap, zero_shot): each core example
                # is first read alone, exactly as zero_shot_labels asks for it.
                requests = scorer.requests(tuple(None for _ in core.ids))[0]
            for request in requests[:show]:
                first.append(("".join(request.segments), request.continuations))
    prefixes = sum(sum(cost(ex) for ex in core.examples) for core in run.cores)
    per_target = max(1, len(run.cores))
    targets = run.examples - run.core_examples()
    sample = _transfer_sample(run_input, run, config.search.seed)
    transfer = 0
    if sample:
        # Counted on a sample of the rows to transfer, scaled: a dry run reads no more than that.
        mean = sum(count(ex.query) + 1 for ex in sample) / len(sample)
        transfer = int(mean * targets) * per_target + prefixes
    if not first and sample:
        first.append((sample[0].query, tuple(config.task.label_prefix + w for w in shape.label_words)))
    return DryRunReport(run_input.index.count, run.examples, search.method, estimates, targets,
                        transfer if targets else 0, first, len(run_input.fixed.rows), run.fixed_demos)


# Rows to transfer whose tokens a dry run counts.
TRANSFER_SAMPLE = 1000


def _transfer_sample(run_input: RunInput, run: RunPlan, seed: int) -> list[Example]:
    shape, index = run_input.shape, run_input.index
    in_core = {i for core in run.cores for i in core.ids} | set(run.fixed)
    ids = seeded_sample(run.examples, TRANSFER_SAMPLE, seed, in_core.__contains__)
    rows = sorted({i // shape.per_row for i in ids})
    by_row = {r: shape.examples(r, row.fields) for r, row in zip(rows, index.read(rows))}
    return [by_row[i // shape.per_row][i % shape.per_row] for i in ids]


def probe_rate(config: Config, run_input: RunInput, budget_s: float = 4.0) -> Optional[float]:
    """Tokens per second the configured backend computes on this run's own first prompts.

    One U evaluation of the first core (every example labelled), scored in slices until about
    `budget_s` seconds have passed, after one warm-up slice.
    """
    import time

    from ..backends.loading import load_backend

    backend = load_backend(config.backend)
    try:
        run = plan(run_input, config, backend.count_tokens)
        if run.cores:
            prompts, _ = core_setup(run_input.shape, config, run.cores[0], 0)
            requests = CoherenceScorer(prompts, backend).requests(tuple(0 for _ in run.cores[0].ids))[0]
        else:
            words = tuple(config.task.label_prefix + w for w in run_input.shape.label_words)
            requests = [ScoreRequest((ex.query,), words) for ex in _transfer_sample(run_input, run, 0)[:256]]
        backend.score(requests[:2])
        # A GPU scores a whole evaluation in one call, as the search hands it over; a CPU in
        # slices, so that the probe can stop at its time budget.
        step = len(requests) if getattr(backend, "lookahead", 1) > 1 else 8
        before, start = backend.stats.tokens_computed, time.perf_counter()
        for k in range(0, len(requests), step):
            backend.score(requests[k:k + step])
            if time.perf_counter() - start > budget_s:
                break
        elapsed = time.perf_counter() - start
        return (backend.stats.tokens_computed - before) / elapsed if elapsed > 0 else None
    finally:
        backend.close()
