"""The review queue in a real Label Studio: label held-out tweets with the embedded model, export
them with `icm export --format label-studio`, start Label Studio (SQLite, 127.0.0.1, a temporary
data directory), create a project from the exported labelling config, import the tasks with the
official SDK, read them back with their predictions, annotate some as a reviewer would, and read
Label Studio's own JSON export back as gold with `icm eval --gold`.

Label Studio lives in its own virtual environment (ICM_LABEL_STUDIO_VENV, default
.venv-labelstudio; `make test-label-studio` makes it): it pins Django, numpy and openai versions
the project's .venv must not take. The SDK side runs there (tests/label_studio_client.py).
Without it these tests skip; under `make test-label-studio` (ICM_REQUIRE_LABEL_STUDIO=1) they fail.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from typer.testing import CliRunner

from icm_cli.cli import app
from icm_cli.data.corrections import load_corrections
from icm_cli.run.review_export import READING_FIELDS

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("ICM_LABEL_STUDIO_VENV", ROOT / ".venv-labelstudio"))
SERVER, PYTHON = VENV / "bin" / "label-studio", VENV / "bin" / "python"
if not (SERVER.is_file() and PYTHON.is_file()):
    reason = f"Label Studio is not installed in {VENV} (make test-label-studio installs it)"
    if os.environ.get("ICM_REQUIRE_LABEL_STUDIO") == "1":
        pytest.fail(f"ICM_REQUIRE_LABEL_STUDIO=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

pytestmark = [pytest.mark.label_studio, pytest.mark.model]
HELD_OUT = slice(700, 780)  # 80 tweets the shipped configs were not tuned on
REVIEW, ANSWERED = 40, 20
runner = CliRunner()


class LabelStudio:
    """`label-studio start` as a subprocess; started early, waited for when first needed (its
    first start migrates a fresh SQLite database: about a minute on 2 cores)."""

    def __init__(self, data_dir: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = secrets.token_hex(20)
        self.log = open(data_dir / "label-studio.log", "wb")
        env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
               # nothing leaves this machine: no version check, analytics or error reports
               "LATEST_VERSION_CHECK": "false", "COLLECT_ANALYTICS": "false", "SENTRY_DSN": "",
               "FRONTEND_SENTRY_DSN": ""}
        self.proc = subprocess.Popen(
            [str(SERVER), "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(self.port),
             "--username", "reviewer@icm.test", "--password", secrets.token_hex(12), "--user-token", self.token,
             "--enable-legacy-api-token"],
            env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"label-studio exited ({self.proc.returncode}); see {self.log.name}"
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=5) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1)
        raise AssertionError(f"label-studio did not answer on {self.url} within {timeout:.0f} s")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory):
    server = LabelStudio(tmp_path_factory.mktemp("label-studio"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def labelled(label_studio, tmp_path_factory) -> Path:
    """Held-out tweets labelled by the embedded model, with a small core so the run is quick
    (label_studio first: the server migrates its database meanwhile)."""
    work = tmp_path_factory.mktemp("held-out")
    rows = (ROOT / "examples" / "tweets-1000.jsonl").read_text(encoding="utf-8").split("\n")[HELD_OUT]
    (work / "tweets.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    text = (ROOT / "configs" / "tweets-sentiment.yaml").read_text()
    text = text.replace("iterations: 125", "iterations: 10").replace("max_tokens: 1024", "max_tokens: 256")
    (work / "c.yaml").write_text(text)
    subprocess.run([sys.executable, "-m", "icm_cli.cli", "label", "tweets.jsonl", "-c", "c.yaml", "-o",
                    "labels.jsonl", "-q"], cwd=work, check=True, timeout=900)
    return work


def _lines(path: Path) -> list[dict]:
    # split("\n"), not splitlines(): tweets hold characters splitlines() breaks on (e.g. U+0085).
    return [json.loads(x) for x in path.read_text(encoding="utf-8").split("\n") if x.strip()]


def _disputed(data: dict, label: str) -> bool:
    """The readings choose differently (numbers: the reading's probability of the label)."""
    picks = {v if isinstance(v, str) else (label if v >= 0.5 else None)
             for v in (data.get(name) for name in READING_FIELDS) if isinstance(v, (str, int, float))}
    # A core row of a run with several cores has no agreement (None): its label is its core's.
    agreement = data.get("icm_agreement")
    return len(picks) > 1 or (agreement is not None and agreement < 1.0)


def test_a_held_out_run_exports_in_review_order_and_imports_into_label_studio(labelled, label_studio):
    work = labelled
    rows = {r["id"]: r for r in _lines(work / "labels.jsonl")}
    gold = {g["id"]: g["label"] for g in _lines(ROOT / "examples" / "tweets-1000.gold.jsonl") if g["id"] in rows}
    summary = json.loads((work / "labels.jsonl.summary.json").read_text())
    result = runner.invoke(app, ["export", str(work / "labels.jsonl"), "-c", str(work / "c.yaml"), "--format",
                                 "label-studio", "--review", str(REVIEW), "-o", str(work / "tasks.json")])
    assert result.exit_code == 0, result.output
    tasks = json.loads((work / "tasks.json").read_text(encoding="utf-8"))

    # sorted as promised: disputed rows first, then least confident first, the first REVIEW of them
    keys = [(not _disputed(t["data"], t["predictions"][0]["result"][0]["value"]["choices"][0]),
             t["predictions"][0]["score"]) for t in tasks]
    assert keys == sorted(keys) and len(tasks) == REVIEW
    everyone = sorted((not _disputed(r, r["label"]), r["confidence"]) for r in rows.values())
    assert keys == everyone[:REVIEW]

    order = [t["data"]["id"] for t in tasks]
    answers = {i: gold[i] for i in order[:ANSWERED]}  # a reviewer goes through the queue from the top
    (work / "answers.json").write_text(json.dumps(answers))
    label_studio.wait_ready()
    out = work / "label-studio"
    out.mkdir()
    subprocess.run([str(PYTHON), str(ROOT / "tests" / "label_studio_client.py"), label_studio.url,
                    label_studio.token, str(work / "tasks.json"), str(work / "tasks.label_config.xml"),
                    str(work / "answers.json"), str(out)], check=True, timeout=300)

    back = json.loads((out / "tasks.json").read_text())
    assert back["imported"] == REVIEW
    assert [t["data"]["id"] for t in back["tasks"]] == order  # Label Studio's ids follow the queue
    for task in back["tasks"]:
        row = rows[task["data"]["id"]]
        (prediction,) = task["predictions"]
        assert prediction["model_version"] == summary["config_hash"]
        assert prediction["score"] == pytest.approx(row["confidence"])
        assert prediction["result"][0]["value"]["choices"] == [row["label"]]
        assert task["data"]["icm_source"] == row["icm_source"] and "label" not in task["data"]

    export = str(out / "export.json")
    corrections = load_corrections(export)
    assert (corrections.format, corrections.labels, corrections.unanswered) == ("label-studio", answers,
                                                                                 REVIEW - ANSWERED)
    result = runner.invoke(app, ["eval", str(work / "labels.jsonl"), "--gold", export, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    right = sum(rows[i]["label"] == answers[i] for i in answers)
    assert report["n"] == ANSWERED and report["accuracy"] == pytest.approx(right / ANSWERED)
