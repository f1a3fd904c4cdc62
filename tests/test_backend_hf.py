"""The hf backend on the real embedded model: prefix reuse computes the same scores as from-scratch."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from icm_cli.backends.base import ScoreRequest
from icm_cli.backends.loading import load_backend
from icm_cli.foundation.config import BackendConfig
from icm_cli.foundation.errors import InputError
from icm_cli.algorithm.scoring import CoherenceScorer, PromptSet

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
    for trial in range(2):  # two label sets: make test's time (25 minutes, install included)
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
    with pytest.raises(InputError, match="lower core.max_tokens"):
        backend.score([ScoreRequest(long, (" positive",))])


def _one_evaluation(backend, prompts, labels, order=None):
    requests, _ = CoherenceScorer(prompts, backend).requests(labels, order)
    before = backend.stats.tokens_computed
    scores = backend.score(requests)
    return scores, backend.stats.tokens_computed - before


def test_kept_attention_state_gives_bit_identical_scores_and_saves_work(backend, prompts):
    # The search's next evaluations: one example relabelled, then one more labelled.
    first = (0, 1, 1, 0, 1, 0, 0, 1, 1, None, None, None)
    relabelled = first[:4] + (0,) + first[5:]
    grown = relabelled[:9] + (1,) + relabelled[10:]
    order = tuple(range(9))
    backend.reuse_prefixes = True
    backend.forget()
    _one_evaluation(backend, prompts, first, order)
    warm = [_one_evaluation(backend, prompts, relabelled, order), _one_evaluation(backend, prompts, grown, order + (9,))]
    cold = []
    for labels, o in ((relabelled, order), (grown, order + (9,))):
        backend.forget()
        cold.append(_one_evaluation(backend, prompts, labels, o))
    backend.reuse_prefixes = False
    reference = [_one_evaluation(backend, prompts, relabelled, order), _one_evaluation(backend, prompts, grown, order + (9,))]
    backend.reuse_prefixes = True
    for (w, w_tokens), (c, c_tokens), (r, r_tokens) in zip(warm, cold, reference):
        assert w == c  # exactly: a resumed run (empty store) scores as the uninterrupted one did
        for a, b in zip(w, r):
            assert a == pytest.approx(b, abs=1e-3)
        assert w_tokens < c_tokens < r_tokens
    # Adding one example recomputes it and each prompt's input, not the prompts' shared prefixes.
    assert warm[1][1] < cold[1][1] / 2


def test_no_store_budget_still_scores_exactly(prompts):
    small = load_backend(BackendConfig(dtype="float32", kv_cache_mib=0))
    labels = (0, 1, 1, 0, 1, 0, None, None, None, None, None, None)
    scores, _ = _one_evaluation(small, prompts, labels)
    again, tokens = _one_evaluation(small, prompts, labels)
    assert scores == again and len(small.store) == 0 and small.stats.tokens_reused == 0
    small.reuse_prefixes = False
    reference, ref_tokens = _one_evaluation(small, prompts, labels)
    for a, b in zip(scores, reference):
        assert a == pytest.approx(b, abs=1e-3)
    assert tokens < ref_tokens


@pytest.mark.parametrize("fast_bf16, device, expected", [
    (True, "cpu", "bfloat16"), (False, "cpu", "float32"), (False, "cuda", "bfloat16"),
])
def test_auto_dtype_picks_bf16_only_where_it_runs_fast(monkeypatch, fast_bf16, device, expected):
    import torch

    from icm_cli.backends import cpu_dtype

    monkeypatch.setattr(cpu_dtype, "cpu_has_fast_bf16", lambda: fast_bf16)
    assert cpu_dtype.resolve_dtype("auto", device) == getattr(torch, expected)
    assert cpu_dtype.resolve_dtype("float32", device) == torch.float32  # asked for: kept


@pytest.mark.parametrize("flag, speedup, expected", [(False, 9.0, False), (True, 2.7, True), (True, 0.6, False)])
def test_bf16_is_chosen_by_measured_speed_once_per_machine(monkeypatch, tmp_path, flag, speedup, expected):
    import torch

    from icm_cli.backends import cpu_dtype

    monkeypatch.setenv("ICM_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: flag)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    measured = []
    monkeypatch.setattr(cpu_dtype, "_bf16_speedup", lambda: measured.append(1) or speedup)
    assert cpu_dtype.cpu_has_fast_bf16() is expected
    assert cpu_dtype.cpu_has_fast_bf16() is expected  # the second answer comes from the record
    assert len(measured) == (1 if flag else 0)


def test_model_name_says_which_dtype_ran(backend):
    assert backend.model_name.endswith("[float32]")
