"""The shape of a run: cores sized by tokens, consistency repair, transfer, and the runner
(streaming in input order, checkpoints per chunk, resume), with a fake backend.

The fake reads sentiment from keywords, and lets the demonstrations before a query move it
a little, so labels depend on both, as with a real model. The real model runs the same paths
in tests/test_cli_model.py and tests/test_resume.py.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Optional

import pytest

from icm_cli.config import Config, CoreConfig, SearchConfig, TaskConfig, TransferConfig
from icm_cli.consistency import repair
from icm_cli.cores import plan_run, units
from icm_cli.data import Dataset, Row
from icm_cli.runner import RunState, label_dataset
from icm_cli.search import TRUE, Constraint
from icm_cli.tasks import build_task
from icm_cli.transfer import Transfer, TransferChunk, chunks

from fakes import BAD, GOOD, SentimentBackend

FALSE = 1


TASK = TaskConfig(template="Tweet: {text}\nSentiment:", labels=("positive", "negative"), id_field="id")


def tweets(n: int) -> Dataset:
    good, bad = sorted(GOOD), sorted(BAD)
    rows = []
    for k in range(n):
        word = good[k % 5] if k % 3 else bad[k % 5]
        rows.append(Row(k + 1, {"id": f"t{k}", "text": f"tweet {k} was {word} today"}))
    return Dataset("tweets.jsonl", rows, "h" * 16)


def config(**changes: Any) -> Config:
    search = SearchConfig(initial_labels=2, iterations=30, seed=1)
    base = Config(task=TASK, search=search, core=CoreConfig(max_tokens=80),
                  transfer=TransferConfig(chunk_size=7, calibration_size=11))
    for section, values in changes.items():
        base = dataclasses.replace(base, **{section: dataclasses.replace(getattr(base, section), **values)})
    return base


# --------------------------------------------------------------------------- cores


def test_core_fills_its_budget_and_the_rest_is_transferred():
    task = build_task(tweets(40), TASK)
    plan = plan_run(task, lambda t: len(t.split()), CoreConfig(max_tokens=80), seed=3)
    (core,) = plan.cores
    cost = sum(len(task.examples[i].query.split()) + 1 + 2 for i in core.indices)
    assert cost <= 80 and core.indices == tuple(sorted(core.indices))
    assert sorted(core.indices + plan.targets) == list(range(40))
    # A random sample, not the first rows of the file.
    assert core.indices != tuple(range(len(core.indices)))


def test_data_smaller_than_a_core_is_all_core():
    task = build_task(tweets(6), TASK)
    plan = plan_run(task, lambda t: len(t.split()), CoreConfig(max_tokens=10_000), seed=0)
    assert plan.cores[0].indices == tuple(range(6)) and plan.targets == ()


def test_several_cores_are_disjoint_and_seeded():
    task = build_task(tweets(60), TASK)
    count = lambda t: len(t.split())  # noqa: E731
    plan = plan_run(task, count, CoreConfig(max_tokens=80, count=3), seed=5)
    assert len(plan.cores) == 3
    seen = [i for c in plan.cores for i in c.indices]
    assert len(seen) == len(set(seen))
    assert plan_run(task, count, CoreConfig(max_tokens=80, count=3), seed=5) == plan
    assert plan_run(task, count, CoreConfig(max_tokens=80, count=3), seed=6) != plan


def test_zero_shot_has_no_core():
    task = build_task(tweets(10), TASK)
    plan = plan_run(task, len, CoreConfig(), seed=0, with_cores=False)
    assert plan.cores == () and plan.targets == tuple(range(10))


def test_consistency_groups_stay_whole_in_cores_and_chunks():
    rows = [Row(k + 1, {"q": f"q{k // 3}", "a": f"answer {k % 3}", "g": f"g{k // 3}", "key": str(k % 2)})
            for k in range(30)]
    claims = TaskConfig(type="claims", template="Q: {q}\nA: {a}\nTrue?", labels=("True", "False"),
                        group_field="g", key_field="key")
    task = build_task(Dataset("c.jsonl", rows, "x"), claims)
    plan = plan_run(task, lambda t: len(t.split()), CoreConfig(max_tokens=40), seed=0)
    group_of = {i: task.examples[i].group for i in range(len(task.examples))}
    core = set(plan.cores[0].indices)
    for unit in units(task):
        assert all(i in core for i in unit) or not any(i in core for i in unit)
    for chunk in chunks(task, plan.targets, 4):
        groups = {group_of[i] for i in chunk}
        assert all(group_of[j] not in groups for other in chunks(task, plan.targets, 4) if other != chunk
                   for j in other)


# --------------------------------------------------------------------------- consistency repair


def test_repair_keeps_argmax_where_nothing_binds():
    scores = [[-0.1, -2.3], [-2.0, -0.2]]
    assert repair(scores, []) == [TRUE, FALSE]


def test_repair_chooses_the_best_consistent_assignment():
    # Claims 0 and 1 share an answer (must agree); 2 has another answer (not both true with them).
    constraints = [Constraint(0, 1, "equal"), Constraint(0, 2, "not_both_true"), Constraint(1, 2, "not_both_true")]
    lp = lambda p: [math.log(p), math.log(1 - p)]  # noqa: E731
    scores = [lp(0.9), lp(0.4), lp(0.7)]
    # argmax says True, False, True: two violations. Options: {0,1} true (0.9*0.4*0.3 = 0.108),
    # {2} true (0.1*0.6*0.7 = 0.042), none true (0.1*0.6*0.3 = 0.018). The best is {0,1}.
    assert repair(scores, constraints) == [TRUE, TRUE, FALSE]
    scores[2] = lp(0.95)  # now {2} true: 0.1*0.6*0.95 = 0.057 > 0.9*0.4*0.05 = 0.018
    assert repair(scores, constraints) == [FALSE, FALSE, TRUE]


def test_repair_holds_fixed_labels():
    constraints = [Constraint(0, 1, "exactly_one_true")]
    lp = lambda p: [math.log(p), math.log(1 - p)]  # noqa: E731
    assert repair([lp(0.9), lp(0.8)], constraints) == [TRUE, FALSE]
    assert repair([lp(0.9), lp(0.8)], constraints, fixed={0: FALSE}) == [FALSE, TRUE]


def test_repair_of_a_large_group_is_consistent():
    n = 30
    constraints = [Constraint(i, j, "not_both_true") for i in range(n) for j in range(i + 1, n)]
    scores = [[math.log(0.5 + k / 100), math.log(0.5 - k / 100)] for k in range(n)]
    labels = repair(scores, constraints)
    assert not any(c.violated(tuple(labels)) for c in constraints)


# --------------------------------------------------------------------------- transfer


def test_transfer_labels_do_not_depend_on_chunking():
    task = build_task(tweets(30), TASK)
    backend = SentimentBackend()
    demos = ("Tweet: so good\nSentiment: positive\n\n", "Tweet: so bad\nSentiment: negative\n\n")
    transfer = Transfer(task, [demos], backend, " ", "\n\n", calibrate=True)
    centres = transfer.centres(range(30))
    whole = transfer.label(range(30), centres, {})
    parts = [transfer.label(c, centres, {}) for c in chunks(task, range(30), 4)]
    assert sum((p.labels for p in parts), ()) == whole.labels
    assert sum((p.scores for p in parts), ()) == whole.scores


def test_calibration_centres_on_the_pool():
    task = build_task(tweets(30), TASK)
    backend = SentimentBackend()
    transfer = Transfer(task, [()], backend, " ", "\n\n", calibrate=True)
    raw = transfer.label(range(30), None, {})
    centred = transfer.label(range(30), transfer.centres(range(30)), {})
    # Uncalibrated, the +0.3 bias pushes neutral-ish tweets positive; centred, the labels split
    # by keyword (2 in 3 of these tweets are positive).
    assert sum(y == TRUE for y in raw.labels) >= sum(y == TRUE for y in centred.labels)
    assert [y == TRUE for y in centred.labels] == [k % 3 != 0 for k in range(30)]


def test_several_cores_average_and_report_agreement():
    task = build_task(tweets(12), TASK)
    backend = SentimentBackend()
    pro = tuple("Tweet: x\nSentiment: positive\n\n" for _ in range(40))
    con = tuple("Tweet: x\nSentiment: negative\n\n" for _ in range(40))
    transfer = Transfer(task, [pro, con], backend, " ", "\n\n", calibrate=False)
    chunk = transfer.label(range(12), None, {})
    assert set(chunk.agreement) <= {0.5, 1.0}
    assert backend.requests == 24  # each example after each core


# --------------------------------------------------------------------------- the runner


def run(data: Dataset, cfg: Config, resume: Optional[RunState] = None, recorder: Any = None, on_rows: Any = None):
    return label_dataset(data, cfg, SentimentBackend(), resume=resume, recorder=recorder, on_rows=on_rows)


def test_every_row_is_labelled_and_streamed_in_input_order():
    data = tweets(45)
    streamed: list[tuple[int, Any]] = []
    rows, summary = run(data, config(), on_rows=streamed.extend)
    assert [i for i, _ in streamed] == list(range(45))
    assert [r for _, r in streamed] == rows
    assert summary.core_rows + summary.transfer_rows == 45
    assert 0 < summary.core_rows < 45
    assert {r.source for r in rows} == {"core", "transfer"}
    # the keyword fake is easy: transfer labels follow the keywords
    truth = ["negative" if k % 3 == 0 else "positive" for k in range(45)]
    transferred = [(r.label, t) for r, t in zip(rows, truth) if r.source == "transfer"]
    assert sum(a == b for a, b in transferred) >= 0.9 * len(transferred)


def test_same_seed_same_labels_and_different_seed_different_core():
    a, sa = run(tweets(45), config())
    b, _ = run(tweets(45), config())
    assert a == b
    c, _ = run(tweets(45), config(search={"seed": 2}))
    assert [r.source for r in c] != [r.source for r in a]


class Recorder:
    """Keeps what a checkpoint keeps; can stop the run after a given number of chunks."""

    def __init__(self, stop_after_chunks: Optional[int] = None):
        self.state = RunState()
        self.chunks: list[TransferChunk] = []
        self.stop_after_chunks = stop_after_chunks

    def save(self, state: RunState) -> None:
        self.state = state
        if not state.calibrated:
            self.chunks = []

    def save_chunk(self, index: int, chunk: TransferChunk) -> None:
        assert index == len(self.chunks)
        self.chunks.append(chunk)
        if self.stop_after_chunks is not None and len(self.chunks) >= self.stop_after_chunks:
            raise KeyboardInterrupt

    def resume_state(self) -> RunState:
        return dataclasses.replace(self.state, chunks=tuple(self.chunks))


@pytest.mark.parametrize("stop_after", [1, 3])
def test_resume_after_a_kill_during_transfer_redoes_no_finished_chunk(stop_after):
    data, cfg = tweets(60), config()
    full, _ = run(data, cfg)
    recorder = Recorder(stop_after_chunks=stop_after)
    with pytest.raises(KeyboardInterrupt):
        run(data, cfg, recorder=recorder)
    assert len(recorder.chunks) == stop_after
    backend = SentimentBackend()
    recorder.stop_after_chunks = None
    resumed, _ = label_dataset(data, cfg, backend, resume=recorder.resume_state(), recorder=recorder)
    assert resumed == full
    # The resumed run scored only the chunks that were not finished (and the calibration sample).
    transferred_rows = sum(r.source == "transfer" for r in full)
    done_rows = sum(len(c.examples) for c in recorder.chunks[:stop_after])
    assert backend.requests <= transferred_rows - done_rows + cfg.transfer.calibration_size


def test_bootstrap_and_zero_shot_label_every_row():
    data = tweets(30)
    for method in ("bootstrap", "zero_shot"):
        rows, summary = run(data, config(search={"method": method}))
        assert len(rows) == 30 and summary.method == method
        if method == "zero_shot":
            assert summary.cores == 0 and all(r.source == "transfer" for r in rows)
        else:
            assert summary.core_rows > 0


def test_icm_can_start_from_zero_shot_labels():
    rows, summary = run(tweets(30), config(search={"init": "zero_shot"}))
    assert len(rows) == 30 and summary.core_rows > 0


def test_several_cores_write_agreement_on_transferred_rows():
    rows, summary = run(tweets(60), config(core={"count": 2, "max_tokens": 60}))
    assert summary.cores == 2
    assert all(r.agreement is None for r in rows if r.source == "core")
    assert all(r.agreement in (0.5, 1.0) for r in rows if r.source == "transfer")
    assert summary.mean_agreement is not None
