"""Counting tokens without loading a model: the tokenizer alone (for dry runs)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..foundation.config import BackendConfig
from ..foundation.errors import InputError, first_line
from .embedded import EMBEDDED, embedded_tokenizer_source
from .registry import backend_type


def token_counter(config: BackendConfig) -> tuple[Callable[[str], int], str]:
    """A token counter for the configured model, and how it counts."""
    if not backend_type(config.type).local_tokenizer:
        return (lambda text: max(1, len(text) // 4)), "estimate: 4 characters per token"
    from transformers import AutoTokenizer

    if config.model == EMBEDDED:
        source, kwargs = embedded_tokenizer_source()
    else:
        p = Path(config.model).expanduser()
        source, kwargs = (str(p.parent), {"gguf_file": p.name}) if p.suffix == ".gguf" else (config.model, {})
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as e:
        raise InputError(f"backend.model: cannot load the tokenizer of '{config.model}' ({first_line(e)})")

    @lru_cache(maxsize=100_000)
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count, f"{config.model} tokenizer"
