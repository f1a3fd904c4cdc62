"""`icm label --fixed` with the real embedded model: the corrected rows keep the person's labels
exactly, marked human; the summary counts them; a resume with other corrections is refused; and
the Ray engine writes the labels the local run does."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from icm_cli.run.checkpoint import checkpoint_path

pytestmark = pytest.mark.model

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "tweets-64.jsonl"
GOLD = ROOT / "examples" / "tweets-64.gold.jsonl"


def jsonl(path: Path) -> list[dict]:
    # Split on "\n" only: str.splitlines also breaks at U+0085 and friends, which tweets contain.
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def corrections(path: Path, gold: Path, picks: range) -> dict[str, str]:
    chosen = {row["id"]: row["label"] for k, row in enumerate(jsonl(gold)) if k in picks}
    path.write_text("".join(json.dumps({"id": i, "label": y}) + "\n" for i, y in chosen.items()))
    return chosen


def label(*args: str, cwd: Path = ROOT) -> list[str]:
    return [sys.executable, "-m", "icm_cli.cli", "label", *args, "--quiet"]


def test_fixed_rows_keep_their_labels_and_a_resume_with_others_is_refused(tmp_path):
    config = tmp_path / "c.yaml"
    # The shipped config with a shorter search: the test is about what happens to the fixed rows.
    config.write_text((ROOT / "configs" / "tweets-sentiment.yaml").read_text().replace("iterations: 125",
                                                                                      "iterations: 10")
                      .replace("max_tokens: 1024", "max_tokens: 384"))
    fixed = corrections(tmp_path / "fix.jsonl", GOLD, range(0, 64, 9))  # 8 rows
    other = corrections(tmp_path / "other.jsonl", GOLD, range(1, 64, 9))
    assert fixed.keys() != other.keys()
    out = tmp_path / "out.jsonl"
    run = label(str(SAMPLE), "-c", str(config), "-o", str(out), "--fixed", str(tmp_path / "fix.jsonl"))
    proc = subprocess.Popen(run, cwd=ROOT, stderr=subprocess.PIPE)
    state = checkpoint_path(out) / "state.json"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None and not (state.exists() and state.stat().st_size):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    os.kill(proc.pid, signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 143

    refused = subprocess.run(run[:-3] + ["--fixed", str(tmp_path / "other.jsonl"), "--quiet", "--resume"], cwd=ROOT,
                             capture_output=True, timeout=600)
    err = refused.stderr.decode()
    assert refused.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert "the --fixed corrections changed" in err and "resume with the same --fixed file" in err
    assert not out.exists()

    done = subprocess.run(run + ["--resume"], cwd=ROOT, capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr.decode()
    rows = jsonl(out)
    assert [r["id"] for r in rows] == [r["id"] for r in jsonl(SAMPLE)]  # every row, in input order
    for row in rows:
        if row["id"] in fixed:
            assert (row["label"], row["icm_source"], row["confidence"]) == (fixed[row["id"]], "human", 1.0)
        else:
            assert row["icm_source"] in ("core", "transfer")
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert summary["fixed_rows"] == 8 and summary["fixed_demonstrations"] == 8
    assert summary["core_rows"] + summary["transfer_rows"] + summary["fixed_rows"] == 64
    assert 0 <= summary["fixed_disagreed"] <= 8 and len(summary["fixed_digest"]) == 16


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="ray is not installed")
def test_the_ray_engine_writes_the_local_runs_labels_with_fixed_rows(tmp_path):
    rows = (ROOT / "examples" / "tweets-1000.jsonl").read_text(encoding="utf-8").split("\n")[500:620]
    (tmp_path / "tweets.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    gold = [json.loads(line) for line in
            (ROOT / "examples" / "tweets-1000.gold.jsonl").read_text(encoding="utf-8").split("\n")[500:620]]
    (tmp_path / "gold.jsonl").write_text("".join(json.dumps(g) + "\n" for g in gold))
    fixed = corrections(tmp_path / "fix.jsonl", tmp_path / "gold.jsonl", range(3, 120, 10))  # 12 rows
    text = (ROOT / "configs" / "tweets-sentiment.yaml").read_text()
    text = text.replace("iterations: 125", "iterations: 10").replace("max_tokens: 1024", "max_tokens: 256")
    # Room for a few of the twelve as demonstrations: the rest are written by the driver too.
    text = text.replace("core:\n", "core:\n  fixed_tokens: 120\n")
    text += "ray:\n  actors: 1\n  batch_size: 32\n  cpus: 2\n  object_store_mib: 256\n"
    (tmp_path / "c.yaml").write_text(text)
    common = ["tweets.jsonl", "-c", "c.yaml", "--fixed", "fix.jsonl"]
    subprocess.run(label(*common, "-o", "local.jsonl"), cwd=tmp_path, check=True, timeout=900)
    ray = subprocess.run(label(*common, "-o", "shards", "--engine", "ray"), cwd=tmp_path, capture_output=True,
                         timeout=900)
    assert ray.returncode == 0, ray.stderr.decode()[-3000:]
    local = {r["id"]: (r["label"], r["confidence"], r["icm_source"]) for r in jsonl(tmp_path / "local.jsonl")}
    shards = {}
    for shard in (tmp_path / "shards").glob("part-*.jsonl"):
        for r in jsonl(shard):
            assert r["id"] not in shards, f"{r['id']} written twice"
            shards[r["id"]] = (r["label"], r["confidence"], r["icm_source"])
    assert shards == local
    assert {i for i, (_, _, source) in local.items() if source == "human"} == set(fixed)
    summary = json.loads((tmp_path / "shards" / "icm-summary.json").read_text())
    local_summary = json.loads((tmp_path / "local.jsonl.summary.json").read_text())
    assert summary["fixed_rows"] == local_summary["fixed_rows"] == 12
    assert 0 < local_summary["fixed_demonstrations"] < 12
