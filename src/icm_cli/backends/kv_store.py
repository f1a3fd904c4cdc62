"""Attention state (KV) of prompt pieces, kept across score() calls under a memory budget.

A piece's keys and values depend on the piece and on every token before it, so an entry is
keyed by a digest of the whole token prefix through the piece (a chain: the digest of the
prefix before it, then the piece's tokens). The search's next evaluation repeats most prefixes
of the last one; their state comes from here instead of the model. Least recently used
entries go first when the budget is exceeded; a miss only costs recomputation.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import OrderedDict
from typing import Any, Optional, Sequence

ROOT_KEY = b""

# The CPU path keeps per layer (keys, values), each [piece tokens, kv heads, head dim]; the GPU
# path one tensor [layers, 2, kv heads, piece tokens, head dim] (tree_calls).
Layers = Any


def chain_key(parent: bytes, piece: Sequence[int]) -> bytes:
    """Digest of the token prefix `parent` covers followed by `piece`."""
    return hashlib.blake2b(parent + array("q", piece).tobytes(), digest_size=16).digest()


class KVStore:
    def __init__(self, budget_bytes: int):
        self.budget_bytes = budget_bytes
        self.bytes = 0
        self._entries: OrderedDict[bytes, tuple[Layers, int]] = OrderedDict()

    def __contains__(self, key: bytes) -> bool:
        return key in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> Optional[Layers]:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[0]

    def put(self, key: bytes, layers: Layers) -> None:
        if key in self._entries or self.budget_bytes <= 0:
            return
        size = _nbytes(layers)
        if size > self.budget_bytes:
            return
        self._entries[key] = (layers, size)
        self.bytes += size
        while self.bytes > self.budget_bytes:
            _, (_, dropped) = self._entries.popitem(last=False)
            self.bytes -= dropped

    def clear(self) -> None:
        self._entries.clear()
        self.bytes = 0


def _nbytes(state: Any) -> int:
    if isinstance(state, (tuple, list)):
        return sum(_nbytes(part) for part in state)
    return state.element_size() * state.nelement()
