"""OpenAI-compatible /v1/completions backend: label log-probs from vLLM serve, SGLang or llama.cpp.

Two ways to read a label's log-probability from such a server:

- echo: send prompt + label with `echo: true, logprobs: 1, max_tokens: 0` and sum the
  log-probs the server reports for the label's tokens. Exact for any label. But vLLM computes
  prompt log-probs by running the whole prompt again: these requests skip its prefix cache,
  so every prompt costs its full length.
- top-k (no echo): send the prompt alone with `max_tokens: 1, logprobs: k` and read the
  label's token among the k most likely next tokens. One request covers every label, and the
  server's prefix cache serves the shared demonstrations, which is far cheaper on long prompts.
  Exact when the label is one token and among the top k; a label outside the top k gets a
  floor (see `topk_logprob`), counted in `stats.topk_floors`. Multi-token labels need echo.

`echo: auto` uses top-k when the server's tokenizer shows every label is one token, else echo
when the server supports it (llama.cpp's server does not), else top-k. The tokenizer is found at
/tokenize (vLLM, SGLang, llama.cpp's llama-server) or /extras/tokenize (llama-cpp-python's server,
which echoes too but reads max_tokens 0 as "until the context is full", so it is sent 1).

Requests go round-robin over `base_urls`; a failed attempt (429, 5xx, timeout, refused
connection) is retried on the next server with exponential backoff. The API key is read from
the environment variable named in the config, sent as a Bearer header and never put in
messages, reprs or outputs.
"""

from __future__ import annotations

import http.client
import itertools
import json
import math
import os
import random
import re
import threading
import time
import urllib.parse
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, TypeVar, Union

from ..config import BackendConfig
from ..errors import BackendError, InputError
from .base import BackendStats, ScoreRequest

DEFAULT_CONTEXT = 4096
# Servers name "the prompt does not fit" in many ways (vLLM, SGLang, llama.cpp, OpenAI).
_CONTEXT_RE = re.compile(
    r"context (length|size|window)|max_model_len|maximum (model|context) length|n_ctx|too long|exceeds? the",
    re.IGNORECASE,
)
_TRANSIENT_STATUS = {408, 429}  # plus every 5xx
_jitter = random.Random()
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class OpenAIStats(BackendStats):
    retries: int = 0  # failed attempts that were tried again
    topk_floors: int = 0  # labels outside the server's top k, scored with the floor
    token_counts_estimated: bool = False  # no tokenize endpoint: counts are characters / 4


class _Secret:
    """Holds the API key so that no repr, log line or traceback variable dump shows it."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


class _Transient(Exception):
    """One attempt failed in a way another attempt (or another server) may not."""

    def __init__(self, url: str, what: str, retry_after: Optional[float] = None):
        super().__init__(what)
        self.url, self.what, self.retry_after = url, what, retry_after


class _Rejected(Exception):
    """The server answered 4xx: retrying the same request will not help."""

    def __init__(self, url: str, status: int, message: str):
        super().__init__(message)
        self.url, self.status, self.message = url, status, message


class _Malformed(Exception):
    """The response does not have the shape or values a completions response must have."""


class _NoEcho(_Malformed):
    """The response has no echoed prompt: the server ignored `echo`."""


class _EchoUnsupported(BackendError):
    pass


# ---- parsing (pure) -------------------------------------------------------------------------


def _logprob(value: Any, what: str) -> float:
    # Reject None, strings, bools, NaN, inf and positive values: a wrong number must never
    # pass as a score.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value > 1e-4:
        raise _Malformed(f"{what} is {value!r}, not a log-probability")
    return float(value)


def _norm(token: str) -> str:
    # Some servers return raw vocabulary pieces ("Ġpositive", "▁positive") instead of text.
    return token.replace("Ġ", " ").replace("▁", " ")


@dataclass
class TokenLogprobs:
    tokens: list[str]
    logprobs: list[Optional[float]]  # None where the server gives none (the first prompt token)
    offsets: Optional[list[int]]  # text_offset, when the server sends it
    top: list[dict[str, Any]]  # per position: candidate token text -> log-prob


def parse_logprobs(logprobs: Any) -> TokenLogprobs:
    """A choice's `logprobs`, in either shape servers use.

    Legacy completions (vLLM, SGLang, OpenAI): tokens, token_logprobs, text_offset, top_logprobs.
    Chat style (llama.cpp): content = [{token, logprob, top_logprobs: [{token, logprob}]}].
    """
    if not isinstance(logprobs, dict):
        raise _Malformed("the choice has no 'logprobs' object")
    if "tokens" in logprobs:
        tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
        offsets, top = logprobs.get("text_offset"), logprobs.get("top_logprobs")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise _Malformed("'tokens' is not a list of strings")
        if not isinstance(values, list) or len(values) != len(tokens):
            raise _Malformed("'token_logprobs' is missing or does not match 'tokens'")
        if offsets is not None and (
            not isinstance(offsets, list) or len(offsets) != len(tokens)
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise _Malformed("'text_offset' is not a list of integers matching 'tokens'")
        if top is None:
            top = [None] * len(tokens)
        if not isinstance(top, list) or len(top) != len(tokens):
            raise _Malformed("'top_logprobs' does not match 'tokens'")
        tops: list[dict[str, Any]] = []
        for entry in top:
            if entry is not None and not isinstance(entry, dict):
                raise _Malformed("a 'top_logprobs' entry is not an object")
            tops.append(dict(entry or {}))
        return TokenLogprobs(list(tokens), list(values), offsets, tops)
    content = logprobs.get("content")
    if not isinstance(content, list):
        raise _Malformed("'logprobs' has neither 'tokens' nor 'content'")
    out = TokenLogprobs([], [], None, [])
    for item in content:
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            raise _Malformed("a 'logprobs.content' entry has no token")
        candidates = item.get("top_logprobs") or []
        if not isinstance(candidates, list):
            raise _Malformed("'top_logprobs' in 'logprobs.content' is not a list")
        top_here: dict[str, Any] = {}
        for cand in candidates:
            if not isinstance(cand, dict) or not isinstance(cand.get("token"), str):
                raise _Malformed("a 'top_logprobs' candidate has no token")
            top_here.setdefault(cand["token"], cand.get("logprob"))
        out.tokens.append(item["token"])
        out.logprobs.append(item.get("logprob"))
        out.top.append(top_here)
    return out


def echo_logprob(lp: TokenLogprobs, continuation: str, generated: int) -> float:
    """Sum of the log-probs of the echoed tokens that spell the continuation.

    The continuation ends the prompt, so its tokens are found from the end: the last
    `generated` tokens are the completion, and the prompt tokens whose text reaches past
    (prompt end - len(continuation)) are the label's. Positions come from `text_offset`
    (counted from the end, so multi-byte characters earlier in the prompt cannot shift them).
    A token that straddles the boundary is included: it is how the model spelled the label.
    """
    n = len(lp.tokens) - generated
    if n < 1:
        raise _NoEcho("the response has no echoed prompt tokens")
    if lp.offsets is not None:
        starts = lp.offsets[:n]
    else:
        starts = list(itertools.accumulate([0] + [len(t) for t in lp.tokens[: n - 1]]))
    end = starts[-1] + len(lp.tokens[n - 1])
    boundary = end - len(continuation)
    picked = [k for k in range(n) if starts[k] + len(lp.tokens[k]) > boundary]
    spelled = _norm("".join(lp.tokens[k] for k in picked))
    if not picked or not spelled.endswith(_norm(continuation)):
        raise _NoEcho(f"the echoed prompt does not end with the label {continuation!r} (got {spelled[-40:]!r})")
    return sum(_logprob(lp.logprobs[k], f"the log-prob of echoed token {k}") for k in picked)


def topk_logprob(top: dict[str, Any], continuation: str) -> tuple[float, bool]:
    """The label's log-prob among the server's top-k next tokens, and whether it is a floor.

    A label missing from the top k is less likely than every token listed, so its log-prob is
    at most the smallest listed one. We score it as that minus log(2): a stand-in just under
    the bound (not a bound itself), so a missing label always ranks below the listed ones.
    """
    if not top:
        raise _Malformed("'top_logprobs' is empty")
    values = {token: _logprob(v, f"the top-k log-prob of {token!r}") for token, v in top.items()}
    if continuation in values:
        return values[continuation], False
    normalized: dict[str, float] = {}
    for token, v in values.items():
        normalized.setdefault(_norm(token), v)
    if _norm(continuation) in normalized:
        return normalized[_norm(continuation)], False
    return min(values.values()) - math.log(2), True


def _error_text(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            for key in ("message", "detail", "error"):
                if isinstance(err.get(key), str):
                    return err[key]
        if isinstance(err, str):
            return err
        for key in ("message", "detail"):
            if isinstance(body.get(key), str):
                return body[key]
    return text


# ---- HTTP ------------------------------------------------------------------------------------


class _Connections:
    """Keep-alive HTTP connections, one set per thread (http.client connections are not thread-safe)."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self._local = threading.local()

    def send(self, method: str, url: str, body: Optional[bytes], headers: dict[str, str]) -> tuple[int, Any, bytes]:
        parts = urllib.parse.urlsplit(url)
        key = (parts.scheme, parts.netloc)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        pool: dict[tuple[str, str], http.client.HTTPConnection] = self._local.__dict__.setdefault("pool", {})
        for _ in range(2):
            conn = pool.pop(key, None)
            reused = conn is not None
            if conn is None:
                cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
                conn = cls(parts.hostname or "", parts.port, timeout=self.timeout)
            try:
                conn.request(method, path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                conn.close()
                if reused:
                    continue  # the server closed an idle keep-alive connection: resend once on a new one
                raise
            except BaseException:
                conn.close()
                raise
            if response.will_close:
                conn.close()
            else:
                pool[key] = conn
            return response.status, response.headers, data
        raise AssertionError("unreachable")


class _Replicas:
    """Round-robin over servers; a server that just failed is skipped for a short while."""

    def __init__(self, urls: Sequence[str], cooldown_s: float):
        self.urls = list(urls)
        self.cooldown_s = cooldown_s
        self._turn = itertools.count()
        self._resting: dict[str, float] = {}
        self._lock = threading.Lock()

    def pick(self, avoid: Optional[str] = None) -> str:
        with self._lock:
            now = time.monotonic()
            start = next(self._turn)
            order = [self.urls[(start + k) % len(self.urls)] for k in range(len(self.urls))]
            others = [u for u in order if u != avoid] or order
            healthy = [u for u in others if self._resting.get(u, 0.0) <= now]
            return (healthy or others)[0]

    def failed(self, url: str) -> None:
        with self._lock:
            self._resting[url] = time.monotonic() + self.cooldown_s


# ---- the backend -----------------------------------------------------------------------------

Slot = tuple[int, int, str]  # (request index, continuation index, continuation text)


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        base_urls: Sequence[str],
        model: str,
        *,
        api_key: Optional[str] = None,
        api_key_env: Optional[str] = None,
        timeout_s: float = 120.0,
        concurrency: int = 8,
        retries: int = 4,
        backoff_s: float = 0.5,
        echo: Union[str, bool] = "auto",
        top_logprobs: int = 20,
        max_context: Optional[int] = None,
        prompts_per_request: int = 1,
        log: Callable[[str], None] = lambda _: None,
    ):
        self.base_urls = [u.rstrip("/") for u in base_urls]
        self.model_name = model
        self.max_context = max_context or DEFAULT_CONTEXT
        self.stats = OpenAIStats()
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.echo: Union[str, bool] = "auto" if echo == "auto" else bool(echo)
        self.top_logprobs = top_logprobs
        self.prompts_per_request = prompts_per_request
        self.log = log
        self._key = _Secret(api_key) if api_key else None
        self._key_env = api_key_env
        self._context_from_config = max_context is not None
        self._http = _Connections(timeout_s)
        self._replicas = _Replicas(self.base_urls, cooldown_s=min(30.0, max(0.05, 10 * backoff_s)))
        self._concurrency = concurrency
        self._pool: Optional[ThreadPoolExecutor] = None
        self._lock = threading.Lock()
        self._mode: Optional[str] = None  # "echo" or "topk", fixed on the first score()
        self._echo_max_tokens = 0  # raised to 1 if the server refuses 0
        self._tokenizer: Optional[str] = None  # "vllm", "llamacpp", "llamacpp-python" or "none", found on first use
        self._added_tokens: list[int] = []  # tokens a tokenize endpoint adds to every text (BOS)
        self._counts: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model_name!r}, base_urls={self.base_urls!r})"

    # ---- one HTTP exchange, and retries across servers -------------------------------------

    def _send(self, url: str, payload: Optional[dict[str, Any]]) -> dict[str, Any]:
        headers = {"Accept": "application/json"}
        body = None
        if payload is not None:
            body = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self._key is not None:
            headers["Authorization"] = "Bearer " + self._key.reveal()
        try:
            status, response_headers, data = self._http.send("GET" if body is None else "POST", url, body, headers)
        except TimeoutError:
            raise _Transient(url, f"no response within {self.timeout_s:g} s") from None
        except ConnectionRefusedError:
            raise _Transient(url, "connection refused") from None
        except (OSError, http.client.HTTPException) as e:
            raise _Transient(url, self._clean(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)) from None
        if status in _TRANSIENT_STATUS or status >= 500:
            retry_after = None
            try:
                retry_after = float(response_headers.get("Retry-After", ""))
            except (TypeError, ValueError):
                pass
            detail = self._clean(_error_text(data))
            raise _Transient(url, f"HTTP {status}" + (f" ({detail})" if detail else ""), retry_after)
        if not 200 <= status < 300:
            raise _Rejected(url, status, self._clean(_error_text(data)))
        try:
            parsed = json.loads(data)
        except ValueError:
            raise BackendError(f"{url}: malformed response (not JSON: {self._clean(data.decode('utf-8', 'replace'))!r})") from None
        if not isinstance(parsed, dict):
            raise BackendError(f"{url}: malformed response (not a JSON object)")
        return parsed

    def _clean(self, text: str) -> str:
        """One short line of server text, with the key scrubbed in case a server echoes headers."""
        if self._key is not None:  # before cutting, so no part of the key survives the cut
            text = text.replace(self._key.reveal(), "***")
        return " ".join(text.split())[:240]

    def _request(self, url_for: Callable[[str], str], payload: Optional[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        attempts = self.retries + 1
        last: Optional[_Transient] = None
        last_base: Optional[str] = None
        for attempt in range(attempts):
            base = self._replicas.pick(avoid=last_base)
            url = url_for(base)
            try:
                return url, self._send(url, payload)
            except _Transient as e:
                last, last_base = e, base
                self._replicas.failed(base)
                if attempt + 1 < attempts:
                    with self._lock:
                        self.stats.retries += 1
                    time.sleep(self._delay(attempt, e.retry_after))
        assert last is not None
        servers = f"{len(self.base_urls)} servers" if len(self.base_urls) > 1 else "1 server"
        raise BackendError(
            f"{last.url}: {last.what} ({attempts} attempts over {servers}); work already accepted is lost "
            f"unless checkpointing is enabled: re-run the same command to start again"
        )

    def _delay(self, attempt: int, retry_after: Optional[float]) -> float:
        delay = min(30.0, self.backoff_s * 2**attempt) * _jitter.uniform(0.5, 1.5)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, 60.0))
        return delay

    def _rejection(self, e: _Rejected, echo: bool) -> Exception:
        """A 4xx answer as the error the user can act on."""
        if _CONTEXT_RE.search(e.message):
            return InputError(
                f"{e.url}: the prompt does not fit {self.model_name}'s context ({e.message}); lower core.max_tokens"
            )
        if echo and re.search(r"echo|logprob", e.message, re.IGNORECASE):
            return _EchoUnsupported(f"{e.url}: the server does not return prompt log-probs (echo): {e.message}")
        if e.status in (401, 403):
            where = f"the key in ${self._key_env}" if self._key_env else "backend.api_key_env (no key was sent)"
            return BackendError(f"{e.url}: HTTP {e.status}, credentials refused ({e.message}); check {where}")
        if e.status == 404:
            return BackendError(
                f"{e.url}: HTTP 404 ({e.message}); check backend.base_urls (they end in /v1) and backend.model"
            )
        if not echo and "logprob" in e.message.lower():
            return BackendError(f"{e.url}: HTTP {e.status} ({e.message}); lower backend.top_logprobs")
        return BackendError(f"{e.url}: HTTP {e.status} ({e.message})")

    # ---- start-up --------------------------------------------------------------------------

    def connect(self) -> None:
        """Check that a server answers, name the model if the config did not, read its context."""
        try:
            url, data = self._request(lambda base: base + "/models", None)
        except _Rejected:
            return  # not every server lists models; completions may still work
        entries = data.get("data") if isinstance(data.get("data"), list) else []
        models = [m for m in entries if isinstance(m, dict) and isinstance(m.get("id"), str)]
        ids = [m["id"] for m in models]
        if self.model_name in ("", "embedded"):
            if not ids:
                raise InputError(f"backend.model: {url} lists no model; name the served model")
            self.model_name = ids[0]
            self.log(f"openai backend: using the served model {self.model_name}")
        elif ids and self.model_name not in ids:
            # llama.cpp serves whatever it loaded under any name, so this is only a warning.
            self.log(f"openai backend: {url} lists {', '.join(ids[:3])}, not {self.model_name}")
        for m in models:
            length = m.get("max_model_len")
            if m["id"] == self.model_name and isinstance(length, int) and length > 0 and not self._context_from_config:
                self.max_context = length

    # ---- tokens ----------------------------------------------------------------------------

    def _tokenize_url(self, base: str) -> str:
        # vLLM and llama.cpp both serve /tokenize at the root, beside /v1.
        return base.removesuffix("/v1") + "/tokenize"

    def _extras_tokenize_url(self, base: str) -> str:
        # llama-cpp-python's server (python -m llama_cpp.server) has it under /extras.
        return base.removesuffix("/v1") + "/extras/tokenize"

    def _tokenize(self, text: str, style: str) -> Union[list[int], int]:
        url_for = self._tokenize_url
        if style == "vllm":
            payload: dict[str, Any] = {"model": self.model_name, "prompt": text, "add_special_tokens": False}
        elif style == "llamacpp":
            payload = {"content": text, "add_special": False}
        else:  # "llamacpp-python": always adds BOS; _added_tokens (what it returns for "") is cut off below
            payload, url_for = {"input": text}, self._extras_tokenize_url
        url, data = self._request(url_for, payload)
        tokens, count = data.get("tokens"), data.get("count")
        if isinstance(tokens, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in tokens):
            added = self._added_tokens if style == "llamacpp-python" else []
            return tokens[len(added):] if added and tokens[: len(added)] == added else tokens
        if isinstance(count, int) and not isinstance(count, bool):
            return count
        raise _Malformed(f"{url}: no 'tokens' list or 'count' in the /tokenize response")

    def _find_tokenizer(self, sample: str) -> str:
        with self._lock:
            if self._tokenizer is not None:
                return self._tokenizer
        found = "none"
        for style in ("vllm", "llamacpp", "llamacpp-python"):
            try:
                result = self._tokenize(sample, style)
            except (_Rejected, _Malformed):
                continue  # not this server's dialect (outages still raise: they are not "no endpoint")
            except BackendError:
                if style != "llamacpp-python":
                    raise
                # The server answered the two probes before; one that chokes on this path is not
                # llama-cpp-python's (an outage shows on the next request anyway).
                continue
            # llama.cpp answers a vLLM-shaped body with an empty list: that is not a tokenizer.
            if (isinstance(result, list) and result) or (isinstance(result, int) and result > 0):
                found = style
                break
        if found == "llamacpp-python":
            added = self._tokenize("", found)  # only what the server adds itself (BOS)
            self._added_tokens = added if isinstance(added, list) else []
            # That server reads max_tokens 0 as "until the context is full": echo asks for one token.
            self._echo_max_tokens = max(self._echo_max_tokens, 1)
        if found == "none":
            self.stats.token_counts_estimated = True
            self.log("openai backend: the server has no tokenize endpoint; token counts are estimated as characters / 4")
        with self._lock:
            self._tokenizer = found
        return found

    def _token_ids(self, text: str) -> Union[list[int], int, None]:
        style = self._find_tokenizer(text or " ")
        if style == "none":
            return None
        try:
            return self._tokenize(text, style)
        except _Rejected as e:
            raise self._rejection(e, echo=False) from None
        except _Malformed as e:
            raise BackendError(f"malformed response ({e})") from None

    def count_tokens(self, text: str) -> int:
        cached = self._counts.get(text)
        if cached is not None:
            return cached
        if not text:
            return 0
        result = self._token_ids(text)
        n = max(1, round(len(text) / 4)) if result is None else (len(result) if isinstance(result, list) else result)
        if len(self._counts) > 200_000:
            self._counts.clear()
        self._counts[text] = n
        return n

    def _label_lengths(self, context: str, continuations: Sequence[str]) -> Optional[list[int]]:
        """Tokens each label adds after `context`, as the server tokenizes it; None without a tokenizer."""
        base = self._token_ids(context)
        if base is None:
            return None
        out = []
        for c in continuations:
            joint = self._token_ids(context + c)
            if isinstance(base, list) and isinstance(joint, list):
                common = next((k for k, (a, b) in enumerate(zip(base, joint)) if a != b), min(len(base), len(joint)))
                out.append(len(joint) - common)
            else:
                out.append((len(joint) if isinstance(joint, list) else int(joint or 0))
                           - (len(base) if isinstance(base, list) else base))
        return out

    # ---- scoring ---------------------------------------------------------------------------

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        if not requests:
            return []
        if any(not c for r in requests for c in r.continuations):
            raise InputError("a label continuation is empty")
        estimates = self._check_context(requests)
        mode = self._resolve_mode(requests)
        jobs: list[tuple[str, list[Slot]]] = []
        for i, r in enumerate(requests):
            prompt = "".join(r.segments)
            if mode == "echo":
                jobs.extend((prompt + c, [(i, k, c)]) for k, c in enumerate(r.continuations))
            else:
                jobs.append((prompt, [(i, k, c) for k, c in enumerate(r.continuations)]))
        size = self.prompts_per_request
        chunks = [jobs[s : s + size] for s in range(0, len(jobs), size)]
        results = self._map(lambda chunk: self._run(chunk, mode), chunks)
        out = [[0.0] * len(r.continuations) for r in requests]
        self.stats.requests += len(requests)
        reads = floors = 0
        for chunk, (values, prompt_tokens, cached) in zip(chunks, results):
            for i, k, value, floored in values:
                out[i][k] = value
                reads += 1
                floors += floored
            if prompt_tokens is None:  # the server reported no usage: use our estimate
                prompt_tokens = sum(estimates[slots[0][0]] for _, slots in chunk)
            self.stats.forward_calls += 1
            self.stats.tokens_requested += prompt_tokens
            # Only the server knows what its prefix cache saved; vLLM reports it as cached_tokens.
            self.stats.tokens_computed += prompt_tokens - min(cached or 0, prompt_tokens)
        self.stats.topk_floors += floors
        if mode == "topk" and reads >= 8 and floors == reads:
            # Real models put some label in the top k somewhere; never seeing one means the
            # server names tokens differently (e.g. as ids) and every score would be a floor.
            raise BackendError(
                f"none of the labels {list(requests[0].continuations)} is among the server's top "
                f"{self.top_logprobs} next tokens in {len(requests)} prompts; set backend.echo: true"
            )
        return out

    def _check_context(self, requests: Sequence[ScoreRequest]) -> list[int]:
        texts = list(dict.fromkeys(t for r in requests for t in (*r.segments, *r.continuations)))
        missing = [t for t in texts if t and t not in self._counts]
        if missing:
            self.count_tokens(missing[0])  # finds the tokenizer once, before going parallel
            self._map(self.count_tokens, missing[1:])
        estimates = [
            1 + sum(self.count_tokens(s) for s in r.segments) + max(self.count_tokens(c) for c in r.continuations)
            for r in requests
        ]
        worst = max(estimates)
        # Characters / 4 is only a guess: leave near misses to the server, which says exactly.
        if worst > self.max_context * (1.25 if self.stats.token_counts_estimated else 1.0):
            raise InputError(
                f"a prompt of about {worst:,} tokens exceeds the context window of {self.max_context:,} "
                f"for {self.model_name} (backend.max_context); lower core.max_tokens"
            )
        return estimates

    def _resolve_mode(self, requests: Sequence[ScoreRequest]) -> str:
        if self._mode is not None:
            return self._mode
        first = requests[0]
        context = first.segments[-1] if first.segments else ""
        labels = list(dict.fromkeys(c for r in requests for c in r.continuations))
        lengths = self._label_lengths(context, labels)
        multi = [(c, n) for c, n in zip(labels, lengths or []) if n != 1]
        need_echo = (
            f"label {multi[0][0]!r} is {multi[0][1]} tokens for {self.model_name}, and without echo only one "
            f"token is read" if multi else ""
        )
        if self.echo is False:
            if multi:
                raise InputError(f"{need_echo}: set backend.echo: true")
            if lengths is None:
                self.log("openai backend: no tokenize endpoint, so labels are assumed to be one token each (echo: false)")
            mode = "topk"
        elif self.echo == "auto" and lengths is not None and not multi:
            mode = "topk"
            self.log("openai backend: every label is one token; reading them from the top-k next tokens (echo: auto)")
        else:
            reason = self._probe_echo(context + labels[0], labels[0])
            if reason is None:
                mode = "echo"
            elif self.echo is True:
                raise BackendError(f"{reason}; set backend.echo: auto or false")
            elif multi:
                raise InputError(f"{need_echo}, but {reason}; use one-token labels")
            else:
                mode = "topk"
                self.log(f"openai backend: no echo ({reason}); reading labels from the top-k next tokens")
        self._mode = mode
        return mode

    def _probe_echo(self, prompt: str, label: str) -> Optional[str]:
        """None if the server echoes prompt log-probs, else why not. Other failures propagate."""
        try:
            url, choices, max_tokens, _ = self._complete([prompt], echo=True)
        except _EchoUnsupported as e:
            return e.message
        try:
            echo_logprob(parse_logprobs(choices[0].get("logprobs")), label, max_tokens)
        except _NoEcho as e:
            return f"{url}: the response has no prompt log-probs ({e})"
        except _Malformed as e:
            raise BackendError(f"{url}: malformed response ({e})") from None
        return None

    def _complete(self, prompts: list[str], echo: bool) -> tuple[str, list[dict[str, Any]], int, Any]:
        """POST /completions; the choices in prompt order, the max_tokens used, and usage."""
        payload: dict[str, Any] = {
            "model": self.model_name,
            "prompt": prompts[0] if len(prompts) == 1 else prompts,
            "temperature": 0.0,
        }
        if echo:
            payload.update(echo=True, logprobs=1, max_tokens=self._echo_max_tokens)
        else:
            payload.update(max_tokens=1, logprobs=self.top_logprobs)
        while True:
            try:
                url, data = self._request(lambda base: base + "/completions", payload)
                break
            except _Rejected as e:
                if (echo and payload["max_tokens"] == 0 and not _CONTEXT_RE.search(e.message)
                        and re.search(r"max_tokens|max tokens|n_predict", e.message, re.IGNORECASE)):
                    # Some servers want at least one new token; the one it adds is skipped when reading.
                    self._echo_max_tokens = payload["max_tokens"] = 1
                    continue
                raise self._rejection(e, echo) from None
        choices = data.get("choices")
        if not isinstance(choices, list) or len(choices) != len(prompts) or not all(isinstance(c, dict) for c in choices):
            raise BackendError(f"{url}: malformed response (expected {len(prompts)} choice(s))")
        indices = [c.get("index") for c in choices]
        if all(isinstance(k, int) for k in indices) and sorted(indices) == list(range(len(prompts))):
            choices = sorted(choices, key=lambda c: c["index"])
        return url, choices, int(payload["max_tokens"]), data.get("usage")

    def _run(self, chunk: list[tuple[str, list[Slot]]], mode: str) -> tuple[list[tuple[int, int, float, bool]], Optional[int], Optional[int]]:
        url, choices, max_tokens, usage = self._complete([prompt for prompt, _ in chunk], echo=mode == "echo")
        values: list[tuple[int, int, float, bool]] = []
        try:
            for (_, slots), choice in zip(chunk, choices):
                lp = parse_logprobs(choice.get("logprobs"))
                if mode == "echo":
                    ((i, k, c),) = slots
                    values.append((i, k, echo_logprob(lp, c, max_tokens), False))
                    continue
                if not lp.tokens:
                    raise _Malformed("no generated token")
                if len(lp.top[0]) < min(self.top_logprobs, 2):
                    # A server that ignores `logprobs: k` would leave every other label at the floor.
                    raise _Malformed(f"{len(lp.top[0])} top log-probs where {self.top_logprobs} were asked for")
                top = dict(lp.top[0])
                top.setdefault(lp.tokens[0], lp.logprobs[0])  # the sampled token counts too
                for i, k, c in slots:
                    value, floored = topk_logprob(top, c)
                    values.append((i, k, value, floored))
        except _Malformed as e:
            raise BackendError(f"{url}: malformed response ({e})") from None
        prompt_tokens = cached = None
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            prompt_tokens = usage["prompt_tokens"]
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                cached = details["cached_tokens"]
        return values, prompt_tokens, cached

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """fn over items on the thread pool; the first failure cancels what has not started."""
        if len(items) <= 1:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self._concurrency, thread_name_prefix="icm-openai")
        futures = [self._pool.submit(fn, item) for item in items]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:
                if f.done() and not f.cancelled() and f.exception() is not None:
                    raise f.exception()  # type: ignore[misc]
            return [f.result() for f in futures]
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def load_openai_backend(config: BackendConfig, log: Callable[[str], None] = lambda _: None) -> OpenAIBackend:
    if not config.base_urls:
        raise InputError('backend.base_urls: list at least one server, e.g. ["http://127.0.0.1:8000/v1"]')
    for url in config.base_urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"backend.base_urls: '{url}' is not an http(s) URL")
        if parts.username or parts.password:
            raise InputError("backend.base_urls: put credentials in the variable named by backend.api_key_env, not in the URL")
    key = None
    if config.api_key_env:
        key = os.environ.get(config.api_key_env)
        if not key:
            raise InputError(f"backend.api_key_env: environment variable {config.api_key_env} is not set")
    backend = OpenAIBackend(
        config.base_urls, config.model, api_key=key, api_key_env=config.api_key_env,
        timeout_s=config.timeout_s, concurrency=config.concurrency, retries=config.retries,
        backoff_s=config.backoff_s, echo=config.echo, top_logprobs=config.top_logprobs,
        max_context=config.max_context, prompts_per_request=config.prompts_per_request, log=log,
    )
    backend.connect()
    return backend
