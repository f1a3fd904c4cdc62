"""What a long run meets when things go wrong: Ctrl-C, SIGTERM and SIGHUP, a full disk, an
unwritable folder, a second run on the same OUT, a backend that dies, a resume after a harmless
change. Each stop keeps the finished work, removes its temporary files, and ends with one line
(the command that continues, where there is something to continue). A fake backend (the run's
logic is the real one); real kills of the real model are in tests/test_resume.py."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shlex
import signal
from pathlib import Path
from typing import Any, Optional

import pytest
from typer.testing import CliRunner

from icm_cli.data import output
from icm_cli.backends import loading
from icm_cli.run.checkpoint import Checkpoint, checkpoint_path
from icm_cli.cli import app
from icm_cli.foundation.config import BackendConfig, Config
from icm_cli.foundation.errors import BackendError, InputError
from icm_cli.data.run_lock import RunLock, lock_path
from icm_cli.run.runner import RunState
from icm_cli.algorithm.transfer import TransferChunk

from fakes import BAD, GOOD, SentimentBackend

CONFIG = """\
task:
  template: "Tweet: {text}\\nSentiment:"
  labels: [positive, negative]
  id_field: id
search:
  initial_labels: 2
  iterations: 10
core:
  max_tokens: 64
transfer:
  chunk_size: 4
  calibration_size: 6
"""


class Tripwire(SentimentBackend):
    """The fake model, which does `action` on its `when`-th score call."""

    def __init__(self, when: Optional[int] = None, action: Any = None):
        super().__init__()
        self.when, self.action = when, action

    def score(self, requests):
        if self.when is not None and self.calls + 1 == self.when:
            self.calls += 1
            self.action()
        return super().score(requests)


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    good, bad = sorted(GOOD), sorted(BAD)
    rows = [{"id": f"{k:03d}", "text": f"tweet {k} was {(good if k % 3 else bad)[k % 5]} today"} for k in range(40)]
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "c.yaml").write_text(CONFIG)
    return tmp_path


def use(monkeypatch, backend: SentimentBackend) -> None:
    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: backend)


def label(*extra: str):
    return CliRunner().invoke(app, ["label", "data.jsonl", "-c", "c.yaml", "-o", "out.jsonl", "-q", *extra])


def leftovers(workdir: Path) -> list[str]:
    """What a stopped run may not leave: temporary files and the lock."""
    return sorted(p.name for p in workdir.iterdir() if p.name.endswith(".tmp") or p.name.endswith(".lock"))


def one_line(result) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def continue_command(line: str) -> list[str]:
    """The command the one line says continues the run, as arguments for the CLI."""
    assert "continue with: icm label " in line, line
    return shlex.split(line.split("continue with: ", 1)[1])[1:]


def uninterrupted(workdir: Path, monkeypatch) -> str:
    use(monkeypatch, SentimentBackend())
    result = CliRunner().invoke(app, ["label", "data.jsonl", "-c", "c.yaml", "-o", "ref.jsonl", "-q"])
    assert result.exit_code == 0, result.stderr
    return (workdir / "ref.jsonl").read_text()


# ---- interrupts and stop signals


def test_ctrl_c_before_any_work_says_interrupted_and_leaves_nothing(workdir, monkeypatch):
    def load(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(loading, "load_backend", load)
    result = label()
    assert result.exit_code == 130
    assert one_line(result) == "icm: interrupted"
    assert not checkpoint_path(workdir / "out.jsonl").exists() and leftovers(workdir) == []


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
@pytest.mark.parametrize("when", [3, 12])  # in the search; in the transfer
def test_a_stop_keeps_the_checkpoint_and_names_the_command_that_continues(workdir, monkeypatch, signame, code, when):
    reference = uninterrupted(workdir, monkeypatch)
    sig = getattr(signal, signame)
    use(monkeypatch, Tripwire(when, lambda: os.kill(os.getpid(), sig)))
    result = label()
    assert result.exit_code == code, result.stderr
    line = one_line(result)
    what = "interrupted" if signame == "SIGINT" else f"stopped by {signame}"
    assert line.startswith(f"icm: {what}; the checkpoint keeps the finished work: continue with: ")
    assert not (workdir / "out.jsonl").exists() and leftovers(workdir) == []
    assert (checkpoint_path(workdir / "out.jsonl") / "state.json").exists()
    # The signal handlers are the process's own again once the command returns.
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    use(monkeypatch, SentimentBackend())
    again = CliRunner().invoke(app, continue_command(line))
    assert again.exit_code == 0, again.stderr
    assert (workdir / "out.jsonl").read_text() == reference
    assert not checkpoint_path(workdir / "out.jsonl").exists() and leftovers(workdir) == []


def test_a_backend_that_dies_mid_run_ends_with_the_command_that_continues(workdir, monkeypatch):
    def die():
        raise BackendError("http://gpu01:8000/v1: connection refused (5 attempts over 1 server)")

    use(monkeypatch, Tripwire(12, die))
    result = label()
    assert result.exit_code == 3
    line = one_line(result)
    assert line.startswith("icm: error: http://gpu01:8000/v1: connection refused")
    assert "lost" not in line and "--force" not in line
    assert continue_command(line)[-1] == "--resume"
    assert leftovers(workdir) == []


# ---- output that cannot be written


def test_a_full_disk_mid_run_is_one_line_exit_4_and_keeps_the_checkpoint(workdir, monkeypatch):
    use(monkeypatch, SentimentBackend())
    written = []

    def full(self, rows):
        written.append(len(rows))
        if len(written) >= 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(output.RowWriter, "_write", full)
    result = label()
    assert result.exit_code == 4
    line = one_line(result)
    assert line.startswith("icm: error: out.jsonl: cannot write (No space left on device); the checkpoint keeps")
    assert continue_command(line)[-1] == "--resume"
    assert not (workdir / "out.jsonl").exists() and leftovers(workdir) == []
    assert (checkpoint_path(workdir / "out.jsonl") / "chunks.jsonl").exists()


def test_an_unwritable_output_folder_is_refused_before_the_model_loads(workdir, monkeypatch):
    def load(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(loading, "load_backend", load)
    if os.access("/sys", os.W_OK) and os.getuid() != 0:
        pytest.skip("needs a folder nobody may create files in")
    result = CliRunner().invoke(app, ["label", "data.jsonl", "-c", "c.yaml", "-o", "/sys/out.jsonl", "-q"])
    assert result.exit_code == 2
    assert one_line(result) == "icm: error: /sys/out.jsonl: cannot write in /sys (Permission denied)"


def test_out_that_is_a_directory_is_refused_before_the_model_loads(workdir, monkeypatch):
    monkeypatch.setattr(loading, "load_backend", lambda *a, **k: pytest.fail("model loaded"))
    (workdir / "out.jsonl").mkdir()
    result = label("--force")
    assert result.exit_code == 2 and "out.jsonl: is a directory" in one_line(result)


# ---- one run per OUT


def test_a_second_run_on_the_same_out_is_refused_naming_the_holder(workdir, monkeypatch):
    use(monkeypatch, SentimentBackend())
    with RunLock(workdir / "out.jsonl"):
        result = label()
        assert result.exit_code == 2
        line = one_line(result)
        assert f"out.jsonl: another icm run is writing it (pid {os.getpid()} on " in line
        assert not checkpoint_path(workdir / "out.jsonl").exists()
    assert not lock_path(workdir / "out.jsonl").exists()  # released and removed
    assert label().exit_code == 0 and not lock_path(workdir / "out.jsonl").exists()


def test_a_lock_left_by_a_dead_run_does_not_block(workdir, monkeypatch):
    use(monkeypatch, SentimentBackend())
    lock_path(workdir / "out.jsonl").write_text('{"pid": 999999, "host": "gone"}\n')  # a file, no lock held
    (workdir / ".out.jsonl.1a2b3c4d.tmp").write_text("half")  # a killed run's temporary file
    assert label().exit_code == 0
    assert leftovers(workdir) == []


# ---- resume: what may change, what may not


def checkpointed(tmp_path: Path, config: Config) -> Path:
    path = tmp_path / "out.jsonl.checkpoint"
    store = Checkpoint(path, config, "d" * 16)
    store.check_model("model A")
    store.save(RunState())
    return path


def test_resume_accepts_settings_that_cannot_change_a_label(tmp_path):
    before = Config(backend=BackendConfig(type="openai", base_urls=("http://a:8000/v1",), timeout_s=60, retries=2,
                                          concurrency=4))
    path = checkpointed(tmp_path, before)
    after = dataclasses.replace(before, backend=dataclasses.replace(
        before.backend, base_urls=("http://b:9000/v1", "http://c:9000/v1"), timeout_s=600, retries=9, concurrency=64,
        backoff_s=2.0, kv_cache_mib=4096))
    Checkpoint(path, after, "d" * 16).load()


@pytest.mark.parametrize("key, value", [("model", "other/model"), ("dtype", "float32"), ("echo", True)])
def test_resume_refuses_settings_that_change_labels_naming_the_key(tmp_path, key, value):
    before = Config(backend=BackendConfig(type="openai", base_urls=("http://a:8000/v1",)))
    path = checkpointed(tmp_path, before)
    after = dataclasses.replace(before, backend=dataclasses.replace(before.backend, **{key: value}))
    with pytest.raises(InputError, match=rf"the config changed since the checkpoint: backend\.(openai\.)?{key} was"):
        Checkpoint(path, after, "d" * 16).load()
    # The refusal names the way out, as the command that opened the checkpoint spells it.
    with pytest.raises(InputError, match=r"refusing to resume .*; pass --force to start over$"):
        Checkpoint(path, after, "d" * 16, start_over="pass --force to start over").load()
    with pytest.raises(InputError, match=r"; run without --resume, with --force, to start over$"):
        Checkpoint(path, after, "d" * 16).load()
    (path / "state.json").write_text("not json")  # every refusal to resume names the same way out
    with pytest.raises(InputError, match=r"checkpoint is unreadable .*; pass --force to start over$"):
        Checkpoint(path, after, "d" * 16, start_over="pass --force to start over").load()


def test_resume_refuses_another_model_and_warns_on_another_icm_version(tmp_path):
    path = checkpointed(tmp_path, Config())
    doc = json.loads((path / "state.json").read_text())
    (path / "state.json").write_text(json.dumps({**doc, "icm_version": "0.0.1"}))
    warnings: list[str] = []
    store = Checkpoint(path, Config(), "d" * 16, warn=warnings.append)
    store.load()
    assert warnings == [f"the checkpoint was written by icm 0.0.1, this is icm {doc['icm_version']}; resuming"]
    with pytest.raises(InputError, match="the model changed since the checkpoint: it was model A, now model B"):
        store.check_model("model B")
    store.check_model("model A")


def test_the_checkpoint_is_one_directory_removed_as_one(workdir, monkeypatch):
    use(monkeypatch, Tripwire(12, lambda: os.kill(os.getpid(), signal.SIGINT)))
    assert label().exit_code == 130
    ckpt = checkpoint_path(workdir / "out.jsonl")
    assert sorted(p.name for p in ckpt.iterdir()) == ["chunks.jsonl", "state.json"]
    assert [p.name for p in workdir.iterdir() if p.name.startswith("out.jsonl")] == [ckpt.name]
    # Refused while it is there, naming it; gone once deleted (nothing else of it is left).
    use(monkeypatch, SentimentBackend())
    refused = label()
    assert refused.exit_code == 2 and one_line(refused).startswith("icm: error: out.jsonl.checkpoint/: ")
    for p in ckpt.iterdir():
        p.unlink()
    ckpt.rmdir()
    assert label().exit_code == 0


def test_a_torn_or_stale_chunk_log_is_cut_where_the_run_goes_on(tmp_path):
    path = tmp_path / "out.jsonl.checkpoint"
    store = Checkpoint(path, Config(), "d" * 16)
    store.save(RunState(calibrated=True))
    chunks = [TransferChunk((k,), (0,), ((-0.1, -2.3),), (1.0,)) for k in range(4)]
    for k, chunk in enumerate(chunks[:3]):
        store.save_chunk(k, chunk)
    with open(path / "chunks.jsonl", "a") as f:
        f.write('{"index": 3, "exam')  # a kill mid-line
    resumed = Checkpoint(path, Config(), "d" * 16)
    logged = iter(resumed.load().chunks)
    assert [next(logged), next(logged)] == chunks[:2]
    # The run found chunk 2 no longer matches its plan: it scores it again and goes on.
    resumed.save_chunk(2, chunks[3])
    lines = (path / "chunks.jsonl").read_text().splitlines()
    assert [json.loads(line)["examples"] for line in lines] == [[0], [1], [3]]


# ---- Ctrl-C while a server hangs

_HUNG_SERVER = r"""
import json, sys, threading, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _send(self, body):
        data = json.dumps(body).encode()
        self.send_response(200); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data))); self.end_headers(); self.wfile.write(data)
    def do_GET(self):
        self._send({"data": [{"id": "m", "max_model_len": 4096}]})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path == "/tokenize":
            return self._send({"tokens": list(range(len(body.get("content", "").split())))})
        print("completions", flush=True)  # accepted: now never answered
        time.sleep(3600)

server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = True
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def test_ctrl_c_with_a_server_that_never_answers_returns_within_10_seconds(tmp_path):
    import subprocess
    import sys
    import time

    server = subprocess.Popen([sys.executable, "-c", _HUNG_SERVER], stdout=subprocess.PIPE, text=True)
    try:
        port = int(server.stdout.readline())
        (tmp_path / "c.yaml").write_text(CONFIG + f"backend:\n  type: openai\n  model: m\n  echo: false\n"
                                                  f"  base_urls: [http://127.0.0.1:{port}/v1]\n  timeout_s: 120\n")
        rows = [{"id": k, "text": f"tweet {k}"} for k in range(40)]
        (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        proc = subprocess.Popen([sys.executable, "-m", "icm_cli.cli", "label", "d.jsonl", "-c", "c.yaml",
                                 "-o", "out.jsonl", "-q"], cwd=tmp_path, stderr=subprocess.PIPE, text=True)
        assert server.stdout.readline().strip() == "completions"  # a request is in flight, and hangs
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        start = time.monotonic()
        _, err = proc.communicate(timeout=30)
        assert time.monotonic() - start < 10, err
        assert proc.returncode == 130, err
        assert "Traceback" not in err and err.strip() == "icm: interrupted", err
        assert leftovers(tmp_path) == []
    finally:
        server.kill()


def test_no_server_at_start_up_says_so_and_mentions_no_loss(workdir):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (workdir / "c.yaml").write_text(CONFIG + f"backend:\n  type: openai\n  model: m\n"
                                             f"  openai:\n    base_urls: [http://127.0.0.1:{port}/v1]\n    retries: 0\n")
    result = label()
    assert result.exit_code == 3
    line = one_line(result)
    assert line.startswith("icm: error: no server answered at start-up") and f"127.0.0.1:{port}" in line, line
    assert "lost" not in line and "resume" not in line and "--force" not in line
    assert leftovers(workdir) == [] and not checkpoint_path(workdir / "out.jsonl").exists()


def test_a_logged_chunk_keeps_its_readings_and_an_older_log_without_them_still_reads(tmp_path):
    path = tmp_path / "out.jsonl.checkpoint"
    store = Checkpoint(path, Config(), "d" * 16)
    store.save(RunState(calibrated=True))
    with_readings = TransferChunk((0, 1), (0, 1), ((-0.1, -2.3), (-2.0, -0.2)), (1.0, 1.0), ((0, 1), (1, 1)))
    store.save_chunk(0, with_readings)
    with open(path / "chunks.jsonl", "a") as f:  # a chunk an earlier version logged
        f.write(json.dumps({"index": 1, "examples": [2], "labels": [0], "scores": [[-0.1, -2.3]],
                            "agreement": [1.0]}) + "\n")
    logged = list(Checkpoint(path, Config(), "d" * 16).load().chunks)
    assert logged[0] == with_readings and logged[1].readings == ()
