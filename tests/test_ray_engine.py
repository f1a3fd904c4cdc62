"""`icm label --engine ray` on a local Ray cluster (the 2 CPUs of a test machine), with the real
embedded model: the labels are exactly the local run's, and a run killed during its transfer is
completed by running the same command again, which skips the shards already written.

Under plain pytest without Ray installed these skip; under `make test` (ICM_REQUIRE_RAY=1) they fail.
"""

from __future__ import annotations

import glob
import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if importlib.util.find_spec("ray") is None:
    reason = "ray is not installed (pip install 'icm-cli[ray]')"
    if os.environ.get("ICM_REQUIRE_RAY") == "1":
        pytest.fail(f"ICM_REQUIRE_RAY=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

pytestmark = pytest.mark.model
ROWS = 120


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    """120 tweets none of the shipped configs was tuned on, and a small core so the test is quick."""
    work = tmp_path_factory.mktemp("ray")
    rows = (ROOT / "examples" / "tweets-1000.jsonl").read_text(encoding="utf-8").split("\n")[500:620]
    (work / "tweets.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    text = (ROOT / "configs" / "tweets-sentiment.yaml").read_text()
    text = text.replace("iterations: 125", "iterations: 10").replace("max_tokens: 1024", "max_tokens: 256")
    text += "transfer:\n  chunk_size: 64\nray:\n  actors: 1\n  batch_size: 16\n  cpus: 2\n  object_store_mib: 256\n"
    (work / "c.yaml").write_text(text)
    return work


LABEL = ("label", "tweets.jsonl", "-c", "c.yaml", "-q")  # the command line every run here starts with


def icm(work: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "icm_cli.cli", *LABEL, *args]


def rows_in(paths: list[str]) -> list[dict]:
    return [json.loads(line) for path in paths for line in Path(path).read_text(encoding="utf-8").split("\n") if line]


def labels_in(paths: list[str]) -> dict[str, tuple]:
    out = {}
    for row in rows_in(paths):
        assert row["id"] not in out, f"{row['id']} written twice"
        out[row["id"]] = (row["label"], row["confidence"], row["icm_source"])
    return out


@pytest.mark.slow
def test_the_ray_engine_gives_the_local_labels_and_completes_a_killed_run(setup):
    work = setup
    subprocess.run(icm(work, "-o", "local.jsonl"), cwd=work, check=True, timeout=900)
    local = labels_in([str(work / "local.jsonl")])

    out = work / "shards"
    proc = subprocess.Popen(icm(work, "-o", "shards", "--engine", "ray"), cwd=work, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    # Killed (as a preempted node is) once the actors have written a few shards, not all.
    while time.monotonic() < deadline and proc.poll() is None:
        if len(glob.glob(str(out / "part-*.jsonl"))) >= 3:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    written = labels_in(glob.glob(str(out / "part-*.jsonl")))
    assert 0 < len(written) < ROWS and not (out / "icm-summary.json").exists()

    again = subprocess.run(icm(work, "-o", "shards", "--engine", "ray"), cwd=work, capture_output=True, timeout=900)
    assert again.returncode == 0, again.stderr.decode()[-3000:]
    assert "Traceback" not in again.stderr.decode()
    for ray_chatter in ("is deprecated", "Progress bars disabled", "execution finished"):  # icm's lines say these
        assert ray_chatter not in again.stderr.decode()
    shards = glob.glob(str(out / "part-*.jsonl"))
    assert labels_in(shards) == local  # every row once, with the local run's label and confidence
    summary = json.loads((out / "icm-summary.json").read_text())
    assert summary["engine"] == "ray" and summary["rows"] == ROWS
    assert summary["rows_this_run"] == ROWS - len(written)  # the shards written before were skipped
    assert sum(summary["label_counts"].values()) == ROWS
    assert summary["signal"]["verdict"] in ("signal", "weak", "none")
    assert not (out / "icm-checkpoint").exists() and not list(out.glob(".*.tmp"))


@pytest.mark.slow
def test_an_unconfirmed_departure_reads_zero_shot_only_on_the_actors_too(setup, monkeypatch):
    """The driver decides (here: every first core departs, no second core confirms it) and ships
    the readings' weights; the actors then read the rows zero-shot only, as a local run does, and
    write the local run's labels. In-process (typer's runner) so that the decision can be forced;
    the actors are Ray's own processes."""
    import ray
    from typer.testing import CliRunner

    from icm_cli.cli import app
    from icm_cli.run import second_core, signal_check

    monkeypatch.setattr(second_core, "DEPARTS", 1.01)
    monkeypatch.setattr(signal_check.TwoCores, "confirms", lambda self: False)
    monkeypatch.chdir(setup)
    # The departure is weighed only where the zero-shot reading is averaged in beside the two cores;
    # under transfer.zero_shot auto that depends on the two cores' kappa with it, which moves with
    # the CPU's arithmetic (a CI machine's cores agreed with zero-shot, and nothing was weighed).
    label = [*LABEL, "--set", "transfer.zero_shot=on"]
    local = CliRunner().invoke(app, [*label, "-o", "forced.jsonl"])
    assert local.exit_code == 0, local.output
    summary = json.loads((setup / "forced.jsonl.summary.json").read_text())
    assert summary["second_core"] is True and summary["zero_shot_averaged"] is True
    assert summary["departure_confirmed"] is False and summary["reading_weights"] == [0.0, 0.0, 1.0]
    try:
        far = CliRunner().invoke(app, [*label, "-o", "forced-shards", "--engine", "ray"])
    finally:
        ray.shutdown()
    assert far.exit_code == 0, far.output
    shards = glob.glob(str(setup / "forced-shards" / "part-*.jsonl"))
    assert labels_in(shards) == labels_in([str(setup / "forced.jsonl")])
    transferred = [row for row in rows_in(shards) if row["icm_source"] == "transfer"]
    assert transferred and all(row.get("icm_agreement") is None for row in transferred)
    assert json.loads((setup / "forced-shards" / "icm-summary.json").read_text())["reading_weights"] == [0.0, 0.0, 1.0]


@pytest.mark.slow
def test_input_that_changes_under_the_run_is_refused_not_summarised(setup, monkeypatch):
    """The driver counts the rows and the actors read them again: a row added to the input between
    the two (a file still being written) is not summarised as done. In-process, so that the input
    can be changed at the moment the transfer starts; the actors are Ray's own processes."""
    import ray
    from typer.testing import CliRunner

    from icm_cli.cli import app
    from icm_cli.run import ray_engine

    monkeypatch.chdir(setup)
    data = setup / "growing.jsonl"
    data.write_text((setup / "tweets.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    real_transfer = ray_engine.run_transfer

    def transfer_after_a_row_is_added(*args, **kwargs):
        with open(data, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": "added-late", "text": "what a lovely day this is"}) + "\n")
        return real_transfer(*args, **kwargs)

    monkeypatch.setattr(ray_engine, "run_transfer", transfer_after_a_row_is_added)
    try:
        result = CliRunner().invoke(app, ["label", "growing.jsonl", "-c", "c.yaml", "-q", "-o", "grown",
                                          "--engine", "ray"])
    finally:
        ray.shutdown()
    assert result.exit_code == 2, result.output
    assert (f"grown: the shards hold {ROWS + 1} rows for {ROWS} input rows; Ray read other "
            "rows than the driver (did the input change?)") in " ".join(result.output.split())
    assert not (setup / "grown" / "icm-summary.json").exists()
    assert "added-late" in labels_in(glob.glob(str(setup / "grown" / "part-*.jsonl")))
    # The same command again: the checkpoint's input is not this input; the line names the way out.
    monkeypatch.setattr(ray_engine, "run_transfer", real_transfer)
    command = ["label", "growing.jsonl", "-c", "c.yaml", "-q", "-o", "grown", "--engine", "ray"]
    again = CliRunner().invoke(app, command)
    assert again.exit_code == 2 and ("the input data changed since the checkpoint; refusing to resume; pass --force "
                                     "to start over (it removes the shards written)") in " ".join(again.output.split())
    try:
        over = CliRunner().invoke(app, [*command, "--force"])
    finally:
        ray.shutdown()
    assert over.exit_code == 0, over.output
    assert len(labels_in(glob.glob(str(setup / "grown" / "part-*.jsonl")))) == ROWS + 1
    assert json.loads((setup / "grown" / "icm-summary.json").read_text())["rows"] == ROWS + 1
