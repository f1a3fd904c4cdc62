"""`core.count: auto` (run/second_core.py) with a fake model whose reading drifts after one core's
demonstrations and not after another's: the run searches a second core exactly where the first
departs from zero-shot, outvotes the drifted reading, and resumes to the same labels. The real
model runs the same path in tests/test_cli_model.py."""

from __future__ import annotations

import dataclasses
import re
import pytest

from icm_cli.algorithm.cores import plan_run
from icm_cli.algorithm.transfer import Transfer
from icm_cli.foundation.errors import InputError
from icm_cli.foundation.config_reading import load_config

from fakes import SentimentBackend
from test_run_shape import Recorder, config, run, tweets

N = 90


def truth(k: int) -> str:
    return "negative" if k % 3 == 0 else "positive"


class DriftsAfter(SentimentBackend):
    """Reads the opposite of the words wherever the demonstrations hold one of `triggers` (the
    first core's rows), as a core whose search drifted makes the model read."""

    def __init__(self, triggers: set[str]):
        super().__init__()
        self.triggers = triggers

    def score(self, requests):
        out = super().score(requests)
        return [list(reversed(s)) if any(t in seg for seg in r.segments[:-1] for t in self.triggers) else s
                for r, s in zip(requests, out)]


def auto(**changes):
    cfg = config(transfer={"zero_shot": "auto", "calibration_size": 64}, core={"count": "auto", "max_tokens": 60},
                 **changes)
    return cfg


def first_core_texts(cfg, n: int = N) -> set[str]:
    data = tweets(n)
    plan = plan_run(data.index, data.shape, lambda t: len(t.split()), cfg.core, cfg.search.seed)
    return {f"tweet {r} was " for r in plan.cores[0].rows}


def accuracy(rows) -> float:
    moved = [(r.label, truth(k)) for k, r in enumerate(rows) if r.source == "transfer"]
    return sum(a == b for a, b in moved) / len(moved)


def test_where_the_first_core_agrees_the_run_is_the_one_core_run():
    cfg = auto()
    rows, summary = run(tweets(N), cfg)
    one, one_summary = run(tweets(N), dataclasses.replace(cfg, core=dataclasses.replace(cfg.core, count=1)))
    assert summary.second_core is False and summary.cores == 1
    assert "agrees with zero-shot" in summary.core_choice and summary.core_kappa >= 0.45
    assert [(r.label, r.confidence, r.source) for r in rows] == [(r.label, r.confidence, r.source) for r in one]
    assert summary.reading_weights is None
    # The zero-shot reads the decision made are the zero-shot rule's too: nothing read twice.
    backends = [SentimentBackend(), SentimentBackend()]
    run(tweets(N), cfg, backend=backends[0])
    run(tweets(N), dataclasses.replace(cfg, core=dataclasses.replace(cfg.core, count=1)), backend=backends[1])
    assert backends[0].requests == backends[1].requests


def test_where_the_first_core_drifts_and_the_second_does_not_confirm_it_labels_are_zero_shot():
    cfg = auto()
    drift = first_core_texts(cfg)
    rows, summary = run(tweets(N), cfg, backend=DriftsAfter(drift))
    one, _ = run(tweets(N), dataclasses.replace(cfg, core=dataclasses.replace(cfg.core, count=1)),
                 backend=DriftsAfter(drift))
    assert summary.second_core is True and summary.cores == 2
    assert "departs from zero-shot" in summary.core_choice and summary.core_kappa < 0.45
    # The second core reads as zero-shot does, the first the opposite: the departure is one
    # search's, not read twice, so every label is the zero-shot reading, the cores' rows' too.
    assert summary.departure_confirmed is False and "do not confirm" in summary.departure
    assert summary.reading_weights == [0.0, 0.0, 1.0]
    # The zero-shot rule's line says what the labels are now, not the averaging it first decided.
    assert summary.zero_shot_averaged and "averages" not in summary.zero_shot_rule
    assert summary.zero_shot_rule.endswith(": every label is the zero-shot reading, as the two cores do not confirm "
                                           "their departure (below)")
    assert accuracy(rows) >= 0.9 > accuracy(one)
    core_rows = [(k, r) for k, r in enumerate(rows) if r.source == "core"]
    assert core_rows and all(r.label == truth(k) for k, r in core_rows)
    # The rows transferred after the decision were read zero-shot only: no cores' agreement, no
    # many-shot reading to show beside the label.
    assert all(r.agreement is None and r.readings is None for r in rows if r.source == "transfer")


class InContext(DriftsAfter):
    """Notes each row read after demonstrations (a core's context)."""

    def __init__(self, triggers: set[str]):
        super().__init__(triggers)
        self.in_context: set[str] = set()

    def score(self, requests):
        found = (re.search(r"tweet \d+ was ", r.segments[-1]) for r in requests if len(r.segments) > 1)
        self.in_context.update(m.group(0) for m in found if m)  # (a scrambled row matches nothing)
        return super().score(requests)


@pytest.mark.parametrize("shares", [None, {"positive": 0.4, "negative": 0.6}])
def test_an_unconfirmed_departure_reads_the_rows_left_zero_shot_only(monkeypatch, shares):
    """Once the cores' departure is unconfirmed, their readings weigh nothing: the rows not read
    yet are read zero-shot only, and every label, confidence and verdict is the one reading every
    context gives; with stated class shares too (matched on rows first read after the decision)."""
    cfg = auto(check={"signal": True}, task={"class_shares": shares})
    n = 300
    lean = InContext(first_core_texts(cfg, n))
    rows, summary = run(tweets(n), cfg, backend=lean)
    monkeypatch.setattr(Transfer, "zero_shot_only", property(lambda self: False))
    full = InContext(first_core_texts(cfg, n))
    every, every_summary = run(tweets(n), cfg, backend=full)
    assert summary.departure_confirmed is False and summary.reading_weights == [0.0, 0.0, 1.0]
    assert [(r.label, r.confidence, r.source) for r in rows] == [(r.label, r.confidence, r.source) for r in every]

    def verdict(s):  # the check's figures; its own cost differs
        return {k: v for k, v in s.signal.items() if k not in ("tokens", "seconds")}

    assert summary.signal is not None and verdict(summary) == verdict(every_summary)
    assert summary.class_shares == every_summary.class_shares
    # The labels are the zero-shot reading: the check judges it without a kappa against itself
    # (it would be 1 by construction), and keeps the cores' unused reading for the report.
    assert "zero_shot_kappa" not in {f["name"] for f in summary.signal["figures"]}
    assert "the labels are the model's zero-shot reading" in summary.signal["reason"]
    sample = summary.readings
    assert sample is not None and sample["zero_shot_alone"] is True and len(sample["cores_reading"]) == len(sample["many_shot"]) > 0
    assert sample["many_shot"] != sample["cores_reading"]
    transferred = {f"tweet {k} was " for k, r in enumerate(rows) if r.source == "transfer"}
    # Only the rows read before the decision (the two calibration samples, one drawn for each
    # core count; the decisions' samples within them) were read after demonstrations; reading
    # every context takes them all.
    assert len(lean.in_context & transferred) <= 2 * cfg.transfer.calibration_size < len(transferred) / 2
    assert full.in_context >= transferred
    assert lean.requests < full.requests


class PoorZeroShot(SentimentBackend):
    """Reads the words right after any demonstrations, and alone (zero-shot) reads two rows in
    five the opposite way: a zero-shot reading that both cores depart from, the same way."""

    def score(self, requests):
        out = super().score(requests)
        flipped = []
        for r, s in zip(requests, out):
            k = int(re.search(r"tweet (\d+) was", r.segments[-1]).group(1))
            flipped.append(list(reversed(s)) if len(r.segments) == 1 and k % 5 < 2 else s)
        return flipped


def test_where_both_cores_depart_alike_the_readings_are_weighed_by_agreement():
    cfg = auto()
    rows, summary = run(tweets(N), cfg, backend=PoorZeroShot())
    zero, _ = run(tweets(N), dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, method="zero_shot")),
                  backend=PoorZeroShot())
    assert summary.second_core is True and summary.core_kappa < 0.45
    assert summary.departure_confirmed is True and "agree with each other" in summary.departure
    assert "every label averages the 2 cores' readings and zero-shot's" in summary.zero_shot_rule
    weights = summary.reading_weights
    assert weights is not None and len(weights) == 3 and weights[2] < min(weights[:2])
    assert accuracy(rows) >= 0.9 and accuracy(zero) <= 0.7


class Counting(DriftsAfter):
    """Counts each prompt the transfer asks (the search repeats its own, out of this test's scope)."""

    def __init__(self, triggers: set[str]):
        super().__init__(triggers)
        self.asked: dict[tuple, int] = {}
        self.reading = False

    def score(self, requests):
        if self.reading:
            for r in requests:
                self.asked[r.segments] = self.asked.get(r.segments, 0) + 1
        return super().score(requests)


def counted(monkeypatch) -> None:
    raw = Transfer.raw

    def reading(self, *a, **k):
        self.backend.reading = True
        try:
            return raw(self, *a, **k)
        finally:
            self.backend.reading = False

    monkeypatch.setattr(Transfer, "raw", reading)


def test_the_transfer_never_asks_the_same_prompt_twice(monkeypatch):
    """The second core's calibration takes the first core's scores read already, and rows read
    before the zero-shot reading joined keep their scores: only what is missing is asked."""
    cfg = auto()
    drift = first_core_texts(cfg)
    counted(monkeypatch)
    backend = Counting(drift)
    rows, summary = run(tweets(N), cfg, backend=backend)
    assert summary.second_core is True and summary.zero_shot_averaged
    again = [k for k, n in backend.asked.items() if n > 1]
    assert not again, f"{len(again)} prompts read twice"
    # The same labels as when the first core's rows are read again (scores depend on the prompt only).
    monkeypatch.setattr(Transfer, "adopt", lambda self, earlier: None)
    unshared = Counting(drift)
    fresh, _ = run(tweets(N), cfg, backend=unshared)
    assert [k for k, n in unshared.asked.items() if n > 1]  # without adopt, the first core's reads repeat
    assert [(r.label, r.confidence, r.source) for r in rows] == [(r.label, r.confidence, r.source) for r in fresh]


class CountingZeroShot(DriftsAfter):
    """Counts each zero-shot prompt (the row alone) asked anywhere in the run."""

    def __init__(self, triggers: set[str]):
        super().__init__(triggers)
        self.asked: dict[str, int] = {}

    def score(self, requests):
        for r in requests:
            if len(r.segments) == 1:
                self.asked[r.segments[0]] = self.asked.get(r.segments[0], 0) + 1
        return super().score(requests)


def test_the_zero_shot_fallback_reads_no_row_twice():
    """Where the cores' departure is unconfirmed, the zero-shot centre's reads of the calibration
    sample are the transfer's too, and the cores' own rows, read zero-shot when the zero-shot rule
    averaged them and again when the fallback relabels them, are read once (old code: twice)."""
    cfg = auto()
    backend = CountingZeroShot(first_core_texts(cfg))
    rows, summary = run(tweets(N), cfg, backend=backend)
    assert summary.departure_confirmed is False
    assert any(r.source == "core" for r in rows) and any(r.source == "transfer" for r in rows)
    again = [q for q, n in backend.asked.items() if n > 1]
    assert not again, f"{len(again)} rows read zero-shot twice, e.g. {again[0]!r}"


def stop_in_second_search(recorder: Recorder):
    original = recorder.save

    def save(state):
        original(state)
        if state.core_choice is not None and len(state.done) == 1 and state.search is not None:
            raise KeyboardInterrupt

    recorder.save = save
    return original


@pytest.mark.parametrize("where", ["second search", "transfer"])
def test_a_resumed_run_gives_the_uninterrupted_ones_labels(where):
    cfg = auto()
    drift = first_core_texts(cfg)
    full, full_summary = run(tweets(N), cfg, backend=DriftsAfter(drift))
    recorder = Recorder(stop_after_chunks=2 if where == "transfer" else None)
    original = stop_in_second_search(recorder) if where == "second search" else None
    with pytest.raises(KeyboardInterrupt):
        run(tweets(N), cfg, recorder=recorder, backend=DriftsAfter(drift))
    assert recorder.state.core_choice is not None
    if original is not None:
        recorder.save = original
    recorder.stop_after_chunks = None
    resumed, summary = run(tweets(N), cfg, resume=recorder.resume_state(), recorder=recorder,
                           backend=DriftsAfter(drift))
    assert resumed == full
    for name in ("second_core", "core_choice", "core_kappa", "reading_weights", "cores"):
        assert getattr(summary, name) == getattr(full_summary, name), name


def test_a_resumed_run_keeps_the_one_core_decision_without_reading_again():
    """Killed in the transfer after deciding on one core: the resumed run reads what a resumed
    count: 1 run reads, and writes the same labels (no zero-shot rule here, whose reads of the
    sample would hide a decision made again)."""
    counts = []
    agreeing = dataclasses.replace(auto(), transfer=dataclasses.replace(auto().transfer, zero_shot="off"))
    for cfg in (agreeing, dataclasses.replace(agreeing, core=dataclasses.replace(agreeing.core, count=1))):
        full, _ = run(tweets(N), cfg)
        recorder = Recorder(stop_after_chunks=2)
        with pytest.raises(KeyboardInterrupt):
            run(tweets(N), cfg, recorder=recorder)
        recorder.stop_after_chunks = None
        backend = SentimentBackend()
        resumed, summary = run(tweets(N), cfg, resume=recorder.resume_state(), recorder=recorder, backend=backend)
        assert resumed == full
        counts.append(backend.requests)
        if cfg.core.count == "auto":
            assert summary.second_core is False and "agrees with zero-shot" in summary.core_choice
    assert counts[0] == counts[1]


@pytest.mark.parametrize("second_tokens, budget", [(None, 30), (40, 40)])
def test_the_second_core_fills_its_own_smaller_budget(second_tokens, budget):
    """A second opinion, not a second run: half the first core's demonstrations unless set."""
    cfg = auto()
    cfg = dataclasses.replace(cfg, core=dataclasses.replace(cfg.core, second_tokens=second_tokens))
    data = tweets(N)
    words = lambda t: len(t.split())  # noqa: E731
    plan = plan_run(data.index, data.shape, words, cfg.core, cfg.search.seed, count=2)
    first = plan_run(data.index, data.shape, words, cfg.core, cfg.search.seed)
    assert plan.cores[0].rows == first.cores[0].rows  # the first core does not move
    cost = lambda core: sum(words(ex.query) + 3 for ex in core.examples)  # noqa: E731
    assert cost(plan.cores[0]) <= 60 and budget - 10 < cost(plan.cores[1]) <= budget
    assert not set(plan.cores[0].rows) & set(plan.cores[1].rows)
    fixed = dataclasses.replace(cfg.core, count=2)  # a fixed count keeps every core the same size
    two = plan_run(data.index, data.shape, words, fixed, cfg.search.seed)
    assert cost(two.cores[1]) > 50


@pytest.mark.parametrize("value, ok", [("auto", True), (3, True), ("many", False), (0, False)])
def test_core_count_is_a_number_or_auto(tmp_path, value, ok):
    path = tmp_path / "c.yaml"
    path.write_text(f"task:\n  template: 'T: {{text}}'\n  labels: [a, b]\ncore:\n  count: {value}\n")
    if ok:
        assert load_config(path).core.count == value
        return
    with pytest.raises(InputError) as e:
        load_config(path)
    message = str(e.value)
    assert "core.count" in message and "\n" not in message
    if value == "many":
        assert "auto" in message


@pytest.mark.model
@pytest.mark.slow  # about a minute on 2 cores each: make test-slow (CI runs it after make test)
@pytest.mark.parametrize("confirmed", [None, False])
def test_the_real_model_searches_a_second_core_and_weighs_the_readings(monkeypatch, confirmed):
    """The embedded model on 64 shipped tweets, with the threshold set so that any departure
    (kappa below 1.01) asks for a second core: the path that runs on a drifted core. With
    `confirmed` False the cores are taken not to confirm their departure, whatever they read:
    every label is then the zero-shot reading."""
    from pathlib import Path

    from icm_cli.algorithm.tasks import TaskShape
    from icm_cli.backends.loading import load_backend
    from icm_cli.data.row_index import Selection, build_index
    from icm_cli.data.sources import open_source
    from icm_cli.foundation.overrides import parse_set
    from icm_cli.run import second_core
    from icm_cli.run.runner import RunHooks, RunInput, label_dataset

    root = Path(__file__).resolve().parents[1]
    sets = ["search.iterations=4", "core.max_tokens=160", "core.count=auto", "transfer.calibration_size=36",
            "transfer.zero_shot=on"]
    cfg = load_config(root / "configs" / "tweets-sentiment.yaml", [parse_set(s) for s in sets])
    cfg = dataclasses.replace(cfg, backend=dataclasses.replace(cfg.backend, dtype="float32"))
    monkeypatch.setattr(second_core, "DEPARTS", 1.01)
    if confirmed is not None:
        from icm_cli.run import signal_check

        monkeypatch.setattr(signal_check.TwoCores, "confirms", lambda self: confirmed)
    shape = TaskShape(cfg.task)
    index = build_index(open_source(str(root / "examples" / "tweets-64.jsonl")), Selection(), shape.check,
                        cfg.task.id_field)
    backend = load_backend(cfg.backend)
    try:
        rows: list = []
        summary = label_dataset(RunInput(index, shape), cfg, backend, RunHooks(on_rows=rows.extend))
        if confirmed is False:  # the same run reading every context, for the labels it must give
            monkeypatch.setattr(Transfer, "zero_shot_only", property(lambda self: False))
            every: list = []
            label_dataset(RunInput(index, shape), cfg, backend, RunHooks(on_rows=every.extend))
    finally:
        backend.close()
    assert summary.second_core is True and summary.cores == 2 and "a second core" in summary.core_choice
    weights = summary.reading_weights
    assert weights is not None and len(weights) == 3 and summary.zero_shot_averaged and sum(weights) > 0
    labels = [label for _, _, label in rows]
    assert len(labels) == 64 and sum(r.source == "core" for r in labels) == summary.core_rows
    assert summary.departure_confirmed is not None and summary.departure
    transferred = [r for r in labels if r.source == "transfer"]
    if confirmed is False:
        assert summary.departure_confirmed is False and weights == [0.0, 0.0, 1.0]
        # Read zero-shot only, the labels reading every context gives: the zero-shot reading's.
        assert transferred and all(r.agreement is None and r.readings is None for r in transferred)
        assert [(r.label, r.confidence) for r in labels] == [(r.label, r.confidence) for _, _, r in every]
        assert all(r.label == r.readings[1] for _, _, r in every if r.source == "transfer")
        # The check judges the zero-shot reading the labels are, with no kappa against itself.
        assert summary.signal is not None and summary.readings is not None and summary.readings["zero_shot_alone"]
        assert "zero_shot_kappa" not in {f["name"] for f in summary.signal["figures"]}
    elif summary.departure_confirmed:
        assert all(r.agreement in (0.0, 0.5, 1.0) for r in transferred)
    else:  # the real cores did not confirm their departure: the rows left were read zero-shot only
        assert weights == [0.0, 0.0, 1.0] and all(r.agreement is None for r in transferred)
