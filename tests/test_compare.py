"""`icm compare`'s logic with a fake backend: every method runs on the same data, is scored
against gold, and only golden many-shot reads gold."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icm_cli.run import compare as compare_module
from icm_cli.backends import loading
from icm_cli.cli import app
from icm_cli.run.compare import METHODS, MethodResult, compare, format_gap, gap_note, gap_recovered, gold_by_example
from icm_cli.foundation.config import Config, CoreConfig, SearchConfig, TaskConfig
from icm_cli.foundation.errors import InputError
from icm_cli.data.row_index import Selection, build_index
from icm_cli.run.runner import RunInput
from icm_cli.data.sources import MemorySource
from icm_cli.algorithm.tasks import TaskShape

from fakes import SentimentBackend

TASK = TaskConfig(template="Tweet: {text}\nSentiment:", labels=("positive", "negative"), id_field="id")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
CONFIG = Config(task=TASK, search=SearchConfig(initial_labels=2, iterations=20), core=CoreConfig(max_tokens=120))


def data(n: int) -> tuple[RunInput, dict[str, str]]:
    rows, gold = [], {}
    for k in range(n):
        good = k % 2 == 0
        rows.append({"id": f"r{k}", "text": f"tweet {k} {'love it' if good else 'hate it'}"})
        gold[f"r{k}"] = "positive" if good else "negative"
    shape = TaskShape(TASK)
    return RunInput(build_index(MemorySource("d.jsonl", rows), Selection(), shape.check, "id"), shape), gold


def test_every_method_reports_accuracy_tokens_and_time():
    dataset, gold = data(40)
    results = compare(dataset, CONFIG, SentimentBackend(), gold)
    assert [r.method for r in results] == list(METHODS)
    by = {r.method: r for r in results}
    assert by["zero_shot"].core_rows == 0 and by["zero_shot"].transfer_rows == 40
    assert all(r.n == 40 and 0 <= r.accuracy <= 1 and r.ci95[0] <= r.accuracy <= r.ci95[1] for r in results)
    assert all(r.tokens > 0 for r in results)
    # the keyword fake makes this easy; the ceiling must be reached by the ceiling
    assert by["golden"].accuracy == 1.0


def test_methods_do_not_read_gold_except_golden():
    dataset, gold = data(30)
    flipped = {k: ("negative" if v == "positive" else "positive") for k, v in gold.items()}
    for method in ("zero_shot", "random_few_shot", "bootstrap", "icm"):
        a = compare(dataset, CONFIG, SentimentBackend(), gold, (method,))[0]
        b = compare(dataset, CONFIG, SentimentBackend(), flipped, (method,))[0]
        assert a.accuracy + b.accuracy == pytest.approx(1.0)  # same labels, scored against opposite gold


def test_gap_recovered_and_errors():
    dataset, gold = data(20)
    results = compare(dataset, CONFIG, SentimentBackend(), gold, ("zero_shot", "golden"))
    gaps = gap_recovered(results)
    assert gaps["zero_shot"] in (0.0, None) and (gaps["golden"] in (1.0, None))
    with pytest.raises(InputError, match="not a method"):
        compare(dataset, CONFIG, SentimentBackend(), gold, ("oracle",))
    with pytest.raises(InputError, match="no row id"):
        compare(dataset, CONFIG, SentimentBackend(), {"zz": "positive"})
    with pytest.raises(InputError, match="not one of the task's labels"):
        gold_by_example(dataset, [f"r{k}" for k in range(20)], {"r0": "neutral"})


# ---- gap recovered: pure logic and printing, on fake results (no model)

def result(method: str, accuracy: float) -> MethodResult:
    return MethodResult(method, accuracy, (accuracy - 0.1, min(1.0, accuracy + 0.05)), 16, 1000, 1.0, 0, 16)


# What icm compare measured on tweets-16: golden below zero-shot, ICM between them.
INVERTED = [result("zero_shot", 0.9375), result("icm", 0.875), result("golden", 0.8125)]


def test_no_gap_to_recover_when_golden_does_not_beat_zero_shot():
    assert gap_recovered(INVERTED) == {"zero_shot": None, "icm": None, "golden": None}
    tied = [result("zero_shot", 0.8), result("icm", 0.9), result("golden", 0.8)]
    assert gap_recovered(tied) == {"zero_shot": None, "icm": None, "golden": None}
    assert gap_note(INVERTED) == ("golden many-shot (0.8125) does not beat zero-shot (0.9375) on this sample, "
                                  "so there is no gap to recover")
    assert "(0.8000) does not beat zero-shot (0.8000)" in gap_note(tied)


def test_gap_recovered_where_golden_beats_zero_shot():
    results = [result("zero_shot", 0.5), result("bootstrap", 0.4), result("icm", 0.8), result("golden", 0.9)]
    gaps = gap_recovered(results)
    assert gaps == {"zero_shot": 0.0, "bootstrap": -0.25, "icm": 0.75, "golden": 1.0}
    assert math.copysign(1.0, gaps["zero_shot"]) == 1.0  # 0.0, never -0.0 (JSON would say -0.0)
    assert gap_note(results) is None


def test_gap_needs_both_ends_among_the_methods():
    for results in ([result("icm", 0.8)], [result("zero_shot", 0.5), result("icm", 0.8)]):
        assert set(gap_recovered(results).values()) == {None}
        assert "needs both zero_shot and golden" in gap_note(results)


@pytest.mark.parametrize("gap,shown", [(None, "-"), (0.0, "0%"), (-0.0, "0%"), (-0.004, "0%"), (0.004, "0%"),
                                       (0.5, "50%"), (-0.25, "-25%"), (1.0, "100%")])
def test_gap_is_shown_as_a_whole_percent_never_minus_zero(gap, shown):
    assert format_gap(gap) == shown


class _Backend:
    model_name = "fake-model"

    def close(self) -> None:
        pass


@pytest.fixture
def fake_compare(monkeypatch):
    """icm compare's command with the model and the methods replaced by a fixed result list."""
    results: list[MethodResult] = []
    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: _Backend())
    monkeypatch.setattr(compare_module, "compare", lambda *a, **k: list(results))

    def run(rows: list[MethodResult], *extra: str):
        results[:] = rows
        return CliRunner().invoke(app, ["compare", str(EXAMPLES / "tweets-16.jsonl"),
                                        "--gold", str(EXAMPLES / "tweets-16.gold.jsonl"),
                                        "-c", str(ROOT / "configs" / "tweets-sentiment.yaml"), *extra])

    return run


def test_compare_table_shows_no_gap_and_says_why_on_stderr(fake_compare):
    out = fake_compare(INVERTED)
    assert out.exit_code == 0, out.output
    gap_column = [line.split("│")[4].strip() for line in out.stdout.splitlines()
                  if line.startswith("│") and any(m in line for m in ("zero_shot", "icm", "golden"))]
    assert gap_column == ["-", "-", "-"]
    assert "does not beat" not in out.stdout  # stdout: the table alone
    note = [line for line in out.stderr.splitlines() if "gap" in line]
    assert note == ["icm: gap recovered: -, golden many-shot (0.8125) does not beat zero-shot (0.9375) on this "
                    "sample, so there is no gap to recover"]


def test_compare_table_shows_gaps_without_a_note_where_there_is_a_gap(fake_compare):
    out = fake_compare([result("zero_shot", 0.5), result("icm", 0.8), result("golden", 0.9)])
    assert out.exit_code == 0, out.output
    assert "  0% " in out.stdout and " 75% " in out.stdout and "100%" in out.stdout and "-0%" not in out.stdout
    assert "gap recovered:" not in out.stderr


def test_compare_json_has_null_gaps_and_a_gap_note(fake_compare):
    out = fake_compare(INVERTED, "--json", "--quiet")
    assert out.exit_code == 0, out.output
    doc = json.loads(out.stdout)
    assert [m["gap_recovered"] for m in doc["methods"]] == [None, None, None]
    assert doc["gap_note"] == gap_note(INVERTED)
    assert out.stderr == ""
    doc = json.loads(fake_compare([result("zero_shot", 0.5), result("golden", 0.9)], "--json", "--quiet").stdout)
    assert doc["gap_note"] is None and [m["gap_recovered"] for m in doc["methods"]] == [0.0, 1.0]
