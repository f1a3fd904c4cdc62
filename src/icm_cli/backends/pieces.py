"""Tokenizing prompt pieces the way backends that own a tokenizer (hf, vllm) need it."""

from __future__ import annotations

from typing import Any, Callable, Iterable


def continuation_ids(tokens: Callable[[str], tuple[int, ...]], last_piece: str, continuation: str) -> tuple[int, ...]:
    """The label as the model itself tokenizes last piece + label, not a hand-picked id.

    (A prompt ending in a space and scored on "True" gave no signal at all; ending at "is" and
    scoring " True" as the tokenizer splits "is True" did.)
    """
    base = tokens(last_piece)
    joint = tokens(last_piece + continuation)
    if len(joint) > len(base) and joint[: len(base)] == base:
        return joint[len(base):]
    return tokens(continuation)


class PieceTokenizer:
    """Token ids of prompt pieces, without special tokens, cached: pieces recur across evaluations."""

    def __init__(self, tokenizer: Any, max_entries: int = 200_000):
        self.tokenizer = tokenizer
        self.max_entries = max_entries
        self._cache: dict[str, tuple[int, ...]] = {}

    def __call__(self, text: str) -> tuple[int, ...]:
        cached = self._cache.get(text)
        if cached is None:
            if len(self._cache) > self.max_entries:
                self._cache.clear()
            cached = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
            self._cache[text] = cached
        return cached

    def prepare(self, texts: Iterable[str]) -> None:
        """Tokenize every text not yet cached in one batch call (a call per text costs more than
        the model's own work on a GPU when thousands of rows are scored at once)."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if len(missing) < 2:
            return
        if len(self._cache) + len(missing) > self.max_entries:
            self._cache.clear()
        for text, ids in zip(missing, self.tokenizer(missing, add_special_tokens=False)["input_ids"]):
            self._cache[text] = tuple(ids)

    def continuation(self, last_piece: str, continuation: str) -> tuple[int, ...]:
        return continuation_ids(self, last_piece, continuation)
