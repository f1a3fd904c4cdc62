"""The hf backend and `icm label` on a CUDA GPU: run with ICM_TEST_DEVICE=cuda, skipped elsewhere
(CI has no GPU).

The model is ICM_TEST_MODEL (a checkpoint directory), else the embedded one. A GPU machine
without the embedded weights can use random weights in its shape (benchmarks/bench_gpu.py writes
such a directory): every test here checks what holds for any weights (exit codes, exactness,
resume, devices), none checks accuracy.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEVICE = os.environ.get("ICM_TEST_DEVICE", "")
MODEL = os.environ.get("ICM_TEST_MODEL", "embedded")

# ICM_TEST_DEVICE=cpu runs the same tests on a CPU (slowly): a check of the tests themselves.
pytestmark = pytest.mark.skipif(DEVICE not in ("cuda", "cpu"),
                                reason="GPU tests: set ICM_TEST_DEVICE=cuda on a CUDA machine")


def icm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.run([sys.executable, "-m", "icm_cli.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout, env=env)


def model_args() -> list[str]:
    return [] if MODEL == "embedded" else ["--model", MODEL]


@pytest.fixture(scope="module")
def torch_cuda():
    import torch

    if DEVICE == "cuda" and not torch.cuda.is_available():
        pytest.fail("ICM_TEST_DEVICE=cuda but torch sees no GPU", pytrace=False)
    return torch


def backend(dtype: str):
    from icm_cli.backends.loading import load_backend
    from icm_cli.foundation.config import BackendConfig

    return load_backend(BackendConfig(model=MODEL, dtype=dtype, device=DEVICE))


def test_the_shipped_config_labels_on_cuda_with_device_auto(torch_cuda, tmp_path):
    out = tmp_path / "labels.jsonl"
    result = icm("label", "examples/tweets-1000.jsonl", "-c", "configs/tweets-sentiment.yaml", *model_args(),
                 "-o", str(out), "--quiet")
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(Path(f"{out}.summary.json").read_text())
    assert summary["rows"] == 1000 and summary["signal"]["verdict"] in ("signal", "weak", "none")
    assert summary["zero_shot_rule"]
    assert len([line for line in out.read_text(encoding="utf-8").split("\n") if line]) == 1000


def test_dry_run_probe_on_cuda(torch_cuda):
    result = icm("label", "examples/tweets-64.jsonl", "-c", "configs/tweets-sentiment.yaml", *model_args(),
                 "--dry-run", "--probe")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "tokens/s" in result.stdout + result.stderr


def test_float32_search_on_the_fast_path_labels_as_from_scratch(torch_cuda):
    from icm_cli.foundation.config import SearchConfig
    from icm_cli.algorithm.scoring import CoherenceScorer, PromptSet
    from icm_cli.algorithm.search import Problem, run_search

    rows = [json.loads(line) for line in (ROOT / "examples" / "tweets-64.jsonl").read_text().splitlines()][:16]
    prompts = PromptSet(tuple(f"Tweet: {r['text']}\nSentiment:" for r in rows), ("positive", "negative"),
                        calibrate=True)
    hf = backend("float32")
    assert hf.attention == ("tree" if DEVICE == "cuda" else "pieces")
    params = SearchConfig(initial_labels=2, iterations=30, seed=2)
    fast = run_search(Problem(len(rows), 2), CoherenceScorer(prompts, hf), params)
    hf.reuse_prefixes = False
    slow = run_search(Problem(len(rows), 2), CoherenceScorer(prompts, hf), params)
    assert fast.labels == slow.labels
    assert fast.utility == pytest.approx(slow.utility, abs=1e-3)


def test_no_tensor_is_made_without_a_device_on_cuda(torch_cuda):
    from icm_cli.algorithm.scoring import CoherenceScorer, PromptSet

    prompts = PromptSet(tuple(f"Tweet: t{k} is {'good' if k % 2 else 'bad'}\nSentiment:" for k in range(6)),
                        ("positive", "negative"), calibrate=True)
    hf = backend("bfloat16")
    requests, _ = CoherenceScorer(prompts, hf).requests(tuple(random.Random(1).choice([0, 1]) for _ in range(6)))
    want = hf.score(requests)
    hf.forget()
    with torch_cuda.device("meta"):
        got = hf.score(requests)
    for a, b in zip(got, want):
        assert a == pytest.approx(b, abs=1e-2)


def test_a_run_killed_mid_transfer_resumes_to_every_row(torch_cuda, tmp_path):
    out = tmp_path / "labels.jsonl"
    config = tmp_path / "c.yaml"
    config.write_text((ROOT / "configs" / "tweets-sentiment.yaml").read_text()
                      + "transfer:\n  chunk_size: 64\n  calibration_size: 64\n")
    args = ["label", "examples/tweets-1000.jsonl", "-c", str(config), *model_args(), "-o", str(out), "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-m", "icm_cli.cli", *args], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE, text=True)
    chunks = Path(f"{out}.checkpoint") / "chunks.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if chunks.exists() and chunks.stat().st_size > 0:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.05)
    proc.wait(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before it could be killed mid-transfer")
    result = icm(*args, "--resume")
    assert result.returncode == 0, result.stderr[-2000:]
    assert len([line for line in out.read_text(encoding="utf-8").split("\n") if line]) == 1000
