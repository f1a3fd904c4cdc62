"""The shape of a run: cores sized by tokens, consistency repair, transfer, and the runner
(streaming in input order, checkpoints per chunk, resume), with a fake backend.

The fake reads sentiment from keywords, and lets the demonstrations before a query move it
a little, so labels depend on both, as with a real model. The real model runs the same paths
in tests/test_cli_model.py and tests/test_resume.py.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Optional

import pytest

from icm_cli.foundation.config import CheckConfig, Config, CoreConfig, SearchConfig, TaskConfig, TransferConfig
from icm_cli.algorithm.consistency import repair
from icm_cli.algorithm.cores import plan_run
from icm_cli.data.row_index import Selection, build_index
from icm_cli.run.runner import RunHooks, RunInput, RunState, label_dataset
from icm_cli.algorithm.search import TRUE, ConsistencyGroup
from icm_cli.data.sources import MemorySource
from icm_cli.algorithm.tasks import TaskShape
from icm_cli.algorithm.transfer import ChunkRows, Transfer, TransferChunk, plan_chunks

from fakes import BAD, GOOD, SentimentBackend

FALSE = 1


TASK = TaskConfig(template="Tweet: {text}\nSentiment:", labels=("positive", "negative"), id_field="id")


def tweet_rows(n: int) -> list[dict]:
    good, bad = sorted(GOOD), sorted(BAD)
    return [{"id": f"t{k}", "text": f"tweet {k} was {good[k % 5] if k % 3 else bad[k % 5]} today"} for k in range(n)]


def as_input(rows: list[dict], task: TaskConfig = TASK) -> RunInput:
    shape = TaskShape(task)
    return RunInput(build_index(MemorySource("tweets.jsonl", rows), Selection(), shape.check, task.id_field), shape)


def tweets(n: int) -> RunInput:
    return as_input(tweet_rows(n))


def config(**changes: Any) -> Config:
    search = SearchConfig(initial_labels=2, iterations=30, seed=1)
    # No signal check, no zero-shot rule and one core (core.count auto reads a sample zero-shot to
    # decide on a second): these tests count the model's requests of the run itself.
    base = Config(task=TASK, search=search, core=CoreConfig(max_tokens=80, count=1),
                  transfer=TransferConfig(chunk_size=7, calibration_size=11, zero_shot="off"),
                  check=CheckConfig(signal=False))
    for section, values in changes.items():
        base = dataclasses.replace(base, **{section: dataclasses.replace(getattr(base, section), **values)})
    return base


def words(text: str) -> int:
    return len(text.split())


def all_examples(inp: RunInput) -> list[tuple[int, Any]]:
    """Every (example id, example) of a run, read row by row."""
    out = []
    for r, row in inp.index.stream():
        for k, ex in enumerate(inp.shape.examples(r, row.fields)):
            out.append((r * inp.shape.per_row + k, ex))
    return out


def chunk_of(inp: RunInput, ids) -> ChunkRows:
    chunk = ChunkRows()
    by_id = dict(all_examples(inp))
    chunk.targets = [(i, by_id[i]) for i in ids]
    return chunk


# --------------------------------------------------------------------------- cores


def test_core_fills_its_budget_and_the_rest_is_transferred():
    inp = tweets(40)
    plan = plan_run(inp.index, inp.shape, words, CoreConfig(max_tokens=80), seed=3)
    (core,) = plan.cores
    cost = sum(words(ex.query) + 1 + 2 for ex in core.examples)
    assert cost <= 80 and core.ids == tuple(sorted(core.ids))
    assert plan.examples == 40 and 0 < plan.core_examples() < 40
    # A random sample, not the first rows of the file.
    assert core.ids != tuple(range(len(core.ids)))
    assert [f["id"] for f in core.fields] == [f"t{r}" for r in core.rows]


def test_data_smaller_than_a_core_is_all_core():
    inp = tweets(6)
    plan = plan_run(inp.index, inp.shape, words, CoreConfig(max_tokens=10_000), seed=0)
    assert plan.cores[0].ids == tuple(range(6)) and plan.core_examples() == 6


def test_several_cores_are_disjoint_and_seeded():
    inp = tweets(60)
    plan = plan_run(inp.index, inp.shape, words, CoreConfig(max_tokens=80, count=3), seed=5)
    assert len(plan.cores) == 3
    seen = [i for c in plan.cores for i in c.ids]
    assert len(seen) == len(set(seen))
    assert plan_run(inp.index, inp.shape, words, CoreConfig(max_tokens=80, count=3), seed=5) == plan
    assert plan_run(inp.index, inp.shape, words, CoreConfig(max_tokens=80, count=3), seed=6) != plan


def test_zero_shot_has_no_core():
    inp = tweets(10)
    plan = plan_run(inp.index, inp.shape, len, CoreConfig(), seed=0, count=0)
    assert plan.cores == () and plan.examples == 10


CLAIMS = TaskConfig(type="claims", template="Q: {q}\nA: {a}\nTrue?", labels=("True", "False"),
                    group_field="g", key_field="key")


def test_consistency_groups_stay_whole_in_cores_and_chunks():
    # Groups spread over the file (row k is in group k % 10), as a shuffled file has them.
    rows = [{"q": f"q{k % 10}", "a": f"answer {k}", "g": f"g{k % 10}", "key": str(k % 2)} for k in range(30)]
    inp = as_input(rows, CLAIMS)
    plan = plan_run(inp.index, inp.shape, words, CoreConfig(max_tokens=40), seed=0)
    core_groups = {ex.group for ex in plan.cores[0].examples}
    assert all(r % 10 in {int(g[1:]) for g in core_groups} for r in plan.cores[0].rows)
    assert sum(1 for r in range(30) if f"g{r % 10}" in core_groups) == len(plan.cores[0].rows)
    labels = dict(zip(plan.cores[0].ids, [0] * len(plan.cores[0].ids)))
    chunks = list(plan_chunks(inp.index, inp.shape, labels, 4))
    seen: dict[str, int] = {}
    for k, chunk in enumerate(chunks):
        for _, ex in chunk.targets:
            assert seen.setdefault(ex.group, k) == k  # a group's examples all in one chunk
    # Every row is read exactly once, in first-appearance order of its group.
    assert sorted(r for c in chunks for r, _ in c.rows) == list(range(30))
    assert all(ex.group not in core_groups for c in chunks for _, ex in c.targets)


def test_chunks_of_ungrouped_rows_are_the_file_in_order():
    inp = tweets(20)
    chunks = list(plan_chunks(inp.index, inp.shape, {3: TRUE, 4: None}, 6))
    assert [r for c in chunks for r, _ in c.rows] == list(range(20))
    targets = [i for c in chunks for i, _ in c.targets]
    assert targets == [i for i in range(20) if i != 3]  # 4: the search left it unlabelled
    assert all(len(c.targets) <= 6 for c in chunks)


# --------------------------------------------------------------------------- consistency repair


def lp(p: float) -> list[float]:
    return [math.log(p), math.log(1 - p)]


def test_repair_keeps_argmax_where_nothing_binds():
    scores = [[-0.1, -2.3], [-2.0, -0.2]]
    assert repair(scores, []) == [TRUE, FALSE]


def test_repair_chooses_the_best_consistent_assignment():
    # Claims 0 and 1 share an answer (must agree); 2 has another answer (not both true with them).
    group = [ConsistencyGroup("claims", (0, 1, 2), ("4", "4", "5"))]
    scores = [lp(0.9), lp(0.4), lp(0.7)]
    # argmax says True, False, True: two violations. Options: {0,1} true (0.9*0.4*0.3 = 0.108),
    # {2} true (0.1*0.6*0.7 = 0.042), none true (0.1*0.6*0.3 = 0.018). The best is {0,1}.
    assert repair(scores, group) == [TRUE, TRUE, FALSE]
    scores[2] = lp(0.95)  # now {2} true: 0.1*0.6*0.95 = 0.057 > 0.9*0.4*0.05 = 0.018
    assert repair(scores, group) == [FALSE, FALSE, TRUE]


def test_repair_holds_fixed_labels():
    pair = [ConsistencyGroup("pair", (0, 1))]
    assert repair([lp(0.9), lp(0.8)], pair) == [TRUE, FALSE]
    assert repair([lp(0.9), lp(0.8)], pair, fixed={0: FALSE}) == [FALSE, TRUE]


def test_repair_of_a_large_group_is_exact_and_linear():
    n = 5000  # as g^2/2 pairs this would be 12.5 million constraints
    keys = tuple(str(k % 7) for k in range(n))
    scores = [lp(0.5 + (k % 13) / 40) for k in range(n)]
    group = ConsistencyGroup("claims", tuple(range(n)), keys)
    labels = repair(scores, [group])
    true_keys = {keys[i] for i, y in enumerate(labels) if y == TRUE}
    assert len(true_keys) <= 1
    assert all(labels[i] == labels[j] for i in range(0, n, 97) for j in range(0, n, 89) if keys[i] == keys[j])
    # Exact: no consistent assignment (none true, or one key true) scores higher.
    def total(assignment):
        return sum(s[y] for s, y in zip(scores, assignment))
    options = [[FALSE] * n] + [[TRUE if k == key else FALSE for k in keys] for key in sorted(set(keys))]
    assert total(labels) == pytest.approx(max(total(o) for o in options))


# --------------------------------------------------------------------------- transfer


def test_transfer_labels_do_not_depend_on_chunking():
    inp = tweets(30)
    backend = SentimentBackend()
    demos = ("Tweet: so good\nSentiment: positive\n\n", "Tweet: so bad\nSentiment: negative\n\n")
    transfer = Transfer(inp.shape, [demos], backend, " ", "\n\n")
    centres = transfer.centres(all_examples(inp))
    whole = transfer.label(chunk_of(inp, range(30)), centres)
    parts = [transfer.label(c, centres) for c in plan_chunks(inp.index, inp.shape, {}, 4)]
    assert sum((p.labels for p in parts), ()) == whole.labels
    assert sum((p.scores for p in parts), ()) == whole.scores


def test_calibration_centres_on_the_pool():
    inp = tweets(30)
    backend = SentimentBackend()
    transfer = Transfer(inp.shape, [()], backend, " ", "\n\n")
    raw = transfer.label(chunk_of(inp, range(30)), None)
    centred = transfer.label(chunk_of(inp, range(30)), transfer.centres(all_examples(inp)))
    # Uncalibrated, the +0.3 bias pushes neutral-ish tweets positive; centred, the labels split
    # by keyword (2 in 3 of these tweets are positive).
    assert sum(y == TRUE for y in raw.labels) >= sum(y == TRUE for y in centred.labels)
    assert [y == TRUE for y in centred.labels] == [k % 3 != 0 for k in range(30)]


def test_several_cores_average_and_report_agreement():
    inp = tweets(12)
    backend = SentimentBackend()
    pro = tuple("Tweet: x\nSentiment: positive\n\n" for _ in range(40))
    con = tuple("Tweet: x\nSentiment: negative\n\n" for _ in range(40))
    transfer = Transfer(inp.shape, [pro, con], backend, " ", "\n\n")
    chunk = transfer.label(chunk_of(inp, range(12)), None)
    assert set(chunk.agreement) <= {0.5, 1.0}
    assert backend.requests == 24  # each example after each core


# --------------------------------------------------------------------------- the runner


def run(data: RunInput, cfg: Config, resume: Optional[RunState] = None, recorder: Any = None, on_rows: Any = None,
        backend: Any = None):
    """The run's rows (as RowLabels, in the order they came out) and its summary."""
    rows: list = []

    def keep(out):
        rows.extend(out)
        if on_rows is not None:
            on_rows(out)

    summary = label_dataset(data, cfg, backend or SentimentBackend(), RunHooks(recorder=recorder, on_rows=keep), resume=resume)
    return [label for _, _, label in rows], summary


def test_every_row_is_labelled_and_streamed_in_input_order():
    data = tweets(45)
    streamed: list[tuple[int, Any, Any]] = []
    rows, summary = run(data, config(), on_rows=streamed.extend)
    assert [i for i, _, _ in streamed] == list(range(45))
    assert [f["id"] for _, f, _ in streamed] == [f"t{k}" for k in range(45)]
    assert [r for _, _, r in streamed] == rows
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
    resumed, _ = run(data, cfg, resume=recorder.resume_state(), recorder=recorder, backend=backend)
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


def test_zero_shot_reading_is_averaged_in_when_on_and_never_when_off():
    data = tweets(45)
    on, summary_on = run(data, config(transfer={"zero_shot": "on"}))
    off, summary_off = run(data, config(transfer={"zero_shot": "off"}))
    assert summary_on.zero_shot_averaged and not summary_off.zero_shot_averaged
    assert "transfer.zero_shot: on" in summary_on.zero_shot_rule and summary_off.zero_shot_rule is None
    assert [r.source for r in on] == [r.source for r in off]
    # Every transferred label holds both readings, the calibration sample's rows (whose scores
    # were read before the choice) included: they once kept the many-shot reading alone.
    assert all(a.confidence != b.confidence for a, b in zip(on, off) if a.source == "transfer")
    counted = []
    for mode in ("on", "off"):
        backend = SentimentBackend()
        run(data, config(transfer={"zero_shot": mode}), backend=backend)
        counted.append(backend.requests)
    transferred = sum(r.source == "transfer" for r in off)
    assert counted[0] - counted[1] >= transferred  # one more (short) read per transferred row


class Drifting(SentimentBackend):
    """A model whose reading after demonstrations is the opposite of its reading alone: the
    many-shot reading departs from zero-shot, as a drifted core makes it."""

    def score(self, requests):
        out = super().score(requests)
        return [list(reversed(s)) if len(r.segments) > 1 else s for r, s in zip(requests, out)]


def test_auto_averages_only_where_the_many_shot_reading_departs_from_zero_shot():
    data = tweets(60)
    _, agrees = run(data, config(transfer={"zero_shot": "auto"}))
    assert not agrees.zero_shot_averaged and agrees.zero_shot_kappa >= 0.8
    assert re.search(r"agrees with zero-shot on a sample of \d+ rows \(kappa", agrees.zero_shot_rule)
    _, departs = run(data, config(transfer={"zero_shot": "auto"}), backend=Drifting())
    assert departs.zero_shot_averaged and departs.zero_shot_kappa < 0.8
    assert "departs from zero-shot on a sample of " in departs.zero_shot_rule  # the sample, not rows that differ


@pytest.mark.parametrize("backend_type", [SentimentBackend, Drifting])
def test_a_resumed_run_makes_the_zero_shot_choice_the_uninterrupted_one_made(backend_type):
    # The choice is made on a sample of the calibration's rows; a resumed run once skipped drawing
    # that sample (its centres come from the checkpoint), chose on other rows, and could average
    # where the uninterrupted run did not.
    data, cfg = tweets(60), config(transfer={"zero_shot": "auto"})
    full, full_summary = run(data, cfg, backend=backend_type())
    recorder = Recorder(stop_after_chunks=1)
    with pytest.raises(KeyboardInterrupt):
        run(data, cfg, recorder=recorder, backend=backend_type())
    recorder.stop_after_chunks = None
    resumed, summary = run(data, cfg, resume=recorder.resume_state(), recorder=recorder, backend=backend_type())
    assert (summary.zero_shot_kappa, summary.zero_shot_averaged) == (full_summary.zero_shot_kappa,
                                                                     full_summary.zero_shot_averaged)
    assert summary.signal == full_summary.signal
    assert resumed == full


def test_where_the_zero_shot_reading_is_averaged_each_transferred_row_keeps_both_readings_choices():
    data = tweets(60)
    labels, summary = run(data, config(transfer={"zero_shot": "on"}))
    assert summary.zero_shot_averaged
    transferred = [r for r in labels if r.source == "transfer"]
    assert transferred and all(r.readings is not None and set(r.readings) <= {"positive", "negative"}
                               for r in transferred)
    assert all(r.readings is None for r in labels if r.source == "core")
    # Where both readings chose the same label, that is the row's label.
    assert all(r.label == r.readings[0] for r in transferred if r.readings[0] == r.readings[1])
    # Without the zero-shot reading there is nothing to compare.
    alone, _ = run(data, config())
    assert all(r.readings is None for r in alone)


def test_a_resumed_run_keeps_the_readings_of_the_chunks_it_did_not_score_again():
    data, cfg = tweets(60), config(transfer={"zero_shot": "on"})
    full, _ = run(data, cfg)
    recorder = Recorder(stop_after_chunks=2)
    with pytest.raises(KeyboardInterrupt):
        run(data, cfg, recorder=recorder)
    recorder.stop_after_chunks = None
    resumed, _ = run(data, cfg, resume=recorder.resume_state(), recorder=recorder)
    assert [r.readings for r in resumed] == [r.readings for r in full]
