"""`icm label --dry-run`: what a run would do, from the config, the data and a tokenizer only."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Callable

from .backends.base import ScoreRequest
from .config import Config
from .data import Dataset
from .runner import batch_setup
from .scoring import CoherenceScorer
from .search import _Search
from .tasks import build_task, make_batches


@dataclass(frozen=True)
class BatchEstimate:
    examples: int
    constraints: int
    tokens_per_evaluation: int  # one U evaluation with every example labelled, prefixes shared
    tokens_from_scratch: int  # the same evaluation with every prompt computed on its own
    max_evaluations: int  # one per proposal, plus two per ConsistencyFix round where constraints exist


@dataclass(frozen=True)
class DryRunReport:
    rows: int
    examples: int
    batches: list[BatchEstimate]
    first_prompts: list[tuple[str, tuple[str, ...]]]  # (prompt text, continuations)

    def estimated_tokens(self) -> int:
        """An upper bound: every iteration a proposal, every evaluation at the full batch."""
        return sum(b.tokens_per_evaluation * b.max_evaluations for b in self.batches)


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


def dry_run(dataset: Dataset, config: Config, count: Callable[[str], int], show: int = 2) -> DryRunReport:
    task = build_task(dataset, config.task)
    batches = make_batches(task, count, config.batch.max_tokens, config.search.seed)
    estimates: list[BatchEstimate] = []
    first: list[tuple[str, tuple[str, ...]]] = []
    for b, batch in enumerate(batches):
        prompts, params = batch_setup(task, config, batch, b)
        scorer = CoherenceScorer(prompts, backend=None)  # type: ignore[arg-type]  # requests() only
        everything = tuple(0 for _ in batch.indices)
        shared, scratch = shared_prefix_tokens(scorer.requests(everything)[0], count)
        fixes = 2 * config.search.fix_rounds if batch.problem.constraints else 0
        evaluations = 1 + config.search.iterations * (1 + fixes)
        estimates.append(BatchEstimate(batch.problem.n, len(batch.problem.constraints), shared, scratch, evaluations))
        if b == 0:
            # The search's own first labels (seeded, no model needed): these are the first
            # prompts the model will read, character for character.
            start, start_order = _Search(batch.problem, scorer, params, random.Random(params.seed)).initial_labels()
            for request in scorer.requests(start, start_order)[0][:show]:
                first.append(("".join(request.segments), request.continuations))
    return DryRunReport(len(dataset.rows), len(task.examples), estimates, first)
