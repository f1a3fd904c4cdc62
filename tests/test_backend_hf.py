"""The hf backend on the real embedded model: prefix reuse computes the same scores as from-scratch."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from icm_cli.backends.base import ScoreRequest
from icm_cli.backends.loading import load_backend
from icm_cli.config import BackendConfig
from icm_cli.errors import InputError
from icm_cli.scoring import CoherenceScorer, PromptSet

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def backend():
    # fp32 so that batching and cache reuse differ from scratch only by float rounding.
    return load_backend(BackendConfig(dtype="float32"))


@pytest.fixture(scope="module")
def prompts() -> PromptSet:
    rows = [json.loads(line) for line in (ROOT / "examples" / "tweets-16.jsonl").read_text().splitlines()]
    return PromptSet(tuple(f"Tweet: {r['text']}\nSentiment:" for r in rows[:12]), ("positive", "negative"))


def test_fast_path_matches_reference_on_random_label_sets(backend, prompts):
    rng = random.Random(0)
    for trial in range(3):
        labels = tuple(rng.choice([None, 0, 1, 1]) for _ in prompts.queries)
        requests, _ = CoherenceScorer(prompts, backend).requests(labels)
        backend.reuse_prefixes = True
        before = backend.stats.tokens_computed
        fast = backend.score(requests)
        fast_tokens = backend.stats.tokens_computed - before
        backend.reuse_prefixes = False
        before = backend.stats.tokens_computed
        slow = backend.score(requests)
        slow_tokens = backend.stats.tokens_computed - before
        backend.reuse_prefixes = True
        for a, b in zip(fast, slow):
            assert a == pytest.approx(b, abs=1e-3)
        assert fast_tokens < slow_tokens


def test_multi_token_continuations_equal_whole_prompt_scoring(backend):
    prompt = ("Tweet: what a lovely morning\nSentiment: positive\n\n", "Tweet: my flight is late again\nSentiment:")
    words = (" very negative", " positive", " mildly annoyed")
    backend.reuse_prefixes = True
    fast = backend.score([ScoreRequest(prompt, words)])[0]
    backend.reuse_prefixes = False
    slow = backend.score([ScoreRequest(prompt, words)])[0]
    backend.reuse_prefixes = True
    assert fast == pytest.approx(slow, abs=1e-3)
    # Two tokens cannot be likelier than their first one alone.
    first_only = backend.score([ScoreRequest(prompt, (" very", " positive", " mildly"))])[0]
    assert fast[0] < first_only[0]
    assert fast[1] == pytest.approx(first_only[1], abs=1e-4)


def test_sentiment_signal_is_read(backend):
    good = backend.score([ScoreRequest(("Review: I loved every minute, wonderful!\nSentiment:",), (" positive", " negative"))])[0]
    bad = backend.score([ScoreRequest(("Review: Awful, boring and a waste of money.\nSentiment:",), (" positive", " negative"))])[0]
    assert good[0] - good[1] > bad[0] - bad[1]


def test_prompt_past_context_window_says_what_to_lower(backend):
    long = ("word " * (backend.max_context + 10),)
    with pytest.raises(InputError, match="lower batch.max_tokens"):
        backend.score([ScoreRequest(long, (" positive",))])
