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

Parsing the log-probs is openai_logprobs.py; finding the server's tokenizer, openai_tokenizer.py;
choosing echo or top-k, a request's body and reading its answer, openai_completions.py.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import urllib.parse
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Optional, Sequence, TypeVar

from ..foundation.backend_options import OpenAIOptions
from ..foundation.config import BackendConfig
from ..foundation.errors import BackendError, InputError
from .base import BackendStats, ScoreRequest
from .openai_completions import Completions, Slot
from .openai_key import Secret, sent_in_clear
from .openai_retry import Rejected, RetriesExhausted, ServerUnreachable
from .openai_tokenizer import ServerTokenizer
from .openai_transport import Transport

if TYPE_CHECKING:
    import httpx

DEFAULT_CONTEXT = 4096
T = TypeVar("T")
R = TypeVar("R")


@dataclass
class OpenAIStats(BackendStats):
    retries: int = 0  # failed attempts that were tried again
    topk_floors: int = 0  # labels outside the server's top k, scored with the floor
    token_counts_estimated: bool = False  # no tokenize endpoint: counts are characters / 4


def _estimate(text: str) -> int:
    return max(1, round(len(text) / 4)) if text else 0


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str,
        options: OpenAIOptions,
        *,
        api_key: Optional[str] = None,
        max_context: Optional[int] = None,
        log: Callable[[str], None] = lambda _: None,
        transport: Optional["httpx.BaseTransport"] = None,  # instead of the network (tests)
    ):
        self.options = dataclasses.replace(options, base_urls=tuple(u.rstrip("/") for u in options.base_urls))
        self.model_name = model
        self.max_context = max_context or DEFAULT_CONTEXT
        self.stats = OpenAIStats()
        self.log = log
        self._context_from_config = max_context is not None
        self._http = Transport(self.options, key=Secret(api_key) if api_key else None, on_retry=self._count_retry,
                               transport=transport)
        exposed = sent_in_clear(self.options.base_urls) if api_key else []
        if exposed:  # a warning, not an error: a private network may be trusted, which only the user knows
            log(f"openai backend: warning: the API key goes unencrypted (plain http://) to {', '.join(exposed)}; "
                f"use https:// for a server beyond this machine")
        self._tokens = ServerTokenizer(self._http, lambda: self.model_name,
                                       lambda e: self._completions.rejection(e, echo=False), log)
        self._completions = Completions(self._http, lambda: self.model_name, self._tokens, self.options, log)
        self._pool: Optional[ThreadPoolExecutor] = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"OpenAIBackend(model={self.model_name!r}, base_urls={list(self.options.base_urls)!r})"

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
            if len(self.options.base_urls) == 1:  # the message names the one URL
                raise ServerUnreachable(f"no server answered at start-up: {e.message}") from None
            raise ServerUnreachable(
                f"no server answered at start-up ({', '.join(self.options.base_urls)}); the last: {e.message}"
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
        mode = self._completions.resolve_mode(requests)
        jobs: list[tuple[str, list[Slot]]] = []
        for i, r in enumerate(requests):
            prompt = "".join(r.segments)
            if mode == "echo":
                jobs.extend((prompt + c, [(i, k, c)]) for k, c in enumerate(r.continuations))
            else:
                jobs.append((prompt, [(i, k, c) for k, c in enumerate(r.continuations)]))
        size = self.options.prompts_per_request
        chunks = [jobs[s : s + size] for s in range(0, len(jobs), size)]
        results = self._map(lambda chunk: self._completions.run(chunk, mode), chunks)
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
                f"{self.options.top_logprobs} next tokens in {len(requests)} prompts; set backend.echo: true"
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
            self._pool = ThreadPoolExecutor(max_workers=self.options.concurrency, thread_name_prefix="icm-openai")
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

    @property
    def echo_max_tokens(self) -> int:
        return self._completions.echo_max_tokens

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
    backend = OpenAIBackend(config.model, config.openai, api_key=key, max_context=config.max_context, log=log)
    try:
        backend.connect()
    except BaseException:
        backend.close()
        raise
    return backend
