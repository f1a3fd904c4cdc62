"""Attention for a packed forward call: many prompt pieces in one sequence, each attending over
its own prefix, with exactly the shapes it would have on its own.

A U evaluation is a trie of prompt pieces. The model's matrix products (projections, MLP) are
computed row by row, so running every piece of the walk as one long packed sequence gives each
token the numbers it would get alone (checked in tests/test_backend_hf.py), at batched-prefill
speed. Attention is where shapes matter: a kernel's reduction order follows the key length and
the query block. So attention is computed here per piece, over a key/value buffer that holds the
piece's prefix (a depth-first walk writes each piece's keys and values at its positions, the
way a stack grows and shrinks), with the piece's own query length and key length. A piece's
numbers therefore depend on its own tokens and prefix only: not on which other pieces shared
the call, and not on whether its prefix came from the store or was computed afresh.

Registered with transformers as an attention implementation (`AttentionInterface`), with a mask
implementation that builds nothing: masks are built here per piece.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

NAME = "icm_pieces"


@dataclass(frozen=True)
class Op:
    """One step of the walk, the same at every layer.

    load: put kept keys/values of a piece (from the store) at [start, start + length).
    run: the piece's tokens sit at packed[offset : offset + length]; compute their attention
    over the buffer's [.., start + length) and leave their keys/values in the buffer there.
    """

    start: int
    length: int
    offset: int = -1  # position in the packed sequence; -1: a load
    stored: Any = None  # load: per layer (keys, values), each [length, kv heads, head dim]
    keep: Optional[bytes] = None  # run: store key under which this piece's keys/values are kept


@dataclass
class Plan:
    """What one packed call computes; passed to every layer's attention through the model's kwargs."""

    ops: list[Op]
    buffer: "KVBuffer"
    kept: dict[bytes, list[Any]] = field(default_factory=dict)
    _masks: dict[tuple[int, int, int, int], torch.Tensor] = field(default_factory=dict)

    def mask(self, start: int, length: int, low: int, window: int) -> torch.Tensor:
        """[length, start + length - low]: query j (position start + j) sees key positions
        low.. start + j, and with a sliding window only the last `window` of them."""
        key = (start, length, low, window)
        cached = self._masks.get(key)
        if cached is None:
            device = self.buffer.layers[0][0].device
            q = torch.arange(start, start + length, device=device).unsqueeze(1)
            k = torch.arange(low, start + length, device=device).unsqueeze(0)
            cached = k <= q
            if window:
                cached &= k > q - window
            self._masks[key] = cached
        return cached


class KVBuffer:
    """Per layer, keys and values for positions 0..capacity, laid out [position, kv heads, dim]
    so that any range of positions is one contiguous block whatever the capacity."""

    def __init__(self) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor]] = []

    def ensure(self, layers: int, capacity: int, heads: int, dim: int, dtype: torch.dtype, device: Any) -> None:
        have = self.layers[0][0].shape[0] if self.layers else 0
        if self.layers and have >= capacity and self.layers[0][0].dtype == dtype:
            return
        size = max(capacity, 2 * have)
        self.layers = [
            (torch.empty(size, heads, dim, dtype=dtype, device=device),
             torch.empty(size, heads, dim, dtype=dtype, device=device))
            for _ in range(layers)
        ]

    def clear(self) -> None:
        self.layers = []


def piece_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    scaling: Optional[float] = None,
    dropout: float = 0.0,
    sliding_window: Optional[int] = None,
    softcap: Optional[float] = None,
    icm_plan: Optional[Plan] = None,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """query [1, heads, N, dim]; key/value [1, kv heads, N, dim] for the N packed tokens."""
    if icm_plan is None:
        raise RuntimeError("icm_pieces attention needs a plan (the hf backend passes it)")
    plan = icm_plan
    layer = module.layer_idx
    keys, values = plan.buffer.layers[layer]
    new_k = key[0].transpose(0, 1)  # [N, kv heads, dim]
    new_v = value[0].transpose(0, 1)
    heads, dim = query.shape[1], query.shape[3]
    scale = scaling if scaling is not None else dim**-0.5
    out = query.new_zeros(query.shape[2], heads, dim)
    window = int(sliding_window or 0)
    for op in plan.ops:
        end = op.start + op.length
        if op.offset < 0:
            k, v = op.stored[layer]
            keys[op.start:end] = k
            values[op.start:end] = v
            continue
        rows = slice(op.offset, op.offset + op.length)
        keys[op.start:end] = new_k[rows]
        values[op.start:end] = new_v[rows]
        if op.keep is not None:
            plan.kept.setdefault(op.keep, []).append((new_k[rows].clone(), new_v[rows].clone()))
        # A sliding layer's first query looks back window - 1 positions; nothing before matters.
        low = max(0, op.start - window + 1) if window else 0
        mask = plan.mask(op.start, op.length, low, window)
        o = _attend(query[0, :, rows], keys[low:end], values[low:end], mask, scale, softcap)
        out[rows] = o.transpose(0, 1)
    return out.unsqueeze(0), None


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float,
            softcap: Optional[float]) -> torch.Tensor:
    """transformers' eager attention for one piece: q [heads, T, dim]; k, v [L, kv heads, dim];
    mask [T, L]. Scores in the model's dtype, softmax in float32, as the eager path does.

    The query heads that share a key/value head are stacked into one matrix product (grouped-
    query attention without copying keys). At these shapes (short queries over long prefixes)
    plain matrix products ran 3-7x faster on CPU than the fused kernel.
    """
    heads, length, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    stacked = q.reshape(kv_heads, group * length, dim)
    scores = torch.bmm(stacked, k.permute(1, 2, 0)).mul_(scale)  # [kv heads, group * T, L]
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    scores.view(kv_heads, group, length, -1).masked_fill_(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = torch.bmm(weights, v.transpose(0, 1))  # [kv heads, group * T, dim]
    return out.view(heads, length, dim)


def _no_mask(*_: Any, **__: Any) -> None:
    return None


def register() -> None:
    """Make `icm_pieces` a transformers attention implementation (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, piece_attention)
    AttentionMaskInterface.register(NAME, _no_mask)
