"""End-to-end tests through `icm label` and `icm eval` with the real embedded model on CPU.

They run a small, shipped sample of tweets for a few iterations: the point is that the whole
path works with real scores (and is deterministic), not accuracy, which needs more data.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "tweets-16.jsonl"
GOLD = ROOT / "examples" / "tweets-16.gold.jsonl"

pytestmark = pytest.mark.model


def jsonl(text: str) -> list[dict]:
    # Split on "\n" only: str.splitlines also breaks at U+0085 and friends, which tweets contain.
    return [json.loads(line) for line in text.split("\n") if line]


def icm(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "icm_cli.cli", *args], input=stdin, capture_output=True, cwd=ROOT, timeout=900
    )


@pytest.fixture(scope="module")
def small_config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tweets-small.yaml"
    text = (ROOT / "configs" / "tweets-sentiment.yaml").read_text()
    text, count = re.subn(r"iterations: \d+", "iterations: 40", text)
    assert count == 1
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def labelled(tmp_path_factory, small_config) -> tuple[Path, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("run") / "labels.jsonl"
    result = icm("label", str(SAMPLE), "-c", str(small_config), "-o", str(out), "--seed", "3")
    return out, result


def test_label_writes_every_row_in_order_with_label_and_confidence(labelled):
    out, result = labelled
    assert result.returncode == 0, result.stderr.decode()
    inputs = jsonl(SAMPLE.read_text(encoding="utf-8"))
    rows = jsonl(out.read_text(encoding="utf-8"))
    assert [r["id"] for r in rows] == [r["id"] for r in inputs]
    for before, after in zip(inputs, rows):
        assert after["text"] == before["text"]
        assert after["label"] in ("positive", "negative")
        assert 0.0 <= after["confidence"] <= 1.0
    # The calibrated objective must not hand every tweet the same label.
    assert len({r["label"] for r in rows}) == 2


def test_label_writes_summary_next_to_output(labelled):
    out, _ = labelled
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    for key in ("config_hash", "model", "seed", "iterations", "acceptance_rate", "final_utility",
                "inconsistencies_left", "label_counts", "tokens_scored", "wall_time_s"):
        assert key in summary
    assert summary["seed"] == 3
    assert summary["tokens_scored"] > 0
    assert sum(summary["label_counts"].values()) == 16


def test_progress_goes_to_stderr_as_plain_lines(labelled):
    _, result = labelled
    err = result.stderr.decode()
    assert "iteration=" in err and "U=" in err
    assert "summary" in err


def test_eval_against_gold_json_and_threshold(labelled):
    out, _ = labelled
    result = icm("eval", str(out), "--gold", str(GOLD), "--json")
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert report["n"] == 16
    assert 0.0 <= report["accuracy"] <= 1.0
    # icm label writes confidence and icm_source on every row: eval breaks accuracy down by both.
    assert report["by_confidence"][0]["threshold"] == 0.0 and report["by_confidence"][0]["n"] == 16
    assert sum(part["n"] for part in report["by_source"].values()) == 16
    assert set(report["by_source"]) <= {"core", "transfer"}
    assert report["passed"] is True and report["coverage"]["labelled_fraction"] == 1.0
    strict = icm("eval", str(out), "--gold", str(GOLD), "--min-accuracy", "1.01")
    assert strict.returncode == 2  # out of range is a usage error
    failing = icm("eval", str(out), "--gold", str(GOLD), "--min-accuracy", str(min(1.0, report["accuracy"] + 0.01)))
    assert failing.returncode == 1


def test_same_seed_same_labels_and_stdout_pipeline(labelled, small_config):
    out, _ = labelled
    again = icm("label", "-", "-c", str(small_config), "--seed", "3", "--quiet", stdin=SAMPLE.read_bytes())
    assert again.returncode == 0, again.stderr.decode()
    assert again.stderr == b""  # --quiet: nothing on stderr
    first = [(r["id"], r["label"], r["confidence"]) for r in jsonl(out.read_text(encoding="utf-8"))]
    second = [(r["id"], r["label"], r["confidence"]) for r in jsonl(again.stdout.decode())]
    assert first == second


@pytest.mark.slow
def test_compare_runs_the_methods_side_by_side(small_config):
    result = icm("compare", str(SAMPLE), "--gold", str(GOLD), "-c", str(small_config), "--json",
                 "--methods", "zero_shot,bootstrap,icm", "--quiet")
    assert result.returncode == 0, result.stderr.decode()
    report = json.loads(result.stdout)
    assert [m["method"] for m in report["methods"]] == ["zero_shot", "bootstrap", "icm"]
    for m in report["methods"]:
        assert m["n"] == 16 and 0.0 <= m["accuracy"] <= 1.0 and m["tokens"] > 0


def test_more_rows_than_a_core_are_transferred(tmp_path, small_config):
    config = tmp_path / "core.yaml"
    config.write_text(small_config.read_text().replace("max_tokens: 1024", "max_tokens: 200"))
    out = tmp_path / "out.jsonl"
    result = icm("label", str(SAMPLE), "-c", str(config), "-o", str(out), "--quiet", "--set", "transfer.zero_shot=on")
    assert result.returncode == 0, result.stderr.decode()
    rows = jsonl(out.read_text(encoding="utf-8"))
    sources = [r["icm_source"] for r in rows]
    assert sources.count("core") >= 4 and sources.count("transfer") >= 8
    # Each transferred row keeps the label each of the two averaged readings chose alone.
    for r in rows:
        readings = (r["icm_many_shot"], r["icm_zero_shot"])
        if r["icm_source"] == "transfer":
            assert set(readings) <= {"positive", "negative"}
            assert readings[0] != readings[1] or r["label"] == readings[0]
        else:
            assert readings == (None, None)
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["core_rows"] + summary["transfer_rows"] == 16
    assert summary["tokens_transfer"] > 0 and summary["transfer_s"] >= 0
    # The class shares: the labels' own, beside the model's zero-shot reading and the EM estimate.
    shares = summary["class_shares"]
    counts = summary["label_counts"]
    assert shares["labels"] == {w: round(counts.get(w, 0) / 16, 4) for w in ("positive", "negative")}
    assert sum(shares["estimated"].values()) == pytest.approx(1, abs=1e-4) and not shares["applied"]
    assert sum(shares["zero_shot"].values()) == pytest.approx(1, abs=1e-4)


def test_stated_class_shares_are_what_the_transferred_rows_take(tmp_path, small_config):
    # Shares far from what the readings give alone (about half each on these tweets): the
    # transferred rows must follow the statement, and the summary must say it did.
    config = tmp_path / "stated.yaml"
    text = small_config.read_text().replace("max_tokens: 1024", "max_tokens: 200")
    config.write_text(text.replace("  id_field: id\n", "  id_field: id\n  class_shares: {positive: 0.1, negative: 0.9}\n"))
    out = tmp_path / "out.jsonl"
    # A short search: the shares act on the transfer, whatever the core's labels.
    result = icm("label", str(SAMPLE), "-c", str(config), "-o", str(out), "--quiet", "--set", "search.iterations=10")
    assert result.returncode == 0, result.stderr.decode()
    moved = [r for r in jsonl(out.read_text(encoding="utf-8")) if r["icm_source"] == "transfer"]
    assert len(moved) >= 8
    assert sum(r["label"] == "negative" for r in moved) >= 0.75 * len(moved)
    shares = json.loads(out.with_name(out.name + ".summary.json").read_text())["class_shares"]
    assert shares["applied"] and shares["stated"] == {"positive": 0.1, "negative": 0.9}


def test_the_summary_gives_the_signal_verdict_and_what_it_rests_on(labelled):
    out, result = labelled
    signal = json.loads(out.with_name(out.name + ".summary.json").read_text())["signal"]
    assert signal["verdict"] in ("signal", "weak", "none") and signal["reason"]
    names = {f["name"] for f in signal["figures"]}
    assert {"content_ratio", "zero_shot_kappa", "majority_share"} <= names
    assert all(f["meaning"] for f in signal["figures"])
    assert "signal check" in result.stderr.decode()


@pytest.mark.slow
def test_random_letters_have_no_signal_and_require_signal_exits_1_after_writing(tmp_path, small_config):
    import random
    import string

    rng = random.Random(5)
    rows = jsonl((ROOT / "examples" / "tweets-64.jsonl").read_text(encoding="utf-8"))
    noise = tmp_path / "letters.jsonl"
    noise.write_text("".join(json.dumps({"id": r["id"], "text": "".join(rng.choice(string.ascii_lowercase)
                                                                           for _ in r["text"])}) + "\n"
                             for r in rows))
    out = tmp_path / "labels.jsonl"
    result = icm("label", str(noise), "-c", str(small_config), "-o", str(out), "--iterations", "10",
                 "--require-signal", "-q")
    assert result.returncode == 1, result.stderr.decode()
    assert result.stderr.decode().startswith("icm: no signal: the check's verdict is none")
    assert len(jsonl(out.read_text())) == 64  # written all the same
    assert json.loads(out.with_name(out.name + ".summary.json").read_text())["signal"]["verdict"] == "none"
