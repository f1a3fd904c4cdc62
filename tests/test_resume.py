"""Kill -9 at random points, resume, and get exactly the labels of an uninterrupted run."""

from __future__ import annotations

import json
import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from icm_cli.data import output
from icm_cli.run.checkpoint import Checkpoint, checkpoint_path
from icm_cli.foundation.config import Config
from icm_cli.foundation.errors import InputError, OutputError
from icm_cli.run.runner import RunState
from icm_cli.algorithm.search import SearchState

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "tweets-64.jsonl"


def label_cmd(config: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "icm_cli.cli", "label", str(SAMPLE), "-c", str(config), "-o", str(out),
            "--seed", "5", "--quiet", *extra]


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    """A small core searched from random seed labels, and the rest transferred in small chunks:
    a kill can land in the search, between chunks, or while a chunk is written."""
    path = tmp_path_factory.mktemp("cfg") / "c.yaml"
    text = (ROOT / "configs" / "tweets-sentiment.yaml").read_text()
    for old, new in (("iterations: 125", "iterations: 30"), ("init: zero_shot", "init: random"),
                     ("max_tokens: 1024", "max_tokens: 300\ntransfer:\n  chunk_size: 8\n  calibration_size: 16")):
        assert old in text
        text = text.replace(old, new)
    path.write_text(text)
    return path


def rows(path: Path) -> list[tuple]:
    # Split on "\n" only: str.splitlines also breaks at U+0085 and friends, which tweets contain.
    lines = [line for line in path.read_text(encoding="utf-8").split("\n") if line]
    return [(r["id"], r["label"], r["confidence"], r["icm_source"]) for r in map(json.loads, lines)]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, config) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("base") / "baseline.jsonl"
    start = time.monotonic()
    subprocess.run(label_cmd(config, out), check=True, cwd=ROOT, timeout=900)
    return out, time.monotonic() - start


def run_to_completion(config: Path, out: Path) -> None:
    resume = ["--resume"] if checkpoint_path(out).exists() else []
    proc = subprocess.run(label_cmd(config, out, *resume), cwd=ROOT, capture_output=True, timeout=900)
    assert b"Traceback" not in proc.stderr
    assert proc.returncode == 0, proc.stderr.decode()


@pytest.mark.slow
@pytest.mark.model
def test_killed_runs_resume_to_the_uninterrupted_labels(tmp_path, config, baseline):
    reference, full_time = baseline
    rng = random.Random(1234)
    for trial in range(2):
        out = tmp_path / f"trial{trial}.jsonl"
        kills = 0
        while not out.exists():
            resume = ["--resume"] if checkpoint_path(out).exists() else []
            proc = subprocess.Popen(label_cmd(config, out, *resume), cwd=ROOT, stderr=subprocess.PIPE)
            if kills < 2:
                # Anywhere from model loading to the end of the transfer, checkpoint writes included.
                time.sleep(rng.uniform(0.3, 1.0) * full_time)
                if proc.poll() is None:
                    os.kill(proc.pid, signal.SIGKILL)
                    kills += 1
            _, err = proc.communicate(timeout=900)
            assert b"Traceback" not in err
            if proc.returncode not in (0, -signal.SIGKILL):
                pytest.fail(f"run exited {proc.returncode}: {err.decode()}")
            # A killed run leaves either no output or a complete one, never a partial file.
            assert not out.exists() or rows(out)
        assert rows(out) == rows(reference), f"trial {trial} after {kills} kills"
        assert not checkpoint_path(out).exists()


@pytest.mark.model
def test_a_kill_during_transfer_redoes_at_most_one_chunk(tmp_path, config, baseline):
    reference, _ = baseline
    out = tmp_path / "out.jsonl"
    chunks = checkpoint_path(out) / "chunks.jsonl"
    proc = subprocess.Popen(label_cmd(config, out), cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if chunks.exists() and chunks.read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before two chunks were logged"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    logged = chunks.read_text().count("\n")
    run_to_completion(config, out)
    assert rows(out) == rows(reference)
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    full = json.loads(reference.with_name(reference.name + ".summary.json").read_text())
    # The resumed run searched nothing and transferred only what the log did not hold.
    assert summary["tokens_search"] == 0
    assert summary["tokens_transfer"] < full["tokens_transfer"]
    assert logged >= 2


def test_a_crash_mid_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl.checkpoint"
    store = Checkpoint(path, Config(), "abc")
    first = RunState((), SearchState((0, None, 1), (3, tuple(range(625)), None), 4, 2, 3, 2, 5, (2, 0)))
    store.save(first)

    def crash(*_args):
        raise OSError("disk died")

    monkeypatch.setattr(output.os, "replace", crash)
    with pytest.raises(OutputError, match="out.jsonl.checkpoint/: cannot write the checkpoint .disk died."):
        store.save(RunState((), None))
    monkeypatch.undo()
    assert store.load() == first
    assert [p.name for p in tmp_path.iterdir()] == [path.name]
    assert [p.name for p in path.iterdir()] == ["state.json"]  # no temp file left behind


def test_resume_refuses_changed_config_or_data(tmp_path):
    path = tmp_path / "out.jsonl.checkpoint"
    Checkpoint(path, Config(), "abc").save(RunState())
    changed = Config().with_seed(9)
    with pytest.raises(InputError, match=r"search\.seed was 0, now 9"):
        Checkpoint(path, changed, "abc").load()
    with pytest.raises(InputError, match="input data changed"):
        Checkpoint(path, Config(), "xyz").load()


@pytest.mark.slow
@pytest.mark.model
@pytest.mark.parametrize("when", ["search", "transfer"])
def test_sigterm_keeps_the_checkpoint_and_the_resumed_run_gives_the_uninterrupted_labels(tmp_path, config, baseline,
                                                                                          when):
    """What Slurm or Kubernetes sends before a kill: the run stops within moments, exit 143, no
    temporary file, and one line naming the command that continues it."""
    reference, _ = baseline
    out = tmp_path / "out.jsonl"
    state = checkpoint_path(out) / ("state.json" if when == "search" else "chunks.jsonl")
    proc = subprocess.Popen(label_cmd(config, out), cwd=ROOT, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None and not (state.exists() and state.stat().st_size):
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be stopped"
    os.kill(proc.pid, signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    lines = err.decode().splitlines()
    assert proc.returncode == 143, err.decode()
    assert len(lines) == 1 and lines[0].startswith("icm: stopped by SIGTERM; the checkpoint keeps the finished work: "
                                                   "continue with: icm label "), lines
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))
    again = shlex.split(lines[0].split("continue with: ", 1)[1])[2:]  # the command, as the line gives it
    assert again[-1] == "--resume"
    proc = subprocess.run([sys.executable, "-m", "icm_cli.cli", "label", *again], cwd=ROOT, capture_output=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stderr.decode()
    assert rows(out) == rows(reference)
    assert not checkpoint_path(out).exists() and not list(tmp_path.glob(".*.tmp"))
