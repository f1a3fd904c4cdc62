"""The openai backend against a small fake OpenAI-compatible server running in a thread.

The fake tokenizes on words (a token is a word with its leading whitespace) and gives every
token a deterministic log-prob from `fake_lp`, so each test knows the exact expected scores.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

import httpx
import pytest

from icm_cli.backends.base import ScoreRequest
from icm_cli.backends.loading import load_backend
from icm_cli.backends.openai_logprobs import Malformed, echo_logprob, parse_logprobs, topk_candidates, topk_logprob
from icm_cli.backends.openai_server import OpenAIBackend
from icm_cli.foundation.backend_options import OpenAIOptions
from icm_cli.foundation.config import BackendConfig
from icm_cli.foundation.errors import EXIT_BACKEND, EXIT_USAGE, BackendError, InputError

TOKEN_RE = re.compile(r"\s?[^\s]+|\s+")
VOCAB = (" positive", " negative", " neutral", " the", " a", " I", " True", " False", " very", "\n")
SECRET = "sk-test-DO-NOT-LEAK-7f3a9c"


def fake_tokens(text: str) -> list[str]:
    return TOKEN_RE.findall(text)


def fake_lp(prefix: str, token: str) -> float:
    return -((len(prefix) * 31 + sum(map(ord, token))) % 97) / 10.0 - 0.05


def fake_topk(prompt: str, k: int) -> dict[str, float]:
    ranked = sorted(VOCAB, key=lambda v: fake_lp(prompt, v), reverse=True)[:k]
    return {v: fake_lp(prompt, v) for v in ranked}


def expected_echo(prompt: str, continuation: str) -> float:
    total, offset = 0.0, 0
    for tok in fake_tokens(prompt + continuation):
        if offset >= len(prompt):
            total += fake_lp((prompt + continuation)[:offset], tok)
        offset += len(tok)
    return total


def expected_topk(prompt: str, continuation: str, k: int) -> tuple[float, bool]:
    top = fake_topk(prompt, k)
    if continuation in top:
        return top[continuation], False
    return min(top.values()) - math.log(2), True


class Gauge:
    """Requests a server is answering right now, and the most at once; may be shared by servers."""

    def __init__(self) -> None:
        self.now = self.peak = 0
        self.lock = threading.Lock()

    def __enter__(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)

    def __exit__(self, *exc: Any) -> None:
        with self.lock:
            self.now -= 1


@dataclass
class Behavior:
    statuses: list[int] = field(default_factory=list)  # returned by the next /completions calls, then OK
    always_status: Optional[int] = None
    error_body: str = '{"error": {"message": "internal error"}}'
    retry_after: Callable[[], str] = lambda: "0"  # the Retry-After header sent with error statuses
    delay_s: float = 0.0
    malformed: Optional[str] = None
    reject_echo: bool = False  # llama.cpp: "Only no echo is supported"
    reject_max_tokens_zero: bool = False
    context_limit: Optional[int] = None
    tokenize: Optional[str] = "llamacpp"  # "llamacpp", "vllm" or None (404)
    content_format: bool = False  # llama.cpp's chat-style logprobs
    reverse_choices: bool = False
    delay_for: Optional[Callable[[str], float]] = None  # per prompt, on /completions
    gauges: tuple[Gauge, ...] = ()  # entered while a /completions request is being answered
    finished: list[str] = field(default_factory=list)  # prompts, in the order they were answered
    records: list[tuple[str, dict[str, str], Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def completions(self) -> list[Any]:
        return [body for path, _, body in self.records if path.endswith("/completions")]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in two writes; without this, Nagle + delayed ACK add 40 ms each.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, status: int, body: str, headers: Optional[dict[str, str]] = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        b: Behavior = self.server.behavior  # type: ignore[attr-defined]
        with b.lock:
            b.records.append((self.path, dict(self.headers), None))
        if self.path == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [{"id": "fake-model", "max_model_len": 4096}]}))
        else:
            self._send(404, '{"error": "not found"}')

    def do_POST(self) -> None:
        b: Behavior = self.server.behavior  # type: ignore[attr-defined]
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        with b.lock:
            b.records.append((self.path, dict(self.headers), body))
            status = b.statuses.pop(0) if self.path.endswith("/completions") and b.statuses else None
        if self.path == "/tokenize":
            return self._tokenize(b, body)
        if status is not None or b.always_status is not None:
            return self._send(status or b.always_status or 500, b.error_body, {"Retry-After": b.retry_after()})
        with contextlib.ExitStack() as stack:
            for gauge in b.gauges:
                stack.enter_context(gauge)
            if b.delay_s:
                time.sleep(b.delay_s)
            if b.delay_for is not None:
                time.sleep(max(b.delay_for(p) for p in (body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]])))
            with b.lock:
                b.finished.append(body["prompt"])
        self._completions(b, body)

    def _tokenize(self, b: Behavior, body: dict[str, Any]) -> None:
        if b.tokenize == "llamacpp":  # reads "content" only, like llama.cpp
            ids = [sum(map(ord, t)) for t in fake_tokens(body.get("content", ""))]
            return self._send(200, json.dumps({"tokens": ids}))
        if b.tokenize == "vllm" and "prompt" in body:
            ids = [sum(map(ord, t)) for t in fake_tokens(body["prompt"])]
            return self._send(200, json.dumps({"count": len(ids), "max_model_len": 4096, "tokens": ids}))
        self._send(404, '{"detail": "Not Found"}')

    def _completions(self, b: Behavior, body: dict[str, Any]) -> None:
        prompts = body["prompt"] if isinstance(body["prompt"], list) else [body["prompt"]]
        echo, max_tokens, k = bool(body.get("echo")), body["max_tokens"], body.get("logprobs") or 0
        if echo and b.reject_echo:
            return self._send(400, '{"error": {"code": 400, "message": "Only no echo is supported"}}')
        if echo and max_tokens == 0 and b.reject_max_tokens_zero:
            return self._send(400, '{"error": {"message": "max_tokens must be at least 1, got 0."}}')
        longest = max(len(fake_tokens(p)) for p in prompts)
        if b.context_limit is not None and longest + max_tokens > b.context_limit:
            message = (f"This model's maximum context length is {b.context_limit} tokens. However, you requested "
                       f"{longest + max_tokens} tokens. Please reduce the length of the messages or completion.")
            return self._send(400, json.dumps({"object": "error", "message": message, "code": 400}))
        choices = [self._choice(b, i, p, echo, max_tokens, k) for i, p in enumerate(prompts)]
        if b.reverse_choices:
            choices.reverse()
        if b.malformed == "few_choices":
            choices = choices[:-1]
        usage = {"prompt_tokens": sum(len(fake_tokens(p)) for p in prompts), "completion_tokens": max_tokens}
        text = json.dumps({"id": "cmpl-1", "object": "text_completion", "choices": choices, "usage": usage})
        if b.malformed == "json":
            text = text[: len(text) // 2]
        self._send(200, text)

    def _choice(self, b: Behavior, index: int, prompt: str, echo: bool, max_tokens: int, k: int) -> dict[str, Any]:
        if echo:
            tokens, offsets, offset = fake_tokens(prompt), [], 0
            for t in tokens:
                offsets.append(offset)
                offset += len(t)
            values: list[Optional[float]] = [None] + [fake_lp(prompt[:o], t) for o, t in zip(offsets[1:], tokens[1:])]
            if max_tokens:
                tokens, offsets, values = tokens + [" the"], offsets + [len(prompt)], values + [fake_lp(prompt, " the")]
            tops = [None if v is None else {t: v} for t, v in zip(tokens, values)]
        else:
            top = fake_topk(prompt, k)
            best = next(iter(top))
            tokens, offsets, values, tops = [best], [len(prompt)], [top[best]], [top]
        if b.malformed == "nan":
            values = [float("nan") if v is not None else None for v in values]
            tops = [None if t is None else {key: float("nan") for key in t} for t in tops]
        if b.malformed == "string_logprob":
            values = [None if v is None else str(v) for v in values]  # type: ignore[misc]
            tops = [None if t is None else {key: str(v) for key, v in t.items()} for t in tops]
        if b.content_format:
            logprobs: Any = {"content": [
                {"token": t, "logprob": v, "top_logprobs": [{"token": tt, "logprob": vv} for tt, vv in (top or {}).items()]}
                for t, v, top in zip(tokens, values, tops)
            ]}
        else:
            logprobs = {"tokens": tokens, "token_logprobs": values, "text_offset": offsets, "top_logprobs": tops}
        choice: dict[str, Any] = {"index": index, "text": (prompt if echo else "") + " the", "finish_reason": "length"}
        if b.malformed != "no_logprobs":
            choice["logprobs"] = logprobs
        return choice


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that time out close their sockets mid-response; that is the test


@pytest.fixture
def serve():
    servers: list[QuietServer] = []

    def start(**kwargs: Any) -> tuple[str, Behavior]:
        server = QuietServer(("127.0.0.1", 0), Handler)
        server.behavior = Behavior(**kwargs)  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/v1", server.behavior  # type: ignore[attr-defined]

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def dead_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"  # nothing listens there now: connection refused


def backend_for(urls: list[str], **kwargs: Any) -> Any:
    settings: dict[str, Any] = {"type": "openai", "base_urls": tuple(urls), "model": "fake-model", "timeout_s": 2.0,
                                "retries": 2, "backoff_s": 0.01, "concurrency": 4}
    settings.update(kwargs)
    return load_backend(BackendConfig(**settings))


DEMO = "Tweet: I love this\nSentiment: positive\n\n"


def make_requests(n: int = 6, labels: tuple[str, ...] = (" positive", " negative")) -> list[ScoreRequest]:
    return [
        ScoreRequest((DEMO * (1 + i % 3), f"Tweet: sample {i} is {'great' if i % 2 else 'awful'}\nSentiment:"), labels)
        for i in range(n)
    ]


def check_echo(requests: list[ScoreRequest], out: list[list[float]]) -> None:
    for r, values in zip(requests, out):
        prompt = "".join(r.segments)
        assert values == pytest.approx([expected_echo(prompt, c) for c in r.continuations], abs=1e-9)


# --------------------------------------------------------------------------- scores


def test_echo_scores_match_the_server_logprobs_including_multi_token_labels(serve):
    url, behavior = serve()
    backend = backend_for([url], echo=True)
    requests = make_requests(labels=(" positive", " very negative"))
    out = backend.score(requests)
    check_echo(requests, out)
    sent = behavior.completions()
    assert all(b["echo"] is True and b["logprobs"] == 1 and b["max_tokens"] == 0 for b in sent)
    assert backend.stats.requests == len(requests)
    assert backend.stats.tokens_requested > 0 and backend.stats.tokens_computed == backend.stats.tokens_requested
    assert backend.max_context == 4096  # read from /v1/models


def test_server_refusing_max_tokens_zero_gets_one_and_the_new_token_is_skipped(serve):
    url, behavior = serve(reject_max_tokens_zero=True)
    backend = backend_for([url], echo=True)
    requests = make_requests(4)
    check_echo(requests, backend.score(requests))
    assert behavior.completions()[-1]["max_tokens"] == 1


def test_several_prompts_per_request_are_matched_by_choice_index(serve):
    url, behavior = serve(reverse_choices=True)
    backend = backend_for([url], echo=True, prompts_per_request=4)
    requests = make_requests(6)
    check_echo(requests, backend.score(requests))
    batched = [b for b in behavior.completions() if isinstance(b["prompt"], list)]
    assert batched and max(len(b["prompt"]) for b in batched) == 4


# --------------------------------------------------------------------------- replicas and retries


def test_requests_spread_round_robin_over_servers(serve):
    started = [serve() for _ in range(3)]
    backend = backend_for([u for u, _ in started], echo=True)
    requests = make_requests(9)
    check_echo(requests, backend.score(requests))
    counts = [len(b.completions()) for _, b in started]
    assert sum(counts) == 18 + 1  # one per (prompt, label), plus the echo probe
    assert min(counts) >= 5, counts


def test_replica_answering_500_is_retried_on_another(serve):
    bad_url, bad = serve(always_status=500)
    good_url, _ = serve()
    backend = backend_for([bad_url, good_url], echo=True)
    requests = make_requests(6)
    check_echo(requests, backend.score(requests))
    assert bad.completions() and backend.stats.retries >= 1


def test_replica_refusing_connections_is_retried_on_another(serve):
    good_url, _ = serve()
    backend = backend_for([dead_url(), good_url], echo=True)
    requests = make_requests(6)
    check_echo(requests, backend.score(requests))
    assert backend.stats.retries >= 1


def test_429_is_retried_with_backoff_then_succeeds(serve):
    url, behavior = serve(statuses=[429, 429])
    backend = backend_for([url], echo=True, retries=3, backoff_s=0.05)
    requests = make_requests(2)
    started = time.monotonic()
    check_echo(requests, backend.score(requests))
    assert backend.stats.retries == 2 and behavior.completions()[0] == behavior.completions()[2]  # same probe, resent
    assert time.monotonic() - started >= 0.05 * 0.5 + 0.1 * 0.5  # two backoffs, jitter at its lowest


def test_429s_do_not_spend_the_retry_budget(serve):
    # Throttling slows a run; with retries=1, two failures end a request, six 429s do not.
    url, behavior = serve(statuses=[429] * 6)
    backend = backend_for([url], echo=True, retries=1, backoff_s=0.01)
    requests = make_requests(2)
    check_echo(requests, backend.score(requests))
    assert backend.stats.retries == 6 and len(behavior.completions()) == 4 + 1 + 6


@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_429_waits_for_retry_after_given_in_seconds_or_as_an_http_date(serve, form):
    import email.utils

    def retry_after() -> str:  # an HTTP date has whole seconds: 2 s from now is 1 to 2 s away
        return "1.5" if form == "seconds" else email.utils.formatdate(time.time() + 2, usegmt=True)

    url, _ = serve(statuses=[429], retry_after=retry_after)
    backend = backend_for([url], echo=True, backoff_s=0.01)
    started = time.monotonic()
    check_echo(make_requests(1), backend.score(make_requests(1)))
    assert time.monotonic() - started >= 0.95
    assert backend.stats.retries == 1


def test_retry_after_header_forms():
    import email.utils

    from icm_cli.backends.openai_transport import retry_after_s

    assert retry_after_s("7") == 7.0 and retry_after_s(" 0.5 ") == 0.5 and retry_after_s("-3") == 0.0
    assert 28 <= retry_after_s(email.utils.formatdate(time.time() + 30, usegmt=True)) <= 30
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # past: no wait
    assert all(retry_after_s(v) is None for v in (None, "", "soon", "nan", "inf", "Wed, 99 Foo 2015"))


def test_endless_429s_fail_once_the_time_waiting_them_out_reaches_its_bound(serve):
    url, _ = serve(always_status=429, error_body='{"error": {"message": "slow down"}}')
    backend = backend_for([url], echo=True, retries=0, backoff_s=0.05)
    backend._http.throttle_budget_s = 0.6
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend.score(make_requests(1))
    assert 0.6 <= time.monotonic() - started < 3.0
    message = info.value.message
    assert "HTTP 429 (slow down): still throttled after" in message and "0.6 s per request" in message
    assert backend.stats.retries >= 3 and "\n" not in message


def test_a_retry_after_past_the_429_bound_fails_at_once(serve):
    url, _ = serve(always_status=429, retry_after=lambda: "3600")
    backend = backend_for([url], echo=True, retries=0)
    started = time.monotonic()
    with pytest.raises(BackendError, match="asks to wait 3600 s .the most this backend waits out throttling is 600 s"):
        backend.score(make_requests(1))
    assert time.monotonic() - started < 2.0


def test_timeouts_give_one_line_backend_error_naming_the_server(serve):
    url, _ = serve(delay_s=0.6)
    backend = backend_for([url], echo=True, timeout_s=0.15, retries=1)
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend.score(make_requests(2))
    assert time.monotonic() - started < 2.0
    message = info.value.message
    assert info.value.exit_code == EXIT_BACKEND and "\n" not in message
    assert url in message and "no response within 0.15 s" in message and "2 attempts over 1 server" in message
    assert "lost" not in message and "re-run" not in message  # how to go on is the CLI's to say


def test_no_server_answering_at_start_up_is_server_unreachable_naming_the_urls():
    from icm_cli.backends.openai_server import ServerUnreachable

    urls = [dead_url(), dead_url()]
    with pytest.raises(ServerUnreachable) as info:
        backend_for(urls, retries=1)
    message = info.value.message
    assert message.startswith("no server answered at start-up (") and all(u in message for u in urls)
    assert "connection refused (2 attempts over 2 servers)" in message
    assert "lost" not in message and "\n" not in message
    assert isinstance(info.value, BackendError) and info.value.exit_code == EXIT_BACKEND
    with pytest.raises(ServerUnreachable, match=r"^no server answered at start-up: http://127.0.0.1:\d+/v1/models: "):
        backend_for(urls[:1], retries=0)


def test_a_server_failing_mid_run_is_not_server_unreachable(serve):
    from icm_cli.backends.openai_server import ServerUnreachable

    url, _ = serve(always_status=503)
    backend = backend_for([url], echo=True, retries=1)  # /v1/models answers; completions do not
    with pytest.raises(BackendError) as info:
        backend.score(make_requests(1))
    assert not isinstance(info.value, ServerUnreachable)
    assert info.value.message == f"{url}/completions: HTTP 503 (internal error) (2 attempts over 1 server)"


def test_all_servers_failing_names_the_last_one_tried(serve):
    url, _ = serve(always_status=503)
    with pytest.raises(BackendError) as info:
        backend_for([url, dead_url()], echo=True, retries=2).score(make_requests(1))
    assert "127.0.0.1" in info.value.message and "3 attempts over 2 servers" in info.value.message


# --------------------------------------------------------------------------- malformed responses


@pytest.mark.parametrize("echo", [True, False])
@pytest.mark.parametrize("malformed", ["json", "no_logprobs", "nan", "string_logprob", "few_choices"])
def test_malformed_responses_are_backend_errors(serve, malformed, echo):
    url, _ = serve(malformed=malformed)
    backend = backend_for([url], echo=echo)
    with pytest.raises(BackendError) as info:
        backend.score(make_requests(2))
    assert "malformed response" in info.value.message and url in info.value.message
    assert "\n" not in info.value.message


# --------------------------------------------------------------------------- the API key


def test_api_key_is_sent_but_never_shown(serve, monkeypatch):
    monkeypatch.setenv("ICM_TEST_API_KEY", SECRET)
    # A careless server that puts the request's Authorization header into its error text.
    url, behavior = serve()
    backend = backend_for([url], echo=True, api_key_env="ICM_TEST_API_KEY")
    backend.score(make_requests(2))
    assert {h.get("Authorization") for _, h, _ in behavior.records} == {f"Bearer {SECRET}"}

    leaky_url, _ = serve(always_status=500, error_body=json.dumps({"error": {"message": f"bad auth Bearer {SECRET}"}}))
    leaky = backend_for([leaky_url], echo=True, api_key_env="ICM_TEST_API_KEY", retries=1)
    with pytest.raises(BackendError) as info:
        leaky.score(make_requests(1))
    for text in (str(info.value), repr(info.value), info.value.message, repr(leaky), str(vars(leaky)), repr(backend)):
        assert SECRET not in text
    assert "***" in info.value.message

    refused_url, _ = serve(statuses=[401], error_body='{"error": {"message": "invalid api key"}}')
    with pytest.raises(BackendError) as info:
        backend_for([refused_url], echo=True, api_key_env="ICM_TEST_API_KEY").score(make_requests(1))
    assert "$ICM_TEST_API_KEY" in info.value.message and SECRET not in info.value.message


def test_api_key_variable_not_set_is_an_input_error(serve, monkeypatch):
    url, _ = serve()
    monkeypatch.delenv("ICM_NO_SUCH_KEY", raising=False)
    with pytest.raises(InputError, match="ICM_NO_SUCH_KEY is not set"):
        backend_for([url], api_key_env="ICM_NO_SUCH_KEY")


# --------------------------------------------------------------------------- top-k without echo


@pytest.mark.parametrize("content_format", [False, True])
def test_top_k_without_echo_reads_labels_and_floors_missing_ones(serve, content_format):
    url, behavior = serve(content_format=content_format)
    backend = backend_for([url], echo=False, top_logprobs=3)
    requests = make_requests(8)
    out = backend.score(requests)
    floors = 0
    for r, values in zip(requests, out):
        prompt = "".join(r.segments)
        expected = [expected_topk(prompt, c, 3) for c in r.continuations]
        assert values == pytest.approx([v for v, _ in expected], abs=1e-9)
        floors += sum(f for _, f in expected)
    assert floors > 0 and backend.stats.topk_floors == floors
    sent = behavior.completions()
    assert len(sent) == len(requests)  # one request scores every label of a prompt
    assert all(not b.get("echo") and b["max_tokens"] == 1 and b["logprobs"] == 3 for b in sent)


def test_labels_never_in_the_top_k_are_an_error_not_all_floors(serve):
    url, _ = serve()
    with pytest.raises(BackendError, match="none of the labels"):
        backend_for([url], echo=False).score(make_requests(8, labels=(" yes", " no")))


def test_multi_token_label_without_echo_is_an_error(serve):
    url, _ = serve()
    with pytest.raises(InputError, match="backend.echo: true") as info:
        backend_for([url], echo=False).score(make_requests(2, labels=(" positive", " very negative")))
    assert info.value.exit_code == EXIT_USAGE


def test_auto_uses_top_k_when_the_tokenizer_shows_one_token_labels(serve):
    url, behavior = serve(tokenize="vllm")
    log: list[str] = []
    backend = load_backend(BackendConfig(type="openai", base_urls=(url,), model="fake-model", backoff_s=0.01), log.append)
    backend.score(make_requests(2))
    assert all(not b.get("echo") for b in behavior.completions())
    assert any("top-k" in line for line in log)


def test_auto_uses_echo_for_multi_token_labels(serve):
    url, behavior = serve()
    backend = backend_for([url])
    requests = make_requests(3, labels=(" positive", " very negative"))
    check_echo(requests, backend.score(requests))
    assert all(b["echo"] for b in behavior.completions())


def test_auto_falls_back_to_top_k_when_the_server_refuses_echo(serve):
    url, behavior = serve(reject_echo=True, tokenize=None)
    log: list[str] = []
    backend = load_backend(BackendConfig(type="openai", base_urls=(url,), model="fake-model", backoff_s=0.01), log.append)
    out = backend.score(make_requests(2))
    assert len(out) == 2 and any("no echo" in line for line in log)
    sent = behavior.completions()
    assert sent[0]["echo"] and not any(b.get("echo") for b in sent[1:])  # probed once, then top-k
    with pytest.raises(BackendError, match="set backend.echo: auto or false"):
        backend_for([url], echo=True).score(make_requests(1))


# --------------------------------------------------------------------------- context length and tokens


def test_context_length_400_becomes_input_error_naming_batch_max_tokens(serve):
    url, _ = serve(context_limit=12)
    backend = backend_for([url], echo=True, max_context=100_000)
    with pytest.raises(InputError) as info:
        backend.score(make_requests(2))
    assert "core.max_tokens" in info.value.message and info.value.exit_code == EXIT_USAGE


def test_prompt_estimated_past_max_context_fails_before_sending(serve):
    url, behavior = serve()
    backend = backend_for([url], echo=True, max_context=16)
    with pytest.raises(InputError, match="lower core.max_tokens"):
        backend.score(make_requests(3))
    assert not behavior.completions()


def test_count_tokens_uses_the_tokenize_endpoint_else_estimates(serve):
    url, _ = serve(tokenize="llamacpp")
    backend = backend_for([url])
    assert backend.count_tokens("Tweet: hello there") == 3
    assert not backend.stats.token_counts_estimated
    url, _ = serve(tokenize=None)
    backend = backend_for([url])
    assert backend.count_tokens("x" * 40) == 10
    assert backend.stats.token_counts_estimated


# --------------------------------------------------------------------------- concurrency over replicas


def test_concurrency_keeps_n_requests_in_flight_spread_over_two_replicas(serve):
    total = Gauge()
    per_server = [Gauge(), Gauge()]
    started = [serve(delay_s=0.15, gauges=(total, g)) for g in per_server]
    backend = backend_for([u for u, _ in started], echo=True, concurrency=4)
    requests = make_requests(8)
    check_echo(requests, backend.score(requests))
    assert total.peak == 4  # reached, and never more than backend.concurrency
    assert all(2 <= g.peak <= 3 for g in per_server), [g.peak for g in per_server]  # both busy, neither hoarding
    counts = [len(b.completions()) for _, b in started]
    assert sum(counts) == 16 + 1 and min(counts) >= 6, counts  # the labels and the echo probe


def test_a_slower_replica_gets_fewer_requests(serve):
    slow_url, slow = serve(delay_s=0.5)
    fast_url, fast = serve(delay_s=0.01)
    backend = backend_for([slow_url, fast_url], echo=True, concurrency=4)
    requests = make_requests(12)
    check_echo(requests, backend.score(requests))
    # Plain round-robin would send each half of the 25; passing over a replica that is behind
    # keeps the slow one at a few requests in flight while the fast one takes the rest.
    assert len(slow.completions()) <= 8 and len(fast.completions()) >= 17


def test_results_are_in_request_order_whatever_order_the_servers_answer_in(serve):
    def slow_first(prompt: str) -> float:  # "sample 0" answers last, "sample 7" first
        match = re.search(r"sample (\d+)", prompt)
        return 0.04 * (8 - int(match.group(1))) if match else 0.0

    finished: list[str] = []  # shared: the order both servers answered in
    started = [serve(delay_for=slow_first, finished=finished) for _ in range(2)]
    backend = backend_for([u for u, _ in started], echo=False, concurrency=8, top_logprobs=3)
    requests = make_requests(8)
    out = backend.score(requests)
    order = [int(re.search(r"sample (\d+)", p).group(1)) for p in finished]
    assert sorted(order) == list(range(8)) and order != list(range(8))  # answered out of order
    for r, values in zip(requests, out):
        prompt = "".join(r.segments)
        assert values == pytest.approx([expected_topk(prompt, c, 3)[0] for c in r.continuations], abs=1e-9)
    # The same scores one request at a time on one replica: no dependence on replica or timing.
    serial = backend_for([started[0][0]], echo=False, concurrency=1, top_logprobs=3).score(requests)
    assert serial == out


# --------------------------------------------------------------------------- retries (one replica) and failover


def test_503_is_retried_on_the_same_single_server(serve):
    url, behavior = serve(statuses=[503])
    backend = backend_for([url], echo=True)
    requests = make_requests(3)
    check_echo(requests, backend.score(requests))
    assert backend.stats.retries == 1 and len(behavior.completions()) == 6 + 1 + 1  # labels, probe, the resent one


def test_connection_refused_until_the_server_comes_up_is_retried():
    url = dead_url()
    port = int(url.split(":")[2].split("/")[0])
    backend = OpenAIBackend("fake-model", OpenAIOptions(base_urls=(url,), echo=True, retries=8, backoff_s=0.1))

    def start_after_a_refusal() -> None:
        while not backend.stats.retries:  # the first attempt has met a closed port
            time.sleep(0.005)
        server = QuietServer(("127.0.0.1", port), Handler)
        server.behavior = Behavior()  # type: ignore[attr-defined]
        late.append(server)
        server.serve_forever(poll_interval=0.05)

    late: list[QuietServer] = []
    threading.Thread(target=start_after_a_refusal, daemon=True).start()
    try:
        requests = make_requests(2)
        check_echo(requests, backend.score(requests))
        assert backend.stats.retries >= 1 and late
    finally:
        for server in late:
            server.shutdown()
            server.server_close()


class RefuseFirst(httpx.BaseTransport):
    """The real transport, but the first `n` completions fail to connect (injected: no timing games)."""

    def __init__(self, n: int):
        self.inner = httpx.HTTPTransport()
        self.left = n
        self.lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            refuse = request.url.path.endswith("/completions") and self.left > 0
            self.left -= refuse
        if refuse:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        return self.inner.handle_request(request)


def test_injected_connect_errors_are_retried_and_counted(serve):
    url, behavior = serve()
    backend = OpenAIBackend("fake-model", OpenAIOptions(base_urls=(url,), echo=True, retries=3, backoff_s=0.01),
                            transport=RefuseFirst(2))
    requests = make_requests(2)
    check_echo(requests, backend.score(requests))
    assert backend.stats.retries == 2 and len(behavior.completions()) == 4 + 1


def test_a_dead_replica_is_skipped_and_the_run_completes_on_the_other(serve):
    good_url, good = serve()
    backend = backend_for([dead_url(), good_url], echo=True, concurrency=4, backoff_s=0.2)  # rests 2 s
    requests = make_requests(8)
    check_echo(requests, backend.score(requests))
    assert len(good.completions()) == 16 + 1
    # Round-robin without rest would fail about half of the ~30 requests; a resting replica gets
    # only those sent before its first failure was seen.
    assert 1 <= backend.stats.retries <= 5


# --------------------------------------------------------------------------- log-prob parsing (pure)

LEGACY = {
    "tokens": ["Tweet", " good", "\nSentiment", ":", " positive", " the"],
    "token_logprobs": [None, -2.0, -1.5, -0.5, -0.25, -3.0],
    "text_offset": [0, 5, 10, 20, 21, 30],
    "top_logprobs": [None, {" good": -2.0}, {"\nSentiment": -1.5}, {":": -0.5},
                     {" positive": -0.25, " negative": -1.75}, {" the": -3.0}],
}
CONTENT = {"content": [{"token": "Ġpositive", "logprob": -0.4, "top_logprobs": [
    {"token": "Ġpositive", "logprob": -0.4}, {"token": " negative", "logprob": -1.2}, {"token": " the", "logprob": -2.5}]}]}


def test_legacy_logprobs_echo_reads_the_label_tokens_before_the_generated_one():
    lp = parse_logprobs(LEGACY)
    assert echo_logprob(lp, " positive", generated=1) == -0.25
    assert echo_logprob(lp, ": positive", generated=1) == -0.75  # a label of two tokens
    assert lp.top[4] == {" positive": -0.25, " negative": -1.75}
    without_offsets = {k: v for k, v in LEGACY.items() if k != "text_offset"}
    assert echo_logprob(parse_logprobs(without_offsets), " positive", generated=1) == -0.25


def test_content_logprobs_top_k_reads_labels_normalises_pieces_and_floors_the_missing():
    lp = parse_logprobs(CONTENT)
    top = topk_candidates(lp, asked=3)
    assert topk_logprob(top, " positive") == (-0.4, False)  # "Ġpositive" is " positive"
    assert topk_logprob(top, " negative") == (-1.2, False)
    value, floored = topk_logprob(top, " neutral")
    assert floored and value == pytest.approx(-2.5 - math.log(2))


@pytest.mark.parametrize("read", [
    lambda: parse_logprobs(None),
    lambda: parse_logprobs({"tokens": ["a"], "token_logprobs": [-1.0, -2.0]}),
    lambda: parse_logprobs({"tokens": ["a", "b"], "token_logprobs": [None, -1.0], "text_offset": [0, "1"]}),
    lambda: echo_logprob(parse_logprobs({"tokens": ["x", " a"], "token_logprobs": [None, float("nan")]}), " a", 0),
    lambda: echo_logprob(parse_logprobs({"tokens": ["x", " b"], "token_logprobs": [None, -1.0]}), " a", 0),
    lambda: parse_logprobs({"content": [{"logprob": -1.0}]}),
    lambda: topk_candidates(parse_logprobs({"content": [{"token": " x", "logprob": -1.0, "top_logprobs": []}]}), 5),
    lambda: topk_logprob({" a": "-1.0"}, " a"),
], ids=["none", "lengths", "offsets", "nan", "not-the-label", "no-token", "no-top-k", "string"])
def test_malformed_logprobs_raise(read):
    with pytest.raises(Malformed):
        read()


# --------------------------------------------------------------------------- the API key in logs


def test_api_key_is_a_header_and_stays_out_of_logs(serve, monkeypatch, caplog):
    monkeypatch.setenv("ICM_TEST_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    url, behavior = serve(statuses=[503], error_body=json.dumps({"error": {"message": f"saw Bearer {SECRET}"}}))
    lines: list[str] = []
    backend = load_backend(BackendConfig(type="openai", base_urls=(url,), model="fake-model", echo=True,
                                         backoff_s=0.01, api_key_env="ICM_TEST_API_KEY"), lines.append)
    backend.score(make_requests(2))
    assert {h.get("Authorization") for _, h, _ in behavior.records} == {f"Bearer {SECRET}"}
    assert any("httpx" in r.name or "httpcore" in r.name for r in caplog.records)  # the logs were on
    assert SECRET not in caplog.text and not any(SECRET in line for line in lines)
    assert SECRET not in repr(backend._http) and SECRET not in str(vars(backend._http))


# --------------------------------------------------------------------------- servers that misbehave below HTTP


@pytest.fixture
def raw_server():
    """A TCP server whose every connection is handed to `handle(conn)` in a daemon thread."""
    stop = threading.Event()
    listeners: list[socket.socket] = []

    def start(handle: Callable[[socket.socket, threading.Event], None]) -> str:
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.05)
        listeners.append(listener)

        def accept() -> None:
            while not stop.is_set():
                try:
                    conn, _ = listener.accept()
                except OSError:  # a timeout (to look at `stop`), or the listener closed
                    continue
                threading.Thread(target=handle, args=(conn, stop), daemon=True).start()

        threading.Thread(target=accept, daemon=True).start()
        return f"http://127.0.0.1:{listener.getsockname()[1]}/v1"

    yield start
    stop.set()
    for listener in listeners:
        listener.close()


def read_request_head(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def trickle(response: bytes, every_s: float = 0.2, for_s: float = 8.0) -> Callable[[socket.socket, threading.Event], None]:
    """A server that sends `response` one byte every `every_s` seconds, for `for_s` seconds."""

    def handle(conn: socket.socket, stop: threading.Event) -> None:
        with conn:
            read_request_head(conn)
            end = time.monotonic() + for_s  # then hang up, so a client without a deadline ends too
            try:
                for byte in response:
                    if stop.wait(every_s) or time.monotonic() > end:
                        break
                    conn.sendall(bytes([byte]))
            except OSError:
                pass  # the client gave up and closed: that is the test

    return handle


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_trickling_server_cannot_hold_an_attempt_past_timeout_s(raw_server, where):
    # A byte every 0.2 s keeps httpx's per-phase timeouts (connect, each read) from ever firing.
    body = b'{"object": "list", "data": [{"id": "fake-model"}]}'.ljust(4000)
    head = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 4000\r\n\r\n"
    if where == "body":
        url = raw_server(lambda conn, stop: (conn.sendall(head), trickle(body)(conn, stop)))
    else:
        url = raw_server(trickle(head + body))
    backend = OpenAIBackend("fake-model", OpenAIOptions(base_urls=(url,), timeout_s=1.0, retries=1, backoff_s=0.01))
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend.connect()
    elapsed = time.monotonic() - started
    assert 2.0 <= elapsed < 3.5, elapsed  # two attempts of 1 s each, and not a moment longer
    assert "no response within 1 s" in info.value.message and "2 attempts" in info.value.message
    backend.close()


CTRL_C_SCRIPT = """
import sys, time
from icm_cli.backends.base import ScoreRequest
from icm_cli.backends.openai_server import OpenAIBackend
from icm_cli.foundation.backend_options import OpenAIOptions

backend = OpenAIBackend("fake-model", OpenAIOptions(base_urls=(sys.argv[1],), timeout_s=120, retries=4, concurrency=4,
                                                   echo=False))
requests = [ScoreRequest((f"Tweet: sample {i}\\nSentiment:",), (" positive", " negative")) for i in range(8)]
try:
    backend.score(requests)
except KeyboardInterrupt:
    started = time.monotonic()
    if sys.argv[2] == "close":
        backend.close()
    print(f"closed in {time.monotonic() - started:.2f} s", flush=True)
"""


@pytest.mark.parametrize("hangs, close", [("everything", "close"), ("completions", "close"), ("completions", "no-close")])
def test_ctrl_c_with_a_hung_server_closes_at_once_and_the_process_exits(raw_server, hangs, close):
    # "everything": the first request (the tokenizer probe) hangs in the main thread;
    # "completions": /tokenize answers 404, so the completions hang in the worker threads.
    # "no-close": the caller (as the CLI does today) lets the interrupt end the process without
    # close(): score() itself ends the requests it leaves behind.
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    import icm_cli

    hung = threading.Event()

    def handle(conn: socket.socket, stop: threading.Event) -> None:
        with conn:
            while not stop.is_set():
                head = read_request_head(conn)
                if not head:
                    return
                if hangs == "everything" or b"/completions" in head.split(b"\r\n", 1)[0]:
                    hung.set()
                    stop.wait(300)  # accepted, read, never answered
                    return
                length = int(re.search(rb"content-length: *(\d+)", head, re.IGNORECASE).group(1))
                body = head.split(b"\r\n\r\n", 1)[1]
                while len(body) < length:
                    body += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                             b"Content-Length: 24\r\n\r\n" + b'{"detail": "Not Found"} ')

    url = raw_server(handle)
    env = {**os.environ, "PYTHONPATH": str(Path(icm_cli.__file__).parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", CTRL_C_SCRIPT, url, close], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert hung.wait(30), "the script never sent a request"
        time.sleep(0.5)  # let every worker reach the server
        proc.send_signal(signal.SIGINT)
        interrupted = time.monotonic()
        out, err = proc.communicate(timeout=10)  # raises TimeoutExpired if the process hangs on
        assert time.monotonic() - interrupted < 10
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 0 and not err, err  # no traceback, no "Task exception was never retrieved"
    closed_in = float(re.search(r"closed in ([\d.]+) s", out).group(1))
    assert closed_in < 1.5, out


class SpawningTransport(httpx.AsyncBaseTransport):
    """An attempt that starts an anyio task every loop turn, as anyio's connect_tcp starts one
    connection attempt per address; it never answers."""

    def __init__(self) -> None:
        self.spawning = threading.Event()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        import anyio

        async with anyio.create_task_group() as group:
            while True:
                group.start_soon(anyio.sleep, 60)
                self.spawning.set()
                await anyio.lowlevel.checkpoint()


def test_close_leaves_a_library_s_tasks_to_it_so_no_warning_follows_the_error():
    """close() cancels the requests, not every task on the loop: a library task cancelled before
    its first step never awaits its coroutine, and Python warns about that on stderr at exit,
    after the run's one-line error (seen with anyio's connect attempts and a stalled server)."""
    import gc
    import warnings

    from icm_cli.backends.openai_retry import Cancelled
    from icm_cli.backends.openai_transport import Transport

    def wait_on(transport: Transport) -> None:
        with contextlib.suppress(Cancelled):
            transport.request(lambda base: base + "/completions", {})

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(10):  # the race is lost on most closes, not all
            spawning = SpawningTransport()
            transport = Transport(OpenAIOptions(base_urls=("http://127.0.0.1:9/v1",), timeout_s=60, retries=0,
                                                backoff_s=0.01, concurrency=1), transport=spawning)
            waiter = threading.Thread(target=wait_on, args=(transport,))
            waiter.start()
            assert spawning.spawning.wait(10)
            transport.close()
            waiter.join(5)
            assert not waiter.is_alive()
        gc.collect()
    unawaited = [str(w.message) for w in caught if "never awaited" in str(w.message)]
    assert not unawaited, unawaited


# --------------------------------------------------------------------------- failures no retry can change


def test_501_fails_at_once_in_one_line(serve):
    url, behavior = serve(statuses=[501], error_body='{"error": {"message": "batch prompts are not supported"}}')
    backend = backend_for([url], echo=True, retries=3)
    with pytest.raises(BackendError) as info:
        backend.score(make_requests(2))
    assert len(behavior.completions()) == 1 and backend.stats.retries == 0  # a 5xx, but not retried
    message = info.value.message
    assert message.startswith(f"{url}/completions: HTTP 501") and "batch prompts are not supported" in message
    assert "\n" not in message


def test_a_tls_certificate_that_does_not_verify_fails_at_once(raw_server, tmp_path):
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    handshakes: list[int] = []

    def handle(conn: socket.socket, stop: threading.Event) -> None:
        handshakes.append(1)
        with contextlib.suppress(OSError), context.wrap_socket(conn, server_side=True) as tls:
            read_request_head(tls)  # never reached: the client refuses the self-signed certificate

    url = raw_server(handle).replace("http://", "https://")
    backend = OpenAIBackend("fake-model", OpenAIOptions(base_urls=(url,), retries=3, backoff_s=0.2))
    started = time.monotonic()
    with pytest.raises(BackendError) as info:
        backend.connect()
    assert time.monotonic() - started < 1.0 and len(handshakes) == 1
    message = info.value.message
    assert message == f"{url}/models: TLS certificate verification failed (self-signed certificate)"
    backend.close()


# --------------------------------------------------------------------------- the API key over plain http


def test_an_api_key_over_plain_http_to_another_host_is_warned_about_without_the_key():
    lines: list[str] = []
    urls = ["http://10.1.2.3:8000/v1", "https://api.example.com/v1", "http://127.0.0.1:8000/v1", "http://gpu-box/v1"]
    OpenAIBackend("fake-model", OpenAIOptions(base_urls=tuple(urls)), api_key=SECRET, log=lines.append).close()
    assert len(lines) == 1 and SECRET not in lines[0]
    assert "plain http://" in lines[0] and "10.1.2.3, gpu-box;" in lines[0]
    assert "example.com" not in lines[0] and "127.0.0.1" not in lines[0]

    loopback = ["http://localhost:8000/v1", "http://127.5.0.1/v1", "http://[::1]:8000/v1", "http://[::ffff:127.0.0.1]/v1"]
    for urls, key in ((loopback, SECRET), (["https://10.1.2.3/v1"], SECRET), (["http://10.1.2.3/v1"], None)):
        quiet: list[str] = []
        OpenAIBackend("fake-model", OpenAIOptions(base_urls=tuple(urls)), api_key=key, log=quiet.append).close()
        assert quiet == [], (urls, quiet)


def test_rows_are_not_sent_to_tokenize_one_by_one(serve):
    """A transfer chunk shares its demonstrations: they are counted once; each row's own text
    is estimated, never one /tokenize request per row (10M rows would be 10M extra requests)."""
    url, behavior = serve(tokenize="llamacpp")
    backend = backend_for([url], echo=False)
    demos = ("Tweet: so good\nSentiment: positive\n\n", "Tweet: so bad\nSentiment: negative\n\n")
    for start in (0, 100):
        rows = [ScoreRequest(demos + (f"Tweet: row {k} here\nSentiment:",), (" positive", " negative"))
                for k in range(start, start + 100)]
        backend.score(rows)
    tokenized = [body for path, _, body in behavior.records if path == "/tokenize"]
    assert len(behavior.completions()) == 200
    assert len(tokenized) < 12, [body for body in tokenized]  # probes, labels and the two demonstrations
    # Only the first prompt's last piece, once, to learn how labels tokenize after it.
    assert sum("row" in str(body) for body in tokenized) <= 3
