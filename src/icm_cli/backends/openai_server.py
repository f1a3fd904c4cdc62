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

score() sends its requests concurrently, up to `concurrency` in flight, spread over the replicas
(openai_transport.py: httpx and failover; openai_retry.py: replica choice and retries); results come back in
request order, so scores do not depend on which replica answered or when. The API
key is read from the environment variable named in the config, sent as a Bearer header and never
put in messages, reprs or outputs.

Parsing the log-probs is openai_logprobs.py; finding the server's tokenizer, openai_tokenizer.py.
"""

from __future__ import annotations

import os
import re
import threading
import urllib.parse
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, TypeVar, Union

from ..config import BackendConfig
from ..errors import BackendError, InputError
from .base import BackendStats, ScoreRequest
from .openai_logprobs import Malformed, NoEcho, echo_logprob, parse_logprobs, topk_candidates, topk_logprob
from .openai_tokenizer import ServerTokenizer
from .openai_key import Secret, sent_in_clear
from .openai_retry import Rejected, RetriesExhausted, ServerUnreachable
from .openai_transport import Transport

if TYPE_CHECKING:
    import httpx

DEFAULT_CONTEXT = 4096
# Servers name "the prompt does not fit" in many ways (vLLM, SGLang, llama.cpp, OpenAI).
_CONTEXT_RE = re.compile(
    r"context (length|size|window)|max_model_len|maximum (model|context) length|n_ctx|too long|exceeds? the",
    re.IGNORECASE,
)
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class OpenAIStats(BackendStats):
    retries: int = 0  # failed attempts that were tried again
    topk_floors: int = 0  # labels outside the server's top k, scored with the floor
    token_counts_estimated: bool = False  # no tokenize endpoint: counts are characters / 4


def _estimate(text: str) -> int:
    return max(1, round(len(text) / 4)) if text else 0


class _EchoUnsupported(BackendError):
    pass


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
        transport: Optional["httpx.BaseTransport"] = None,  # instead of the network (tests)
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
        self._key_env = api_key_env
        self._context_from_config = max_context is not None
        self._http = Transport(
            self.base_urls, timeout_s=timeout_s, retries=retries, backoff_s=backoff_s, concurrency=concurrency,
            key=Secret(api_key) if api_key else None, on_retry=self._count_retry, transport=transport,
        )
        exposed = sent_in_clear(self.base_urls) if api_key else []
        if exposed:  # a warning, not an error: a private network may be trusted, which only the user knows
            log(f"openai backend: warning: the API key goes unencrypted (plain http://) to {', '.join(exposed)}; "
                f"use https:// for a server beyond this machine")
        self._tokens = ServerTokenizer(self._http, lambda: self.model_name, lambda e: self._rejection(e, echo=False), log)
        self.concurrency = concurrency
        self._pool: Optional[ThreadPoolExecutor] = None
        self._lock = threading.Lock()
        self._mode: Optional[str] = None  # "echo" or "topk", fixed on the first score()
        self._echo_max_tokens = 0  # raised to 1 if the server refuses 0

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model_name!r}, base_urls={self.base_urls!r})"

    @property
    def identity(self) -> str:
        """The served model as the server names it: what a checkpoint compares (the servers'
        addresses may change between a run and its resume; the model may not)."""
        return f"model {self.model_name} on an OpenAI-compatible server"

    def forget(self) -> None:
        pass  # the servers' prefix caches are theirs to keep

    def _count_retry(self) -> None:
        with self._lock:
            self.stats.retries += 1

    def _rejection(self, e: Rejected, echo: bool) -> Exception:
        """A 4xx or 501 answer as the error the user can act on."""
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
        if e.status == 501:
            return BackendError(f"{e.url}: HTTP 501, not implemented by this server ({e.message})")
        if not echo and "logprob" in e.message.lower():
            return BackendError(f"{e.url}: HTTP {e.status} ({e.message}); lower backend.top_logprobs")
        return BackendError(f"{e.url}: HTTP {e.status} ({e.message})")

    # ---- start-up --------------------------------------------------------------------------

    def connect(self) -> None:
        """Check that a server answers, name the model if the config did not, read its context.

        Raises ServerUnreachable when no server answers at all: no work has started, so unlike a
        failure later in the run there is nothing to resume.
        """
        try:
            url, data = self._http.request(lambda base: base + "/models", None)
        except Rejected:
            return  # not every server lists models; completions may still work
        except RetriesExhausted as e:
            if len(self.base_urls) == 1:  # the message names the one URL
                raise ServerUnreachable(f"no server answered at start-up: {e.message}") from None
            raise ServerUnreachable(
                f"no server answered at start-up ({', '.join(self.base_urls)}); the last: {e.message}"
            ) from None
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

    def count_tokens(self, text: str) -> int:
        n = self._tokens.count(text)
        self.stats.token_counts_estimated = self._tokens.estimated
        return n

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
        """Each request's prompt tokens, for the context check (and the stats, where the server
        reports no usage). The shared pieces (demonstrations, labels) are counted by the server's
        tokenizer once each; a row's own last piece is estimated at characters / 4 rather than
        sent to /tokenize: one extra request per row would double a fleet's traffic."""
        shared = list(dict.fromkeys(t for r in requests for t in (*r.segments[:-1], *r.continuations)))
        missing = [t for t in shared if t and not self._tokens.known(t)]
        if missing:
            self.count_tokens(missing[0])  # finds the tokenizer once, before going parallel
            self._map(self.count_tokens, missing[1:])
        estimates = [
            1 + sum(self.count_tokens(s) for s in r.segments[:-1]) + _estimate(r.segments[-1] if r.segments else "")
            + max(self.count_tokens(c) for c in r.continuations)
            for r in requests
        ]
        worst = max(estimates)
        # Characters / 4 is only a guess (for a row's own text always, for everything without a
        # tokenize endpoint): leave near misses to the server, which says exactly.
        if worst > self.max_context * 1.25:
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
        lengths = self._tokens.label_lengths(context, labels)
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
        except NoEcho as e:
            return f"{url}: the response has no prompt log-probs ({e})"
        except Malformed as e:
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
            if self._tokens.style == "llamacpp-python":
                # That server reads max_tokens 0 as "until the context is full": echo asks for one token.
                self._echo_max_tokens = max(self._echo_max_tokens, 1)
            payload.update(echo=True, logprobs=1, max_tokens=self._echo_max_tokens)
        else:
            payload.update(max_tokens=1, logprobs=self.top_logprobs)
        while True:
            try:
                url, data = self._http.request(lambda base: base + "/completions", payload)
                break
            except Rejected as e:
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
                top = topk_candidates(lp, self.top_logprobs)
                for i, k, c in slots:
                    value, floored = topk_logprob(top, c)
                    values.append((i, k, value, floored))
        except Malformed as e:
            raise BackendError(f"{url}: malformed response ({e})") from None
        prompt_tokens = cached = None
        if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
            prompt_tokens = usage["prompt_tokens"]
            details = usage.get("prompt_tokens_details")
            if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
                cached = details["cached_tokens"]
        return values, prompt_tokens, cached

    def _map(self, fn: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """fn over items, `concurrency` at a time (the transport spreads them over the replicas).

        Results come in item order, whatever order they finish in. The first failure, or a
        KeyboardInterrupt in the calling thread, cancels what has not started and ends what is in
        flight: no worker goes on retrying a server for results nobody will read, and none is left
        blocked (the pool's threads are not daemons: the interpreter joins them at exit).
        """
        if len(items) <= 1:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="icm-openai")
        futures = [self._pool.submit(fn, item) for item in items]
        try:
            wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:
                if f.done() and not f.cancelled() and f.exception() is not None:
                    raise f.exception()  # type: ignore[misc]
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:  # first, so that no worker freed below takes up another item
                f.cancel()
            self._http.cancel()
            raise
        finally:
            for f in futures:
                f.cancel()

    def close(self) -> None:
        """Returns within about a second, even with requests waiting on a server that never answers."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self._http.close()  # ends the requests in flight, so the pool's threads finish now


def load_openai_backend(config: BackendConfig, log: Callable[[str], None] = lambda _: None,
                        progress: bool = False) -> OpenAIBackend:
    if not config.openai.base_urls:
        raise InputError('backend.base_urls: list at least one server, e.g. ["http://127.0.0.1:8000/v1"]')
    for url in config.openai.base_urls:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InputError(f"backend.base_urls: '{url}' is not an http(s) URL")
        if parts.username or parts.password:
            raise InputError("backend.base_urls: put credentials in the variable named by backend.api_key_env, not in the URL")
    key = None
    if config.openai.api_key_env:
        key = os.environ.get(config.openai.api_key_env)
        if not key:
            raise InputError(f"backend.api_key_env: environment variable {config.openai.api_key_env} is not set")
    backend = OpenAIBackend(
        config.openai.base_urls, config.model, api_key=key, api_key_env=config.openai.api_key_env,
        timeout_s=config.openai.timeout_s, concurrency=config.openai.concurrency, retries=config.openai.retries,
        backoff_s=config.openai.backoff_s, echo=config.openai.echo, top_logprobs=config.openai.top_logprobs,
        max_context=config.max_context, prompts_per_request=config.openai.prompts_per_request, log=log,
    )
    try:
        backend.connect()
    except BaseException:
        backend.close()
        raise
    return backend
