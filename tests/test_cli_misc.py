"""`icm label --dry-run`, `icm init` and `icm --help` through the real CLI (no model weights loaded)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from typer.testing import CliRunner

from icm_cli.backends import loading
from icm_cli.cli import app
from icm_cli.foundation.config import load_config

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def test_dry_run_shows_core_transfer_estimates_and_the_exact_first_prompt(monkeypatch):
    def no_model(*_args, **_kwargs):
        raise AssertionError("--dry-run must not load a model")

    monkeypatch.setattr(loading, "load_backend", no_model)
    from icm_cli.backends import hf

    monkeypatch.setattr(hf, "load_hf_backend", no_model)
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
    # The zero-shot reading (transfer.zero_shot: auto, the shipped default) is stated apart.
    alone = re.search(r"\+ about ([\d,]+) tokens for each row's zero-shot reading \(transfer.zero_shot: auto",
                      result.stdout)
    assert alone and int(alone.group(1).replace(",", "")) == tokens
    off = runner.invoke(app, ["label", str(ROOT / "examples" / "tweets-64.jsonl"), "-c",
                              str(ROOT / "configs" / "tweets-sentiment.yaml"), "--dry-run", "--set", "transfer.zero_shot=off"])
    assert off.exit_code == 0 and "zero-shot reading" not in off.stdout


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


@pytest.mark.parametrize("kind", ["directory", "link-to-a-file", "dangling-link", "fifo"])
def test_init_force_replaces_only_a_regular_file(tmp_path, kind):
    out = tmp_path / "icm.yaml"
    precious = tmp_path / "precious.yaml"
    precious.write_text("mine\n")
    if kind == "directory":
        out.mkdir()
    elif kind == "link-to-a-file":
        out.symlink_to(precious)
    elif kind == "dangling-link":
        out.symlink_to(tmp_path / "nowhere.yaml")
    else:
        os.mkfifo(out)
    for extra in ([], ["--force"]):
        result = runner.invoke(app, ["init", "-o", str(out), *extra])
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith(f"icm: error: {out}: ") and len(result.stderr.splitlines()) == 1
        assert "pass --force" not in result.stderr
    assert out.is_symlink() == ("link" in kind) and out.is_dir() == (kind == "directory")
    assert out.is_fifo() == (kind == "fifo") and precious.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["icm.yaml", "precious.yaml"]


def test_init_force_replaces_a_regular_file(tmp_path):
    out = tmp_path / "icm.yaml"
    out.write_text("old\n")
    result = runner.invoke(app, ["init", "-o", str(out), "--force"])
    assert result.exit_code == 0, result.output
    assert load_config(out).task.type == "classification"


def test_help_documents_exit_codes():
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    text = " ".join(result.stdout.split())
    for code in ("0 done", "1 eval accuracy under --min-accuracy or gold ids labelled under --min-coverage",
                 "2 usage or input error", "3 backend", "130 interrupted", "141 stdout closed early"):
        assert code in text


# A closed stdout (`icm eval ... | head -1`): exit 141 like a Unix tool killed by SIGPIPE, nothing on
# stderr. The reader is closed before icm writes anything, so every write fails: no race with head.
def _icm_with_closed_stdout(args: list[str], cwd: Path) -> tuple[int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "icm_cli.cli", *args], cwd=cwd, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    proc.stderr.close()
    return proc.wait(timeout=300), stderr


@pytest.fixture
def eval_files(tmp_path):
    rows = [{"id": i, "label": "positive" if i % 3 else "negative", "confidence": 0.5 + i / 200} for i in range(64)]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    gold = "".join(json.dumps({"id": r["id"], "label": r["label"]}) + "\n" for r in rows)
    (tmp_path / "gold.jsonl").write_text(gold)
    (tmp_path / "gold-65.jsonl").write_text(gold + json.dumps({"id": 64, "label": "positive"}) + "\n")  # one unlabelled
    return tmp_path


@pytest.mark.parametrize("args", [
    ["eval", "labels.jsonl", "--gold", "gold.jsonl"],
    ["eval", "labels.jsonl", "--gold", "gold.jsonl", "--json"],
    ["eval", "labels.jsonl", "--gold", "gold-65.jsonl"],
    ["--help"],
    ["eval", "--help"],
], ids=["eval-table", "eval-json", "eval-gate", "help", "eval-help"])
def test_closed_stdout_exits_141_quietly(eval_files, args):
    code, stderr = _icm_with_closed_stdout(args, eval_files)
    assert "Traceback" not in stderr and "Exception ignored" not in stderr
    assert stderr == ""
    assert code == 141


def test_open_stdout_keeps_the_real_exit_code(eval_files):
    # The control for the test above: the same commands with a reader exit 0 (and 1 for the gate).
    for args, expected in ((["eval", "labels.jsonl", "--gold", "gold.jsonl"], 0),
                           (["eval", "labels.jsonl", "--gold", "gold-65.jsonl"], 1)):
        proc = subprocess.run([sys.executable, "-m", "icm_cli.cli", *args], cwd=eval_files, capture_output=True,
                              timeout=300, check=False)
        assert proc.returncode == expected, proc.stderr
        assert proc.stdout


def test_stdout_closed_detects_a_pipe_without_reader():
    from icm_cli.commands import stdout_pipe

    read_end, write_end = os.pipe()
    with os.fdopen(write_end, "w") as writer:
        assert not stdout_pipe.stdout_closed(writer)
        os.close(read_end)
        assert stdout_pipe.stdout_closed(writer)
    with open(os.devnull, "w") as devnull:
        assert not stdout_pipe.stdout_closed(devnull)


def test_help_reads_as_sentences_not_as_the_source_wraps_them():
    # Docstrings are wrapped to fit the source; shown as written, descriptions broke mid-sentence
    # ("accuracy under\n--min-coverage") at any terminal width. Each paragraph is now one line
    # that the terminal wraps, so on a wide one every command's summary is one line.
    import typer.main

    group = typer.main.get_command(app)
    for command in [group, *group.commands.values()]:
        for paragraph in (command.help or "").split("\n\n"):
            assert "\n" not in paragraph, (command.name, paragraph)
    wide = subprocess.run([sys.executable, "-m", "icm_cli.cli", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250", "TERMINAL_WIDTH": "250"}, timeout=120)
    lines = wide.stdout.splitlines()
    assert any("1 eval accuracy under --min-accuracy or gold ids labelled under --min-coverage, or" in line
               for line in lines), wide.stdout
    for name, command in group.commands.items():
        summary = command.help.split("\n\n")[0]
        assert any(name in line and summary in line for line in lines), (name, wide.stdout)
