"""The GPU's packed calls: one score() as a few large forward calls over the prompt trie.

Each call runs a group of the walk's steps (tree_attention.walk) as one sequence: its tokens'
attention goes through tree_attention's block mask, one FlexAttention kernel per layer. Calls are
sized by the GPU's memory, not by a fixed token count; the state of every piece the call runs is
kept (one gather for the whole call, then a view per piece) for the store and for later calls of
the same score(). Nothing is read back to the host before the label log-probabilities.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .kv_store import KVStore
from .tree_attention import BLOCK, NAME, Layout, TreePlan, TreeStep, ancestors_outside, padded, split, subtree_ends, walk

# Reads (token positions whose next-token distribution is scored) handed to the output head at
# once: the vocabulary is large (262k for Gemma), so logits are made a block of reads at a time.
READ_BLOCK = 1024


@dataclass(frozen=True)
class Read:
    packed: int  # position in the call's sequence of the hidden state that predicts `token`
    request: int
    label: int
    token: int


@dataclass
class ModelShape:
    layers: int
    kv_heads: int
    head_dim: int
    windows: set[int]  # 0 for full attention, plus each sliding window a layer uses
    softcap: Any

    @staticmethod
    def of(config: Any) -> "ModelShape":
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        windows = {0}
        window = getattr(config, "sliding_window", None)
        layer_types = getattr(config, "layer_types", None) or ()
        if window and any("sliding" in str(t) for t in layer_types):
            windows.add(int(window))
        return ModelShape(config.num_hidden_layers, heads, dim, windows, getattr(config, "attn_logit_softcapping", None))


def call_tokens(config: Any, dtype_bytes: int, free_bytes: int) -> int:
    """Tokens per packed call: a quarter of the free memory over what one token of a call holds
    (its kept state, its share of the keys/values buffer, the activations of one layer)."""
    shape = ModelShape.of(config)
    state = shape.layers * 2 * shape.kv_heads * shape.head_dim * dtype_bytes
    inter = getattr(config, "intermediate_size", 4 * config.hidden_size)
    activations = (8 * config.hidden_size + 3 * inter) * dtype_bytes
    tokens = free_bytes // 4 // (2 * state + activations)
    return int(max(4 * BLOCK, min(65536, tokens)) // BLOCK * BLOCK)


class TreeCalls:
    """Runs score()'s rows as tree-masked packed calls; `add_logprobs` turns reads into scores."""

    def __init__(self, model: Any, store: KVStore, stats: Any, budget: int,
                 add_logprobs: Callable[[Any, list[Read], list[list[float]]], None]):
        import torch

        self.torch = torch
        self.model = model
        self.store = store
        self.stats = stats
        self.budget = budget
        self.add_logprobs = add_logprobs
        self.shape = ModelShape.of(model.config)
        self.device = next(model.parameters()).device
        # Where a call's time goes (the GPU benchmark prints it): the host's preparation (walk,
        # layout, block mask) and the whole call, read back included.
        self.prepare_s = 0.0
        self.call_s = 0.0

    def score(self, root: Any, out: list[list[float]]) -> None:
        began = time.perf_counter()
        steps = walk(root, self.store)
        tout = subtree_ends(steps)
        kept: dict[int, Any] = {}  # run steps' state, for later groups of this score()
        self.prepare_s += time.perf_counter() - began
        for group in split(steps, self.budget):
            self._call(steps, tout, group, kept, out)
        self.call_s += time.perf_counter() - began

    def _call(self, steps: list[TreeStep], tout: np.ndarray, group: list[int], kept: dict[int, Any],
              out: list[list[float]]) -> None:
        torch = self.torch
        began = time.perf_counter()
        runs = [i for i in group if steps[i].run]
        if not runs:
            return
        before = ancestors_outside(steps, group)
        states = [steps[i].stored if not steps[i].run else kept[i] for i in before]
        loaded = sum(steps[i].length for i in before)
        self.stats.tokens_reused += sum(steps[i].length for i in before if not steps[i].run)
        loaded_pad = padded(loaded) if loaded else 0
        tokens: list[int] = []
        q_step: list[int] = []
        q_pos: list[int] = []
        offsets: dict[int, int] = {}
        reads: list[Read] = []
        for i in runs:
            step = steps[i]
            offsets[i] = len(tokens)
            tokens.extend(step.tokens)
            q_step.extend([i] * step.length)
            q_pos.extend(range(step.start, step.start + step.length))
            for last, row in step.reads:
                reads.extend(Read(offsets[i] + last + off, row.request, k, tok) for off, k, tok in row.reads)
        computed = len(tokens)
        pad = padded(computed) - computed
        tokens.extend([tokens[-1]] * pad)
        q_step.extend([-1] * pad)
        q_pos.extend([q_pos[-1]] * pad)
        kv_step = np.full(loaded_pad + len(tokens), -1, dtype=np.int64)
        kv_pos = np.zeros(len(kv_step), dtype=np.int64)
        at = 0
        for i in before:
            s = steps[i]
            kv_step[at:at + s.length] = i
            kv_pos[at:at + s.length] = np.arange(s.start, s.start + s.length)
            at += s.length
        kv_step[loaded_pad:] = q_step
        kv_pos[loaded_pad:] = q_pos
        layout = Layout(np.asarray(q_step, dtype=np.int64), np.asarray(q_pos, dtype=np.int64), kv_step, kv_pos,
                        loaded_pad)
        shape = self.shape
        dtype = self.model.dtype
        fresh = torch.zeros(shape.layers, 2, shape.kv_heads, loaded_pad - loaded + len(tokens), shape.head_dim,
                            dtype=dtype, device=self.device)
        kv = torch.cat(states + [fresh], dim=3) if states else fresh
        plan = TreePlan(layout, tout, kv, shape.windows, shape.softcap)
        self.prepare_s += time.perf_counter() - began
        config = self.model.config
        standard = getattr(config, "_attn_implementation", None) or "sdpa"
        config._attn_implementation = NAME
        try:
            hidden = self.model.model(
                input_ids=torch.tensor([tokens], device=self.device),
                position_ids=torch.tensor([q_pos], device=self.device),
                attention_mask=_no_masks(config), use_cache=False, icm_plan=plan,
            ).last_hidden_state[0]
        finally:
            config._attn_implementation = standard
        self.stats.forward_calls += 1
        self.stats.tokens_computed += computed
        self._keep(steps, runs, offsets, loaded_pad, kv, kept)
        if reads:
            self.add_logprobs(hidden, reads, out)

    def _keep(self, steps: list[TreeStep], runs: list[int], offsets: dict[int, int], loaded_pad: int, kv: Any,
              kept: dict[int, Any]) -> None:
        """Each internal piece's state as a view of one gather of them all."""
        torch = self.torch
        keep = [i for i in runs if steps[i].keep is not None]
        if not keep:
            return
        where: list[int] = []
        spans: list[tuple[int, int, int]] = []
        for i in keep:
            first = loaded_pad + offsets[i]
            spans.append((i, len(where), steps[i].length))
            where.extend(range(first, first + steps[i].length))
        compact = kv.index_select(3, torch.tensor(where, device=kv.device))
        for i, at, length in spans:
            state = compact[:, :, :, at:at + length]
            kept[i] = state
            self.store.put(steps[i].keep, state)


def _no_masks(config: Any) -> Any:
    # Models with several kinds of layers take one mask per kind; passing them as None keeps
    # transformers from building an N x N mask for the packed sequence.
    layer_types = getattr(config, "layer_types", None)
    return {kind: None for kind in set(layer_types)} if layer_types else None

