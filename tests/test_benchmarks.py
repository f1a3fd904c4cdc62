"""Every benchmark part runs, small (a few rows, a few iterations), so a bench cannot rot unseen:
`make bench`'s transfer part once failed on an API change and nothing caught it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from icm_cli.backends.loading import load_backend
from icm_cli.foundation.config import BackendConfig, HFOptions
from llama_server import SERVED_MODEL, llama_server  # noqa: F401 - fixture by name

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
pytestmark = [pytest.mark.model, pytest.mark.slow, pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")]


def test_every_part_of_bench_scoring_runs(vllm_cpu, llama_server, capsys):  # noqa: F811
    import bench_scoring as bs

    backends = {"pieces": load_backend(BackendConfig(dtype="float32")),
                "tree": load_backend(BackendConfig(dtype="float32", hf=HFOptions(attention="tree")))}
    parts = {"engine", "transfer", "scaling", "reference", "attention", "server", "vllm", "demo"}
    results = bs.run_parts(parts, bs.SMOKE, "float32", llama_server.url, SERVED_MODEL, vllm_cpu, backends)
    assert results["engine_efficiency"] > 0 and results["search_evaluations"] >= 1
    assert results["transfer"]["rows"] == bs.SMOKE.transfer_rows and results["transfer"]["tokens"] > 0
    assert results["scaling"][0]["n"] == bs.SMOKE.scaling[0]
    assert results["reference"]["labels_identical"] is True
    assert results["attention"]["labels_identical"] is True
    assert results["server"]["transfer"]["rows"] == bs.SMOKE.server_rows
    assert results["vllm"]["transfer"]["rows"] == bs.SMOKE.transfer_rows
    assert results["demo"]["hf"]["accuracy"] is not None
    json.dumps(results)  # the bench ends with this line


def test_every_part_of_the_gpu_bench_runs_on_a_cpu_with_tiny_models(tmp_path):
    shape = tmp_path / "shape"
    shape.mkdir()
    from icm_cli.backends.embedded import embedded_model_dir

    source = Path(embedded_model_dir(lambda _: None, False))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (shape / name).write_bytes((source / name).read_bytes())
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_gpu.py"), "--smoke", "--device", "cpu",
                           "--shapes", "270m,8b", "--shape-dir", str(shape), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["icm_label_1000"]["exit_code"] == 0
    assert results["270m"]["engine_efficiency"] > 0 and results["8b"]["transfer"]["rows"] > 0
    assert results["exactness"]["float32_search_labels_identical"] is True


def test_the_scale_bench_runs_small(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_scale.py"), "--sizes", "3000", "--no-real",
                           "--work", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])
