"""`icm compare`: "is ICM better than just asking the model?", answered on a labelled sample.

Each method labels the same data with the same config, core and seed, and is scored against
gold with the same metrics as `icm eval`:
- zero_shot: every row read alone (batch-calibrated for classification);
- random_few_shot: the core's examples with random labels as demonstrations;
- bootstrap: zero-shot labels, then rounds of relabelling the core with the others as context;
- icm: the configured search, as `icm label` runs it (every label averaged with its zero-shot
  reading, transfer.zero_shot);
- icm_alone: the same search, its labels the many-shot reading alone (the paper's);
- golden: the core's examples with their gold labels as demonstrations: the ceiling, which
  needs gold; it is the only method here that reads gold (random_few_shot reads nothing).
Each method starts with no attention state kept, so its tokens and time are its own.
"""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass
from typing import Callable, Optional

from ..backends.base import Backend
from ..foundation.config import Config
from ..algorithm.core_labels import CoreOutcome, given_labels
from ..foundation.errors import InputError
from ..data.labels_io import row_id
from ..foundation.metrics import compute_agreement, normalize_label
from .runner import RunHooks, RunInput, label_dataset
from ..algorithm.search import Labels, Problem

METHODS = ("zero_shot", "random_few_shot", "bootstrap", "icm", "icm_alone", "golden")


@dataclass(frozen=True)
class MethodResult:
    method: str
    accuracy: float
    ci95: tuple[float, float]
    n: int
    tokens: int
    seconds: float
    core_rows: int
    transfer_rows: int
    verdict: Optional[str] = None  # the run's gold-free signal verdict (signal_check), beside its accuracy

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "ci95": list(self.ci95)}


def row_ids(run_input: RunInput, id_field: Optional[str]) -> list[str]:
    """Each row's id (labels_io's rule; checked unique when the input was indexed), else its position."""
    if id_field is None:
        return [str(r) for r in range(run_input.index.count)]
    source = run_input.index.source
    return [row_id(row.fields[id_field], source.at(row), id_field) for _, row in run_input.index.stream()]


def gold_by_example(run_input: RunInput, ids: list[str], gold: dict[str, str]) -> dict[int, int]:
    """Each example's gold label index (a pair's swapped order gets the opposite), by example id."""
    shape = run_input.shape
    words = [normalize_label(w) for w in shape.label_words]
    out: dict[int, int] = {}
    for r, name in enumerate(ids):
        value = gold.get(name)
        if value is None:
            continue
        if value not in words:
            raise InputError(f"gold label '{value}' for id '{name}' is not one of the task's labels {words}")
        y = words.index(value)
        for k in range(shape.per_row):
            out[r * shape.per_row + k] = 1 - y if k == 1 else y  # the second example is the swapped order
    return out


def _given(kind: str, gold: dict[int, int], seed: int) -> Callable[..., CoreOutcome]:
    def labeller(problem: Problem, prompts, backend, params, on_step=None, resume=None, ids=()) -> CoreOutcome:
        if kind == "golden":
            if any(i not in gold for i in ids):
                raise InputError("golden many-shot needs a gold label for every row of the core")
            labels: Labels = tuple(gold[i] for i in ids)
        else:
            rng = random.Random(seed)
            labels = tuple(rng.randrange(problem.num_labels) for _ in range(problem.n))
        return given_labels(problem, prompts, backend, params, labels)

    return labeller


def compare(run_input: RunInput, config: Config, backend: Backend, gold: dict[str, str],
            methods: tuple[str, ...] = METHODS,
            on_method: Callable[[str], None] = lambda _: None) -> list[MethodResult]:
    """Run each method on the input and score it against `gold` ({row id: normalised label})."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise InputError(f"--methods: '{unknown[0]}' is not a method; choose from {', '.join(METHODS)}")
    ids = row_ids(run_input, config.task.id_field)
    if not any(i in gold for i in ids):
        raise InputError(f"no row id of the data is in the gold file (id field '{config.task.id_field or 'row position'}')")
    per_example = gold_by_example(run_input, ids, gold)
    results = []
    for method in methods:
        on_method(method)
        labeller = None
        run_method = method if method in ("zero_shot", "bootstrap", "icm") else "icm"
        run_config = dataclasses.replace(config, search=dataclasses.replace(config.search, method=run_method))
        if method == "icm_alone":
            run_config = dataclasses.replace(run_config, transfer=dataclasses.replace(run_config.transfer, zero_shot="off"))
        if method in ("random_few_shot", "golden"):
            labeller = _given(method, per_example, config.search.seed)
        backend.forget()
        before = backend.stats.tokens_computed
        start = time.monotonic()
        predicted: dict[str, str] = {}

        def collect(rows: list) -> None:
            for r, _, label in rows:
                predicted[ids[r]] = normalize_label(label.label)

        summary = label_dataset(run_input, run_config, backend, RunHooks(on_rows=collect, core_labeller=labeller))
        seconds = time.monotonic() - start
        agreement = compute_agreement(predicted, gold)
        results.append(MethodResult(
            method, round(agreement.accuracy, 4), (round(agreement.ci95[0], 4), round(agreement.ci95[1], 4)),
            agreement.n, backend.stats.tokens_computed - before, round(seconds, 1), summary.core_rows,
            summary.transfer_rows, (summary.signal or {}).get("verdict"),
        ))
    return results


def gap_recovered(results: list[MethodResult]) -> dict[str, Optional[float]]:
    """Share of the zero-shot -> golden gap each method closes; None for every method unless
    golden beats zero-shot (see gap_note)."""
    by = {r.method: r.accuracy for r in results}
    low, high = by.get("zero_shot"), by.get("golden")
    # With golden at or below zero-shot the ratio still computes, and lies: a method worse than
    # zero-shot came out "50%" of the way to a ceiling that was below the floor.
    if low is None or high is None or high <= low:
        return {r.method: None for r in results}
    # + 0.0: a method level with zero-shot is 0.0, never -0.0 (shown "-0%", or -0.0 in JSON)
    return {r.method: round((r.accuracy - low) / (high - low), 3) + 0.0 for r in results}


def gap_note(results: list[MethodResult]) -> Optional[str]:
    """Why gap_recovered has no values, or None when it has."""
    by = {r.method: r.accuracy for r in results}
    low, high = by.get("zero_shot"), by.get("golden")
    if low is None or high is None:
        return "it needs both zero_shot and golden among --methods"
    if high <= low:
        return (f"golden many-shot ({high:.4f}) does not beat zero-shot ({low:.4f}) on this sample, "
                f"so there is no gap to recover")
    return None


def format_gap(gap: Optional[float]) -> str:
    """A gap as a whole percent; a share that rounds to zero is "0%", whatever its sign."""
    if gap is None:
        return "-"
    return f"{round(gap * 100)}%"  # round() of a float gives an int, which has no -0
