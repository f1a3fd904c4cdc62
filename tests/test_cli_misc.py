"""`icm label --dry-run`, `icm init` and `icm --help` through the real CLI (no model weights loaded)."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from icm_cli.backends import loading
from icm_cli.cli import app
from icm_cli.config import load_config

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_dry_run_shows_core_transfer_estimates_and_the_exact_first_prompt(monkeypatch):
    def no_model(*_args, **_kwargs):
        raise AssertionError("--dry-run must not load a model")

    monkeypatch.setattr(loading, "load_backend", no_model)
    monkeypatch.setattr(loading, "load_hf_backend", no_model)
    result = runner.invoke(app, ["label", str(ROOT / "examples" / "tweets-16.jsonl"),
                                 "-c", str(ROOT / "configs" / "tweets-sentiment.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "16 rows -> 16 examples: 16 in 1 core(s) labelled by icm, 0 by transfer" in out
    assert "search phase: about" in out and "transfer phase: about 0 tokens" in out
    # The shipped config starts from zero-shot labels: the first prompts are single tweets.
    assert "exactly as the model reads it" in out
    assert "Sentiment: positive" not in out and "Sentiment: negative" not in out
    assert "' positive', ' negative'" in out


def test_dry_run_from_random_labels_shows_the_seeded_demonstrations(monkeypatch, tmp_path):
    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: (_ for _ in ()).throw(AssertionError("no model")))
    config = tmp_path / "random.yaml"
    text = (ROOT / "configs" / "tweets-sentiment.yaml").read_text()
    assert "init: zero_shot" in text
    config.write_text(text.replace("init: zero_shot", "init: random"))
    result = runner.invoke(app, ["label", str(ROOT / "examples" / "tweets-16.jsonl"), "-c", str(config), "--dry-run"])
    assert result.exit_code == 0, result.output
    # The search's real first prompt: seeded demonstrations, then a query.
    assert "\nSentiment: positive\n\n" in result.stdout or "\nSentiment: negative\n\n" in result.stdout


def test_dry_run_of_more_rows_than_a_core_states_the_transfer(monkeypatch):
    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: (_ for _ in ()).throw(AssertionError("no model")))
    result = runner.invoke(app, ["label", str(ROOT / "examples" / "tweets-64.jsonl"),
                                 "-c", str(ROOT / "configs" / "tweets-sentiment.yaml"), "--dry-run"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.startswith("64 rows -> 64 examples"))
    core, transfer = (int(n) for n in re.findall(r"(\d+) (?:in 1 core|by transfer)", line))
    assert core + transfer == 64 and 16 < core < 64
    tokens = int(re.search(r"transfer phase: about ([\d,]+) tokens", result.stdout).group(1).replace(",", ""))
    assert tokens > 20 * transfer  # every transferred tweet costs its own tokens


def test_init_writes_a_config_that_loads_for_every_task_type(tmp_path):
    for kind in ("classification", "claims", "comparison"):
        path = tmp_path / f"{kind}.yaml"
        result = runner.invoke(app, ["init", "--type", kind, "-o", str(path)])
        assert result.exit_code == 0, result.output
        assert load_config(path).task.type == kind
        assert "#" in path.read_text()  # commented
    again = runner.invoke(app, ["init", "-o", str(tmp_path / "claims.yaml")])
    assert again.exit_code == 2 and "--force" in again.stderr
    wrong = runner.invoke(app, ["init", "--type", "regression", "-o", str(tmp_path / "x.yaml")])
    assert wrong.exit_code == 2 and "classification, claims, comparison" in wrong.stderr


def test_help_documents_exit_codes():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for code in ("0 done", "1 eval accuracy under --min-accuracy", "2 usage or input error", "3 backend", "130 interrupted"):
        assert code in text
