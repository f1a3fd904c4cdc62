"""The CLI's shell, no model: `icm init` destinations and sizing, `icm --version`, help shape."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from typer.testing import CliRunner

import icm_cli
from icm_cli.cli import app
from icm_cli.foundation.config import load_config

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("classification", "claims", "comparison")
runner = CliRunner()


def _icm(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The real entry point in a fresh process: what a user's shell sees, tracebacks included."""
    env = {**os.environ, "PYTHONPATH": str(Path(icm_cli.__file__).parents[1])}  # the code under test
    return subprocess.run([sys.executable, "-c", "from icm_cli.cli import main; main()", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_init_into_a_missing_directory_is_one_line_and_exit_2(tmp_path):
    target = tmp_path / "missing" / "x.yaml"
    result = _icm("init", "-o", str(target), cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"icm: error: {target}: ") and "missing" in result.stderr
    assert not target.parent.exists() and result.stdout == ""


@pytest.mark.parametrize("make_bad", ["directory", "file_as_parent"])
def test_init_to_an_unwritable_place_is_an_input_error(tmp_path, make_bad):
    if make_bad == "directory":
        target = tmp_path
    else:
        (tmp_path / "plain").write_text("x")
        target = tmp_path / "plain" / "x.yaml"
    result = runner.invoke(app, ["init", "-o", str(target)])
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith(f"icm: error: {target}: ") and result.stderr.count("\n") == 1
    assert "directory" in result.stderr and "--force" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ([] if make_bad == "directory" else ["plain"])


@pytest.mark.parametrize("kind", KINDS)
def test_init_dash_prints_the_starter_to_stdout_and_writes_no_file(tmp_path, monkeypatch, kind):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init", "--type", kind, "-o", "-"])
    assert result.exit_code == 0, result.output
    assert list(tmp_path.iterdir()) == []
    assert result.stderr == ""  # stdout is the config alone, so `icm init -o - > x.yaml` works
    copy = tmp_path / "from-stdout.yaml"
    copy.write_text(result.stdout)
    assert load_config(copy).task.type == kind


def test_init_dot_slash_dash_is_a_file_named_dash(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["init", "-o", "./-"])
    assert result.exit_code == 0, result.output
    assert load_config(tmp_path / "-").task.type == "classification" and result.stdout == ""


@pytest.mark.parametrize("kind", KINDS)
def test_every_starter_is_sized_like_the_config_measured_on_this_cpu(tmp_path, kind):
    path = tmp_path / "icm.yaml"
    assert runner.invoke(app, ["init", "--type", kind, "-o", str(path)]).exit_code == 0
    starter, measured = load_config(path), load_config(ROOT / "configs" / "tweets-sentiment.yaml")
    for section, names in {"search": ("method", "init", "iterations", "fix_rounds", "final_quench", "objective"),
                           "core": ("max_tokens", "count"),
                           "backend": ("type", "model")}.items():
        for name in names:
            assert getattr(getattr(starter, section), name) == getattr(getattr(measured, section), name), \
                f"{kind}: {section}.{name}"
    text = path.read_text()
    assert re.search(r"GPU.*core\.max_tokens.*search\.iterations", text, re.S)  # what to raise, and where


def test_version_prints_the_installed_distribution_version(tmp_path):
    expected = f"icm {version('icm-cli')}\n"
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout == expected
    real = _icm("--version", cwd=tmp_path)
    assert real.returncode == 0 and real.stdout == expected and real.stderr == ""


@pytest.mark.parametrize("command", [[], ["label"], ["eval"], ["compare"], ["init"]])
def test_help_shows_bare_flags_and_upper_case_arguments(command):
    result = runner.invoke(app, [*command, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    text = result.stdout
    # No Typer type tags (<bool>, <str>, <path>) and no {argument} in the usage line.
    assert not re.search(r"<\w[\w ]*>", text), text
    assert "{" not in text.split("Usage:")[1].splitlines()[0]
    assert re.search(r"--help\s+Show this message", text)
    usage = {"label": "label [OPTIONS] DATA", "eval": "eval [OPTIONS] LABELS", "compare": "compare [OPTIONS] DATA",
             "init": "init [OPTIONS]", None: "[OPTIONS] COMMAND [ARGS]..."}[command[0] if command else None]
    assert usage in text


def test_label_help_lists_flags_bare_and_values_by_kind():
    text = runner.invoke(app, ["label", "--help"], env={"COLUMNS": "120"}).stdout
    for flag, help_start in (("--quiet", "No progress"), ("--force", "Replace"), ("--resume", "Continue"),
                             ("--dry-run", "Validate"), ("--probe", "With --dry-run")):
        assert re.search(rf"{flag}\s+(-\w\s+)?{help_start}", text), flag
    assert re.search(r"--config\s+-c\s+PATH\s+YAML", text)
    assert re.search(r"--seed\s+INTEGER\s+Override", text)
    assert re.search(r"\*\s+DATA\s+Input rows", text)
