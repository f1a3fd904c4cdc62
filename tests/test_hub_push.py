"""`icm export --push-to-hub ORG/NAME`: tested up to the client. Nothing here reaches the Hub:
the command runs with HF_ENDPOINT pointing at tests/fake_hub.py on 127.0.0.1, which records what
huggingface_hub and datasets send (the repository, its visibility, the card, the Parquet shard),
and the token given in HF_TOKEN must reach that server and nothing else: not the terminal, not
a file.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from fake_hub import FakeHub

ROOT = Path(__file__).resolve().parents[1]
TWEETS = ROOT / "configs" / "tweets-sentiment.yaml"
TOKEN = "hf_icmTestTokenNeverShown0123456789"


def _labels(tmp_path: Path, summary: bool = True) -> Path:
    rows = [{"id": f"t{k}", "text": f"tweet {k}", "label": "positive" if k % 2 else "negative",
             "confidence": 0.6 + k / 100, "icm_source": "core"} for k in range(6)]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if summary:
        (tmp_path / "labels.jsonl.summary.json").write_text(json.dumps(
            {"config_hash": "0123456789ab", "model": "gemma-3-270m (embedded)", "rows": 6, "core_rows": 6,
             "transfer_rows": 0, "signal": {"verdict": "signal", "reason": "the readings follow the words"}}))
    return path


def _icm(tmp_path: Path, hub: FakeHub, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN, "HF_HOME": str(tmp_path / "hf-home"),
           # the LFS protocol rather than Xet storage (see fake_hub), and no request leaves 127.0.0.1
           "HF_HUB_DISABLE_XET": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1"}
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else src
    return subprocess.run([sys.executable, "-m", "icm_cli.cli", "export", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def _no_token_anywhere(tmp_path: Path, proc: subprocess.CompletedProcess) -> None:
    assert TOKEN not in proc.stdout and TOKEN not in proc.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), f"the token was written into {path}"


def test_push_sends_the_rows_and_the_summary_as_the_card(tmp_path):
    labels = _labels(tmp_path)
    with FakeHub() as hub:
        proc = _icm(tmp_path, hub, str(labels), "-c", str(TWEETS), "--format", "classification",
                    "--min-confidence", "0.62", "--push-to-hub", "icm-org/tweets-labels", "--private")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""  # pushing without -o writes no rows to stdout
    assert proc.stderr.strip() == (f"icm export: 6 rows in, 4 kept (dropped: 2 under confidence 0.62); "
                                   f"classification rows to {hub.url}/datasets/icm-org/tweets-labels")
    assert [(c["organization"], c["name"], c["type"]) for c in hub.created] == [("icm-org", "tweets-labels", "dataset")]
    repo = hub.repos["icm-org/tweets-labels"]
    assert repo.private

    shard = pq.read_table(io.BytesIO(repo.files["data/train-00000-of-00001.parquet"]))
    assert shard.column_names == ["text", "label"]
    assert shard.column("text").to_pylist() == [f"tweet {k}" for k in (2, 3, 4, 5)]
    assert shard.column("label").to_pylist() == [1, 0, 1, 0]  # a ClassLabel over (positive, negative)

    card = repo.files["README.md"].decode()
    assert card.startswith("---\n") and "dataset_info:" in card and "'0': positive" in card  # datasets' metadata
    assert "Export: 6 rows in, 4 kept (dropped: 2 under confidence 0.62); classification rows." in card
    assert "- config hash: 0123456789ab" in card and "- signal check: signal: the readings follow the words" in card
    assert '"config_hash": "0123456789ab"' in card  # the whole summary, as icm label wrote it
    assert [c["summary"] for c in repo.commits] == ["icm: dataset card", "icm export: 6 rows in, 4 kept "
                                                                         "(dropped: 2 under confidence 0.62)"]

    api_calls = [r for r in hub.requests if r.path.startswith("/api/datasets/") or r.path == "/api/repos/create"]
    assert api_calls and all(r.authorization == f"Bearer {TOKEN}" for r in api_calls)
    _no_token_anywhere(tmp_path, proc)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.jsonl", "labels.jsonl.summary.json"]


def test_push_and_a_local_copy_with_o_and_a_card_without_a_summary(tmp_path):
    labels = _labels(tmp_path, summary=False)
    with FakeHub() as hub:
        proc = _icm(tmp_path, hub, str(labels), "-c", str(TWEETS), "--format", "classification",
                    "--push-to-hub", "icm-org/public", "-o", "local.jsonl")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip().endswith(f"to {hub.url}/datasets/icm-org/public and local.jsonl")
    assert len((tmp_path / "local.jsonl").read_text().splitlines()) == 6
    repo = hub.repos["icm-org/public"]
    assert not repo.private
    assert "was not beside the labels, so none is given here" in repo.files["README.md"].decode()


def test_a_refused_push_is_one_line_exit_4_and_writes_nothing(tmp_path):
    labels = _labels(tmp_path)
    with FakeHub(fail_with=401) as hub:
        proc = _icm(tmp_path, hub, str(labels), "-c", str(TWEETS), "--format", "classification",
                    "--push-to-hub", "icm-org/tweets", "-o", "local.jsonl")
    assert proc.returncode == 4
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("icm: error: --push-to-hub icm-org/tweets: the push failed: ")
    assert "401" in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "local.jsonl").exists()
    _no_token_anywhere(tmp_path, proc)


@pytest.mark.parametrize("repo_id", ["just-a-name", "org/na me", "a/b/c"])
def test_a_bad_repository_name_is_refused_before_anything_is_read(tmp_path, repo_id):
    with FakeHub() as hub:
        proc = _icm(tmp_path, hub, "absent.jsonl", "-c", str(TWEETS), "--format", "classification",
                    "--push-to-hub", repo_id)
    assert proc.returncode == 2
    assert proc.stderr.startswith(f"icm: error: --push-to-hub {repo_id}: ") and len(proc.stderr.splitlines()) == 1
    assert hub.requests == []
