"""The names notebooks call keep working from the package itself (README, "From Python")."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import icm_cli

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", [n for n in icm_cli.__all__ if n != "__version__"])
def test_every_public_name_resolves_to_what_its_module_defines(name):
    value = getattr(icm_cli, name)
    assert value.__name__ == name and value.__module__.startswith("icm_cli.")


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError):
        icm_cli.no_such_thing  # noqa: B018


def test_importing_the_package_loads_no_floor():
    code = "import sys, icm_cli; print(sorted(m for m in sys.modules if m.startswith('icm_cli.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"


def test_a_dry_run_from_python(capfd):
    from icm_cli import LabelJob, load_config, run_label

    config = load_config(ROOT / "configs" / "tweets-sentiment.yaml")
    assert run_label(LabelJob(str(ROOT / "examples" / "tweets-16.jsonl"), config, dry_run=True, quiet=True)) is None
    printed = capfd.readouterr()
    assert "search phase: about" in printed.out + printed.err
    assert "First ride in a Google self-driving car" in printed.out + printed.err
