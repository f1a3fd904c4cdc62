"""Counting tokens without loading a model: the tokenizer alone (for dry runs)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Callable

from ..config import BackendConfig
from ..errors import InputError


def token_counter(config: BackendConfig) -> tuple[Callable[[str], int], str]:
    """A token counter for the configured model, and how it counts."""
    if config.type != "hf":
        return (lambda text: max(1, len(text) // 4)), "estimate: 4 characters per token"
    from transformers import AutoTokenizer

    if config.model == "embedded":
        from .loading import embedded_tokenizer_source

        source, kwargs = embedded_tokenizer_source()
    else:
        p = Path(config.model).expanduser()
        source, kwargs = (str(p.parent), {"gguf_file": p.name}) if p.suffix == ".gguf" else (config.model, {})
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
    except OSError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise InputError(f"backend.model: cannot load the tokenizer of '{config.model}' ({first})")

    @lru_cache(maxsize=100_000)
    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count, f"{config.model} tokenizer"
