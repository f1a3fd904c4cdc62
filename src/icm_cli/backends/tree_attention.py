"""Attention for a packed forward call on a GPU: the whole prompt trie in one kernel per layer.

A U evaluation is a trie of prompt pieces (prefix_tree). The CPU path (piece_attention) runs
attention piece by piece, which on a GPU means thousands of tiny launches per call while the
GPU waits. Here every token of the call attends to its trie ancestors through one FlexAttention
call per layer, with a block mask built from the trie:

- The walk lists the call's steps in preorder; a step is a piece (loaded from the store, or
  run) or a prompt's last piece with its tail. A step's subtree is then the preorder interval
  [tin, tout], and key k is visible to query q exactly when k's step is an ancestor of (or is)
  q's step, tin[k] <= tin[q] <= tout[k], and k's position is not after q's (within a step,
  causal; Gemma's sliding layers also drop keys `window` or more positions back).
- Keys and values: the loaded steps' kept state first (one concatenation for all layers), then
  the call's own tokens, written in at each layer. Everything is laid out
  [layers, 2, kv heads, position, head dim], so a kept piece is one view and loading any set of
  pieces is one copy, whatever the number of layers.
- The block mask (which 128 x 128 tiles hold any visible pair) is computed exactly from the
  trie on the host with a range-maximum table, with no dense mask and no compilation: for a
  query block whose steps span preorder [lo, hi], a key block is needed when one of its steps s
  has s <= hi and tout[s] >= lo (the ancestors of a preorder range).

Scores equal the piece-by-piece path's to rounding (tests compare them in float32).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np
import torch

NAME = "icm_tree"
BLOCK = 128
_NONE = np.iinfo(np.int32).max  # tin of padding keys: never an ancestor


@dataclass
class TreeStep:
    """One step of the call's walk (see module docstring)."""

    start: int  # position of its first token
    length: int
    parent: int  # index of the parent step, -1 for the trie's root
    tokens: tuple[int, ...] = ()  # a run step's tokens
    stored: Any = None  # a loaded step's kept state [layers, 2, kv heads, length, dim]
    keep: Optional[bytes] = None  # a run step kept under this store key
    reads: list[tuple[int, Any]] = field(default_factory=list)  # (index of the prompt's last token, Row)

    @property
    def run(self) -> bool:
        return self.stored is None


def walk(root: Any, store: Any) -> list[TreeStep]:
    """The trie as steps in preorder: internal pieces (loaded when the store holds them, else
    run and kept) and each prompt's last piece run with its tail (never kept: nothing follows)."""
    steps: list[TreeStep] = []

    def visit(node: Any, start: int, parent: int) -> None:
        for child in node.children.values():
            for row in child.rows:
                ids = tuple(child.piece) + tuple(row.tail)
                steps.append(TreeStep(start, len(ids), parent, ids, reads=[(len(child.piece) - 1, row)]))
            if not child.children:
                continue
            kept = store.get(child.key)
            me = len(steps)
            if kept is not None:
                steps.append(TreeStep(start, len(child.piece), parent, stored=kept))
            else:
                steps.append(TreeStep(start, len(child.piece), parent, tuple(child.piece), keep=child.key))
            visit(child, start + len(child.piece), me)

    visit(root, 0, -1)
    return steps


def subtree_ends(steps: list[TreeStep]) -> np.ndarray:
    """tout: the last preorder index in each step's subtree."""
    tout = np.arange(len(steps), dtype=np.int64)
    for i in range(len(steps) - 1, -1, -1):
        p = steps[i].parent
        if p >= 0 and tout[i] > tout[p]:
            tout[p] = tout[i]
    return tout


def split(steps: list[TreeStep], budget: int) -> list[list[int]]:
    """Consecutive groups of steps with up to `budget` run tokens each (a longer step alone)."""
    groups: list[list[int]] = []
    current: list[int] = []
    used = 0
    for i, step in enumerate(steps):
        size = step.length if step.run else 0
        if current and used + size > budget:
            groups.append(current)
            current, used = [], 0
        current.append(i)
        used += size
    if current:
        groups.append(current)
    return groups


def ancestors_outside(steps: list[TreeStep], group: list[int]) -> list[int]:
    """Steps whose state a group's run steps attend to but which the group does not compute:
    loaded steps, and steps run by an earlier group. In preorder."""
    runs = {i for i in group if steps[i].run}
    needed: set[int] = set()
    for i in runs:
        p = steps[i].parent
        while p >= 0 and p not in needed:
            if p not in runs:
                needed.add(p)
            p = steps[p].parent
    return sorted(needed)


def _pad(n: int) -> int:
    return -(-n // BLOCK) * BLOCK


def _range_max_table(values: np.ndarray) -> list[np.ndarray]:
    table = [values]
    width = 1
    while 2 * width <= len(values):
        last = table[-1]
        table.append(np.maximum(last[:-width], last[width:]))
        width *= 2
    return table


def _range_max(table: list[np.ndarray], lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """max(values[lo..hi]) elementwise; -1 where the range is empty (lo > hi)."""
    empty = lo > hi
    # An empty range may hold sentinels (a block of padding alone has no steps): read index 0.
    lo, hi = np.where(empty, 0, lo), np.where(empty, 0, hi)
    span = hi - lo + 1
    level = np.floor(np.log2(np.maximum(span, 1))).astype(np.int64)
    out = np.full(lo.shape, -1, dtype=np.int64)
    for k in np.unique(level):
        sel = level == k
        t = table[k]
        out[sel] = np.maximum(t[lo[sel]], t[hi[sel] - (1 << k) + 1])
    out[empty] = -1
    return out


@dataclass
class Layout:
    """Where each token of one call sits, as the block mask and the attention read it."""

    q_step: np.ndarray  # per query token (padded): its step, -1 for padding
    q_pos: np.ndarray
    kv_step: np.ndarray  # per key slot (padded): its step, -1 for padding
    kv_pos: np.ndarray
    loaded: int  # key slots before the call's own tokens (a multiple of BLOCK)


def block_table(layout: Layout, tout: np.ndarray, window: int) -> np.ndarray:
    """[query blocks, key blocks] bool: the tiles that hold any visible pair (exact at the
    level of steps; a sliding window trims tiles by position)."""
    qb, kb = len(layout.q_step) // BLOCK, len(layout.kv_step) // BLOCK
    q = layout.q_step.reshape(qb, BLOCK)
    real = q >= 0
    lo = np.where(real, q, np.iinfo(np.int64).max).min(axis=1)
    hi = np.where(real, q, -1).max(axis=1)
    qpos_min = np.where(real, layout.q_pos.reshape(qb, BLOCK), np.iinfo(np.int64).max).min(axis=1)
    touched = np.zeros((qb, kb), dtype=bool)
    # Each region of the keys (loaded, then the call's own) holds its steps in preorder; a
    # range-maximum table over that region's tout (-1 elsewhere) answers "does a key block hold
    # an ancestor of this query range" for every pair of blocks at once.
    for own, (first, last) in enumerate(((0, layout.loaded // BLOCK), (layout.loaded // BLOCK, kb))):
        if first == last:
            continue
        region = layout.kv_step[first * BLOCK:last * BLOCK].reshape(last - first, BLOCK)
        present = region >= 0
        if not present.any():
            continue
        marked = np.full(len(tout), -1, dtype=np.int64)
        steps_here = np.unique(region[present])
        marked[steps_here] = tout[steps_here]
        table = _range_max_table(marked)
        c_lo = np.where(present, region, np.iinfo(np.int64).max).min(axis=1)
        c_hi = np.where(present, region, -1).max(axis=1)
        upper = np.minimum(c_hi[None, :], hi[:, None])
        lower = np.broadcast_to(c_lo[None, :], upper.shape)
        best = _range_max(table, lower.ravel(), upper.ravel()).reshape(upper.shape)
        hit = (best >= lo[:, None]) & (c_lo[None, :] <= c_hi[None, :])
        if own:
            # The call's own tokens come in preorder too: a later block of them holds only later
            # tokens of this block's last step (hidden: causal) and steps after it.
            hit &= np.arange(last - first)[None, :] <= np.arange(qb)[:, None]
        if window:
            pos = np.where(present, layout.kv_pos[first * BLOCK:last * BLOCK].reshape(last - first, BLOCK), -1)
            hit &= pos.max(axis=1)[None, :] > qpos_min[:, None] - window
        touched[:, first:last] = hit
    touched[hi < 0] = False
    return touched


class TreePlan:
    """What one packed call needs at every layer: the keys/values buffer and the block masks."""

    def __init__(self, layout: Layout, tout: np.ndarray, kv: torch.Tensor, windows: set[int], softcap: Optional[float]):
        device = kv.device
        self.kv = kv
        self.loaded = layout.loaded
        self.softcap = softcap
        tin = torch.from_numpy(layout.q_step.astype(np.int32)).to(device)
        kv_step = layout.kv_step
        kv_tin = np.where(kv_step >= 0, kv_step, _NONE).astype(np.int32)
        kv_tout = np.where(kv_step >= 0, tout[np.maximum(kv_step, 0)], -1).astype(np.int32)
        q_tin, q_pos = tin, torch.from_numpy(layout.q_pos.astype(np.int32)).to(device)
        k_tin = torch.from_numpy(kv_tin).to(device)
        k_tout = torch.from_numpy(kv_tout).to(device)
        k_pos = torch.from_numpy(layout.kv_pos.astype(np.int32)).to(device)
        self.masks: dict[int, Any] = {}
        for window in windows:
            self.masks[window] = _block_mask(layout, tout, window, (q_tin, q_pos, k_tin, k_tout, k_pos), device)

    def mask(self, window: int) -> Any:
        return self.masks[window]


def _block_mask(layout: Layout, tout: np.ndarray, window: int, meta: tuple, device: Any) -> Any:
    from torch.nn.attention.flex_attention import BlockMask

    q_tin, q_pos, k_tin, k_tout, k_pos = meta

    def visible(b: Any, h: Any, q: Any, k: Any) -> Any:
        t = q_tin[q]
        seen = (k_tin[k] <= t) & (k_tout[k] >= t) & (k_pos[k] <= q_pos[q])
        if window:
            seen = seen & (q_pos[q] - k_pos[k] < window)
        return seen

    touched = block_table(layout, tout, window)
    counts = touched.sum(axis=1).astype(np.int32)
    # Needed blocks first, each row in ascending key order (what BlockMask expects).
    order = np.argsort(~touched, axis=1, kind="stable").astype(np.int32)
    num = torch.from_numpy(counts).to(device)[None, None]
    idx = torch.from_numpy(np.ascontiguousarray(order)).to(device)[None, None]
    lengths = (len(layout.q_step), len(layout.kv_step))
    try:
        return BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=BLOCK, mask_mod=visible, seq_lengths=lengths,
                                        compute_q_blocks=False)
    except TypeError:  # torch releases before compute_q_blocks
        return BlockMask.from_kv_blocks(num, idx, BLOCK_SIZE=BLOCK, mask_mod=visible, seq_lengths=lengths)


_COMPILED: dict[str, Any] = {}
# Compiled with dynamic shapes, one kernel per mask kind serves every call; where a torch release
# cannot compile that (static_shapes()), each padded size compiles once, so sizes are rounded up
# to powers of two to keep their number small.
_MODE = {"dynamic": True}


def static_shapes() -> None:
    _MODE["dynamic"] = False
    _COMPILED.clear()


def padded(n: int) -> int:
    """The length a call's queries (or loaded keys) are padded to."""
    n = _pad(max(n, 1))
    if _MODE["dynamic"]:
        return n
    return max(BLOCK, 1 << (n - 1).bit_length())


def flex(device_type: str) -> Any:
    """FlexAttention, compiled where a fused kernel exists (CUDA); eager elsewhere (tests)."""
    from torch.nn.attention.flex_attention import flex_attention

    if device_type != "cuda":
        return flex_attention
    if "cuda" not in _COMPILED:
        import torch._dynamo

        # Each call's block mask and tree tensors are new objects of new sizes. Room for a few
        # more variants (dtypes, head shapes of several models in one process, static sizes)
        # before torch gives up compiling and falls back to the unfused path.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        _COMPILED["cuda"] = torch.compile(flex_attention, dynamic=_MODE["dynamic"])
    return _COMPILED["cuda"]


def tree_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    scaling: Optional[float] = None,
    dropout: float = 0.0,
    sliding_window: Optional[int] = None,
    softcap: Optional[float] = None,
    icm_plan: Optional[TreePlan] = None,
    **_: Any,
) -> tuple[torch.Tensor, None]:
    """query [1, heads, N, dim]; key/value [1, kv heads, N, dim] for the call's N tokens."""
    if icm_plan is None:
        raise RuntimeError("icm_tree attention needs a plan (the hf backend passes it)")
    plan = icm_plan
    layer = module.layer_idx
    n = query.shape[2]
    keys, values = plan.kv[layer, 0], plan.kv[layer, 1]  # [kv heads, slots, dim]
    keys[:, plan.loaded:plan.loaded + n] = key[0]
    values[:, plan.loaded:plan.loaded + n] = value[0]
    cap = softcap or plan.softcap

    score_mod = None
    if cap:
        def score_mod(score: Any, b: Any, h: Any, q: Any, k: Any) -> Any:
            return torch.tanh(score / cap) * cap

    out = flex(query.device.type)(
        query, keys.unsqueeze(0), values.unsqueeze(0), score_mod=score_mod,
        block_mask=plan.mask(int(sliding_window or 0)), scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )
    return out.transpose(1, 2), None


def _no_mask(*_: Any, **__: Any) -> None:
    return None


def register() -> None:
    """Make `icm_tree` a transformers attention implementation (idempotent)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, tree_attention)
    AttentionMaskInterface.register(NAME, _no_mask)
