"""The shipped GPU configs (vLLM on CUDA, Llama 3.1 8B and 70B) pass a dry run here, where neither a
GPU, vLLM's CUDA build nor the Llama weights are at hand: the config reads, the task fits rows of
its kind, the core is planned and the first prompt shown. The tokenizer is the embedded model's
(`--model` swaps the checkpoint; a dry run loads no weights), so token counts are Gemma's.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.foundation.config import load_config

ROOT = Path(__file__).resolve().parents[1]
GPU_CONFIGS = sorted(ROOT.glob("configs/llama-3.1-*.yaml"))


def rows_for(task: str) -> list[dict]:
    if task == "comparison":
        return [{"id": f"a{k}", "question": f"How do I boil {k} eggs?", "choice": "Put them in boiling water.",
                 "choice_2": "Eggs are a kind of bread."} for k in range(12)]
    if task == "gsm8k":
        return [{"id": f"g{k}", "consistency_id": f"q{k // 3}", "question": f"What is {k} + {k}?",
                 "cot": f"{k} plus {k} is {2 * k + k % 3}.", "answer": str(2 * k + k % 3)} for k in range(12)]
    return [{"id": f"t{k}", "consistency_id": f"q{k // 3}", "question": f"Is the sky {k} metres up?",
             "choice": f"The sky is {k} metres up."} for k in range(12)]


def kind(path: Path) -> str:
    name = path.name
    return "comparison" if "alpaca" in name else "gsm8k" if "gsm8k" in name else "truthfulqa"


def test_there_are_gpu_configs():
    assert len(GPU_CONFIGS) >= 6


@pytest.mark.parametrize("path", GPU_CONFIGS, ids=[p.stem for p in GPU_CONFIGS])
def test_a_gpu_config_passes_a_dry_run(path, tmp_path, monkeypatch):
    import icm_cli.backends.loading as loading

    def refuse(*_, **__):
        raise AssertionError("--dry-run must not load a model")

    monkeypatch.setattr(loading, "load_backend", refuse)
    config = load_config(path)
    assert config.backend.type == "vllm" and config.backend.dtype == "bfloat16"
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows_for(kind(path))))
    from icm_cli.backends.embedded import embedded_model_dir

    tokenizer = str(embedded_model_dir(lambda _: None, False))
    result = CliRunner().invoke(app, ["label", str(data), "-c", str(path), "--model", tokenizer, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "prompt" in result.output.lower()
