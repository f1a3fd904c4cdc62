"""Reading label log-probabilities out of a /v1/completions response (pure: no I/O).

Two response shapes carry them: the legacy completions `logprobs` object (vLLM, SGLang,
OpenAI) and llama.cpp's chat-style `logprobs.content` list. Two readings: the echoed prompt's
tokens that spell the label (echo), or the label among the top-k next tokens (top-k).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Any, Optional


class Malformed(Exception):
    """The response does not have the shape or values a completions response must have."""


class NoEcho(Malformed):
    """The response has no echoed prompt: the server ignored `echo`."""


def _logprob(value: Any, what: str) -> float:
    # Reject None, strings, bools, NaN, inf and positive values: a wrong number must never
    # pass as a score.
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value > 1e-4:
        raise Malformed(f"{what} is {value!r}, not a log-probability")
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
        raise Malformed("the choice has no 'logprobs' object")
    if "tokens" in logprobs:
        tokens, values = logprobs.get("tokens"), logprobs.get("token_logprobs")
        offsets, top = logprobs.get("text_offset"), logprobs.get("top_logprobs")
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise Malformed("'tokens' is not a list of strings")
        if not isinstance(values, list) or len(values) != len(tokens):
            raise Malformed("'token_logprobs' is missing or does not match 'tokens'")
        if offsets is not None and (
            not isinstance(offsets, list) or len(offsets) != len(tokens)
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        ):
            raise Malformed("'text_offset' is not a list of integers matching 'tokens'")
        if top is None:
            top = [None] * len(tokens)
        if not isinstance(top, list) or len(top) != len(tokens):
            raise Malformed("'top_logprobs' does not match 'tokens'")
        tops: list[dict[str, Any]] = []
        for entry in top:
            if entry is not None and not isinstance(entry, dict):
                raise Malformed("a 'top_logprobs' entry is not an object")
            tops.append(dict(entry or {}))
        return TokenLogprobs(list(tokens), list(values), offsets, tops)
    content = logprobs.get("content")
    if not isinstance(content, list):
        raise Malformed("'logprobs' has neither 'tokens' nor 'content'")
    out = TokenLogprobs([], [], None, [])
    for item in content:
        if not isinstance(item, dict) or not isinstance(item.get("token"), str):
            raise Malformed("a 'logprobs.content' entry has no token")
        candidates = item.get("top_logprobs") or []
        if not isinstance(candidates, list):
            raise Malformed("'top_logprobs' in 'logprobs.content' is not a list")
        top_here: dict[str, Any] = {}
        for cand in candidates:
            if not isinstance(cand, dict) or not isinstance(cand.get("token"), str):
                raise Malformed("a 'top_logprobs' candidate has no token")
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
        raise NoEcho("the response has no echoed prompt tokens")
    if lp.offsets is not None:
        starts = lp.offsets[:n]
    else:
        starts = list(itertools.accumulate([0] + [len(t) for t in lp.tokens[: n - 1]]))
    end = starts[-1] + len(lp.tokens[n - 1])
    boundary = end - len(continuation)
    picked = [k for k in range(n) if starts[k] + len(lp.tokens[k]) > boundary]
    spelled = _norm("".join(lp.tokens[k] for k in picked))
    if not picked or not spelled.endswith(_norm(continuation)):
        raise NoEcho(f"the echoed prompt does not end with the label {continuation!r} (got {spelled[-40:]!r})")
    return sum(_logprob(lp.logprobs[k], f"the log-prob of echoed token {k}") for k in picked)


def topk_logprob(top: dict[str, Any], continuation: str) -> tuple[float, bool]:
    """The label's log-prob among the server's top-k next tokens, and whether it is a floor.

    A label missing from the top k is less likely than every token listed, so its log-prob is
    at most the smallest listed one. We score it as that minus log(2): a stand-in just under
    the bound (not a bound itself), so a missing label always ranks below the listed ones.
    """
    if not top:
        raise Malformed("'top_logprobs' is empty")
    values = {token: _logprob(v, f"the top-k log-prob of {token!r}") for token, v in top.items()}
    if continuation in values:
        return values[continuation], False
    normalized: dict[str, float] = {}
    for token, v in values.items():
        normalized.setdefault(_norm(token), v)
    if _norm(continuation) in normalized:
        return normalized[_norm(continuation)], False
    return min(values.values()) - math.log(2), True


def topk_candidates(lp: TokenLogprobs, asked: int) -> dict[str, Any]:
    """The candidates for the first generated token (the sampled one included), checked."""
    if not lp.tokens:
        raise Malformed("no generated token")
    if len(lp.top[0]) < min(asked, 2):
        # A server that ignores `logprobs: k` would leave every other label at the floor.
        raise Malformed(f"{len(lp.top[0])} top log-probs where {asked} were asked for")
    top = dict(lp.top[0])
    top.setdefault(lp.tokens[0], lp.logprobs[0])  # the sampled token counts too
    return top
