"""icm against a real OpenAI-compatible server: llama-cpp-python's, serving the embedded GGUF on
127.0.0.1 (tests/llama_server.py).

End to end through `icm label`, then faults: a server killed mid-run (alone: a one-line error and
exit 3; beside a second server: the run completes on that one), and slow answers and 500s
injected by a small proxy in front of the real server. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable, Optional

import pytest
import yaml

from icm_cli.backends.base import ScoreRequest
from icm_cli.backends.loading import load_backend
from icm_cli.foundation.config import BackendConfig
from icm_cli.foundation.errors import EXIT_BACKEND, EXIT_USAGE, InputError
from llama_server import SERVED_MODEL, LlamaServer, llama_server, start_server  # noqa: F401 - fixture by name

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "tweets-16.jsonl"
pytestmark = pytest.mark.model

LABELS = (" positive", " negative")
DEMOS = "Tweet: I love this\nSentiment: positive\n\nTweet: Worst day ever\nSentiment: negative\n\n"
TEXTS = (
    "What a beautiful morning, feeling great!",
    "My train is late again, so annoying.",
    "Best pizza in town, highly recommend.",
    "I lost my keys and my phone died.",
    "Such a fun party with old friends.",
    "The update broke everything, useless app.",
)
REQUESTS = [ScoreRequest((DEMOS, f"Tweet: {t}\nSentiment:"), LABELS) for t in TEXTS]


def icm_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "icm_cli.cli", *args]


def icm(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(icm_command(*args), capture_output=True, text=True, cwd=ROOT, timeout=timeout)


# What one request costs llama-cpp-python's server grows with the prompt: besides the forward
# pass it keeps the logits of the whole 262k vocabulary at every prompt position (logits_all,
# which any logprobs need). Measured 2026-12-06 on 2 cores (Xeon with AMX): 0.4-0.7 s for a
# 60-token prompt after cached demonstrations, 38-49 s for a 752-token prompt read from nothing,
# 1 s for it with its prefix cached (tests/test_backend_contract.py orders its prompts for that;
# an earlier note here said 1.2 s for 700 tokens, which matches only the cached case). The shipped config's core.max_tokens (1024: one batch of 16, prompts of ~700 tokens)
# makes 20 iterations cost ~15 minutes there; 256 cuts the 16 tweets into four batches of short
# prompts (and runs the multi-batch path through the server too).
BATCH_TOKENS = 256


def write_config(path: Path, urls: list[str], iterations: int = 20, final_quench: bool = True, **backend: Any) -> Path:
    """configs/tweets-sentiment-openai.yaml with these servers, iterations and backend settings."""
    config = yaml.safe_load((ROOT / "configs" / "tweets-sentiment-openai.yaml").read_text())
    assert config["backend"]["model"] == SERVED_MODEL
    config["search"].update(iterations=iterations, final_quench=final_quench)
    config["core"]["max_tokens"] = BATCH_TOKENS
    config["backend"]["openai"].update(base_urls=list(urls), concurrency=2, **backend)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("icm: error:")]


def check_one_line_error(result_stderr: str, names: str) -> str:
    """The run's failure is exactly one line, last on stderr, naming the server, with no traceback."""
    errors = error_lines(result_stderr)
    assert len(errors) == 1, result_stderr[-3000:]
    assert [line for line in result_stderr.splitlines() if line.strip()][-1] == errors[0]
    assert "Traceback" not in result_stderr
    assert names in errors[0], errors[0]
    return errors[0]


def check_labelled(out: Path) -> list[dict]:
    # Split on "\n" only: a tweet holds U+0085, which the output keeps raw and splitlines() splits on.
    inputs = [json.loads(line) for line in SAMPLE.read_text(encoding="utf-8").split("\n") if line]
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").split("\n") if line]
    assert [r["id"] for r in rows] == [r["id"] for r in inputs]
    assert all(r["label"] in ("positive", "negative") and 0.0 <= r["confidence"] <= 1.0 for r in rows)
    return rows


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str, process: Optional[subprocess.Popen] = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before {what}:\n{process.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s:g} s waiting until {what}")
        time.sleep(0.05)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_label_end_to_end_through_the_server(llama_server, tmp_path):
    config = write_config(tmp_path / "openai.yaml", [llama_server.url])
    out = tmp_path / "labels.jsonl"
    result = icm("label", str(SAMPLE), "-c", str(config), "-o", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    rows = check_labelled(out)
    assert len(rows) == 16
    assert "top-k" in result.stderr  # echo: auto saw one-token labels through the server's tokenizer
    summary = json.loads(out.with_name(out.name + ".summary.json").read_text())
    assert sum(summary["label_counts"].values()) == 16 and summary["tokens_scored"] > 0


def test_echo_and_top_k_read_the_same_log_probs(llama_server):
    """The two ways of reading a label agree on the real server.

    Echo is one request per label, and llama-cpp-python sorts the whole vocabulary at every
    echoed position (seconds per request), so one short prompt. The prompt with the label
    appended is computed in other batch sizes than the prompt alone: measured 0.026 apart at
    most on longer prompts, so the same tolerance as for order (see ORDER_TOL in test_backend_contract.py).
    """
    request = [ScoreRequest(("Review: great\nSentiment: positive\n\nReview: awful\nSentiment:",), LABELS)]
    topk = load_backend(BackendConfig(type="openai", base_urls=(llama_server.url,), model=SERVED_MODEL, echo=False))
    echo = load_backend(BackendConfig(type="openai", base_urls=(llama_server.url,), model=SERVED_MODEL, echo=True))
    a, b = topk.score(request)[0], echo.score(request)[0]
    assert topk.stats.topk_floors == 0
    assert a == pytest.approx(b, abs=0.1)
    # llama-cpp-python reads max_tokens 0 as "until the context is full": echo must ask for 1.
    assert echo.echo_max_tokens == 1


def test_prompt_past_the_server_context_is_an_input_error(llama_server):
    # The client is told the context is larger than the server's n_ctx, so the server itself refuses.
    backend = load_backend(BackendConfig(type="openai", base_urls=(llama_server.url,), model=SERVED_MODEL,
                                         max_context=100_000))
    long = ScoreRequest(("word " * 5000,), LABELS)
    with pytest.raises(InputError) as info:
        backend.score([long])
    message = info.value.message
    assert info.value.exit_code == EXIT_USAGE and "\n" not in message
    assert llama_server.url in message and "core.max_tokens" in message


# --------------------------------------------------------------------------- a server killed mid-run


def run_and_kill(victim: LlamaServer, config: Path, out: Path, after_completions: int) -> subprocess.CompletedProcess:
    """Start `icm label`, SIGKILL the victim once it has answered some completions, wait for the run."""
    process = subprocess.Popen(icm_command("label", str(SAMPLE), "-c", str(config), "-o", str(out)),
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: victim.completions_served() >= after_completions, 180,
                   f"{victim.url} answered {after_completions} completions", process)
        assert process.poll() is None
        victim.kill()
        stdout, stderr = process.communicate(timeout=600)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_only_server_killed_mid_run_is_one_line_error_exit_3(tmp_path):
    victim = start_server(n_ctx=2048, log_dir=tmp_path)
    try:
        # Enough iterations that the run is still going when the server dies.
        config = write_config(tmp_path / "one.yaml", [victim.url], iterations=3000, retries=2, backoff_s=0.05)
        out = tmp_path / "labels.jsonl"
        result = run_and_kill(victim, config, out, after_completions=5)
    finally:
        victim.stop()
    assert result.returncode == EXIT_BACKEND, result.stderr[-3000:]
    line = check_one_line_error(result.stderr, f"127.0.0.1:{victim.port}")
    assert "3 attempts over 1 server" in line
    assert not out.exists()


def test_run_completes_on_the_other_server_when_one_is_killed(llama_server, tmp_path):
    victim = start_server(n_ctx=2048, log_dir=tmp_path)
    try:
        # A short run: it only has to outlive the kill and finish on the survivor.
        config = write_config(tmp_path / "two.yaml", [llama_server.url, victim.url], iterations=2,
                              final_quench=False, retries=4, backoff_s=0.05)
        out = tmp_path / "labels.jsonl"
        result = run_and_kill(victim, config, out, after_completions=3)
    finally:
        victim.stop()
    assert result.returncode == 0, result.stderr[-3000:]
    assert not error_lines(result.stderr)
    assert len(check_labelled(out)) == 16


# --------------------------------------------------------------------------- slow answers and 500s


class FaultProxy:
    """A proxy on 127.0.0.1 in front of a real server that fails or delays chosen completions.

    `plan(n)` gets the number of the completion request (0, 1, ...) and returns "pass",
    "500", ("slow", seconds) (answer late, but answer) or ("stall", seconds) (hold, then hang up
    without an answer). Every other request passes through untouched.
    """

    def __init__(self, upstream_port: int, plan: Callable[[int], Any]):
        self.upstream_port, self.plan = upstream_port, plan
        self.outcomes: list[str] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                self._relay(None)

            def do_POST(self) -> None:
                self._relay(self.rfile.read(int(self.headers.get("Content-Length", 0))))

            def _relay(self, body: Optional[bytes]) -> None:
                action: Any = "pass"
                if self.path.endswith("/completions"):
                    with proxy.lock:
                        n = len(proxy.outcomes)
                        action = proxy.plan(n)
                        proxy.outcomes.append(action if isinstance(action, str) else action[0])
                if action == "500":
                    return self._answer(500, b'{"error": {"message": "injected fault"}}')
                if isinstance(action, tuple):
                    kind, seconds = action
                    time.sleep(seconds)
                    if kind == "stall":
                        self.close_connection = True
                        return
                conn = http.client.HTTPConnection("127.0.0.1", proxy.upstream_port, timeout=300)
                try:
                    headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization", "accept")}
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    self._answer(response.status, response.read())
                finally:
                    conn.close()

            def _answer(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that timed out has hung up: that is the test

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> "FaultProxy":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_retries_ride_out_500s_and_slow_answers(llama_server):
    direct = load_backend(BackendConfig(type="openai", base_urls=(llama_server.url,), model=SERVED_MODEL))
    expected = direct.score(REQUESTS)

    def plan(n: int) -> Any:
        return {1: "500", 2: ("slow", 0.3), 4: "500", 5: ("stall", 3.5), 7: "500", 8: ("slow", 0.5)}.get(n, "pass")

    # One request at a time: the server answers these short prompts in ~0.5 s, far inside
    # timeout_s, so only the injected stall times out.
    with FaultProxy(llama_server.port, plan) as proxy:
        backend = load_backend(BackendConfig(type="openai", base_urls=(proxy.url,), model=SERVED_MODEL,
                                             timeout_s=3.0, retries=4, backoff_s=0.01, concurrency=1))
        got = backend.score(REQUESTS)
    assert proxy.outcomes.count("500") == 3 and proxy.outcomes.count("stall") == 1
    assert proxy.outcomes.count("slow") == 2  # answered late, inside timeout_s: no retry needed
    assert backend.stats.retries == 4  # three 500s and one timeout, each tried again
    for a, b in zip(got, expected):
        assert a == pytest.approx(b, abs=0.1)  # the same server; only its prefix cache differs (ORDER_TOL)


@pytest.mark.parametrize("fault", ["500", "stall"])
def test_past_the_retry_limit_the_error_is_one_line_naming_the_server(llama_server, tmp_path, fault):
    action = "500" if fault == "500" else ("stall", 1.5)
    with FaultProxy(llama_server.port, lambda n: action) as proxy:
        config = write_config(tmp_path / "faulty.yaml", [proxy.url], retries=2, backoff_s=0.01, timeout_s=1.0)
        out = tmp_path / "labels.jsonl"
        result = icm("label", str(SAMPLE), "-c", str(config), "-o", str(out), timeout=300)
    assert result.returncode == EXIT_BACKEND, result.stderr[-3000:]
    line = check_one_line_error(result.stderr, proxy.url + "/completions")
    assert "3 attempts over 1 server" in line
    assert ("HTTP 500 (injected fault)" if fault == "500" else "no response within 1 s") in line
    assert not out.exists()
