"""The /completions requests of the openai backend: whether labels are read from the echoed prompt
or from the top-k next tokens (echo: auto decides on the first score()), what a request says, what
its answer means, and a 4xx answer as the error the user can act on. openai_server.py sends them
concurrently and keeps the stats; openai_logprobs.py parses the log-probs."""

from __future__ import annotations

import re
from typing import Any, Callable, Optional, Sequence, Union

from ..foundation.backend_options import OpenAIOptions
from ..foundation.errors import BackendError, InputError
from .base import ScoreRequest
from .openai_logprobs import Malformed, NoEcho, echo_logprob, parse_logprobs, topk_candidates, topk_logprob
from .openai_retry import Rejected
from .openai_tokenizer import ServerTokenizer
from .openai_transport import Transport

# Servers name "the prompt does not fit" in many ways (vLLM, SGLang, llama.cpp, OpenAI).
CONTEXT_RE = re.compile(
    r"context (length|size|window)|max_model_len|maximum (model|context) length|n_ctx|too long|exceeds? the",
    re.IGNORECASE,
)


class EchoUnsupported(BackendError):
    pass


Slot = tuple[int, int, str]  # (request index, continuation index, continuation text)


class Completions:
    """The backend's /completions requests; `model` is the served name, which connect() may fill in
    after construction."""

    def __init__(self, transport: Transport, model: Callable[[], str], tokens: ServerTokenizer,
                 options: OpenAIOptions, log: Callable[[str], None]):
        self._http = transport
        self._model = model
        self._tokens = tokens
        self.echo: Union[str, bool] = "auto" if options.echo == "auto" else bool(options.echo)
        self.top_logprobs = options.top_logprobs
        self._key_env = options.api_key_env
        self.log = log
        self._mode: Optional[str] = None  # "echo" or "topk", fixed on the first score()
        self._echo_max_tokens = 0  # raised to 1 if the server refuses 0

    @property
    def echo_max_tokens(self) -> int:
        """The max_tokens echo requests ask for: 0, or 1 where the server refused 0 (or reads 0 as
        "until the context is full", as llama-cpp-python does)."""
        return self._echo_max_tokens

    def rejection(self, e: Rejected, echo: bool) -> Exception:
        """A 4xx or 501 answer as the error the user can act on."""
        if CONTEXT_RE.search(e.message):
            return InputError(
                f"{e.url}: the prompt does not fit {self._model()}'s context ({e.message}); lower core.max_tokens"
            )
        if echo and re.search(r"echo|logprob", e.message, re.IGNORECASE):
            return EchoUnsupported(f"{e.url}: the server does not return prompt log-probs (echo): {e.message}")
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

    def resolve_mode(self, requests: Sequence[ScoreRequest]) -> str:
        if self._mode is not None:
            return self._mode
        first = requests[0]
        context = first.segments[-1] if first.segments else ""
        labels = list(dict.fromkeys(c for r in requests for c in r.continuations))
        lengths = self._tokens.label_lengths(context, labels)
        multi = [(c, n) for c, n in zip(labels, lengths or []) if n != 1]
        need_echo = (
            f"label {multi[0][0]!r} is {multi[0][1]} tokens for {self._model()}, and without echo only one "
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
            url, choices, max_tokens, _ = self.complete([prompt], echo=True)
        except EchoUnsupported as e:
            return e.message
        try:
            echo_logprob(parse_logprobs(choices[0].get("logprobs")), label, max_tokens)
        except NoEcho as e:
            return f"{url}: the response has no prompt log-probs ({e})"
        except Malformed as e:
            raise BackendError(f"{url}: malformed response ({e})") from None
        return None

    def complete(self, prompts: list[str], echo: bool) -> tuple[str, list[dict[str, Any]], int, Any]:
        """POST /completions; the choices in prompt order, the max_tokens used, and usage."""
        payload: dict[str, Any] = {
            "model": self._model(),
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
                if (echo and payload["max_tokens"] == 0 and not CONTEXT_RE.search(e.message)
                        and re.search(r"max_tokens|max tokens|n_predict", e.message, re.IGNORECASE)):
                    # Some servers want at least one new token; the one it adds is skipped when reading.
                    self._echo_max_tokens = payload["max_tokens"] = 1
                    continue
                raise self.rejection(e, echo) from None
        choices = data.get("choices")
        if not isinstance(choices, list) or len(choices) != len(prompts) or not all(isinstance(c, dict) for c in choices):
            raise BackendError(f"{url}: malformed response (expected {len(prompts)} choice(s))")
        indices = [c.get("index") for c in choices]
        if all(isinstance(k, int) for k in indices) and sorted(indices) == list(range(len(prompts))):
            choices = sorted(choices, key=lambda c: c["index"])
        return url, choices, int(payload["max_tokens"]), data.get("usage")

    def run(self, chunk: list[tuple[str, list[Slot]]], mode: str) -> tuple[list[tuple[int, int, float, bool]], Optional[int], Optional[int]]:
        url, choices, max_tokens, usage = self.complete([prompt for prompt, _ in chunk], echo=mode == "echo")
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

