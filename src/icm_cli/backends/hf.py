"""transformers + torch backend: exact label log-probabilities, shared prefixes computed once.

Prompts are walked as a trie of pieces (prefix_tree): each piece's attention state (KV) is
computed once on top of its prefix and kept (kv_store, under a byte budget) for later calls,
so the search's next evaluation computes only the pieces whose prefix changed.

Every piece is computed by one forward call over exactly its tokens, and every prompt's last
piece by its own call. The numbers a prompt gets then depend only on its content, never on
which other prompts were scored with it or before it: a run resumed with an empty store gives
bit-for-bit the scores of an uninterrupted one. (Merging pieces or prompts into one call gives
other roundings: in bfloat16, scores moved by up to 0.09.)
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

from ..errors import BackendError, InputError
from .base import BackendStats, ScoreRequest
from .kv_store import KVStore
from .pieces import PieceTokenizer
from .prefix_tree import Node, Row, build_trie


class HFBackend:
    name = "hf"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        model_name: str,
        max_context: Optional[int] = None,
        reuse_prefixes: bool = True,
        kv_cache_mib: int = 1024,
    ):
        import torch

        self.torch = torch
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.reuse_prefixes = reuse_prefixes
        config = model.config
        model_limit = getattr(config, "max_position_embeddings", None) or 4096
        self.max_context = min(max_context, model_limit) if max_context else model_limit
        self.device = next(model.parameters()).device
        self.softcap = getattr(config, "final_logit_softcapping", None)
        bos = tokenizer.bos_token_id
        # Prepend BOS ourselves: some tokenizers (e.g. ones read from GGUF) do not, and
        # Gemma-style models give garbage without it. Pieces are tokenized without specials.
        self.bos: tuple[int, ...] = (bos,) if bos is not None else ()
        self.stats = BackendStats()
        self.tokens = PieceTokenizer(tokenizer)
        self.store = KVStore(kv_cache_mib * 2**20)

    def forget(self) -> None:
        """Drop attention state kept from earlier calls (the next call computes from scratch)."""
        self.store.clear()

    def count_tokens(self, text: str) -> int:
        return len(self.tokens(text))

    def _rows(self, index: int, request: ScoreRequest) -> list[Row]:
        pieces = (self.bos,) + tuple(self.tokens(s) for s in request.segments)
        last = request.segments[-1] if request.segments else ""
        conts = [self.tokens.continuation(last, c) for c in request.continuations]
        if any(not c for c in conts):
            raise InputError(f"label continuation {request.continuations!r} tokenizes to nothing")
        length = sum(len(p) for p in pieces) + max(len(c) for c in conts) - 1
        if length > self.max_context:
            raise InputError(
                f"a prompt of {length:,} tokens exceeds the context window of {self.max_context:,} "
                f"for {self.model_name}; lower batch.max_tokens"
            )
        if all(len(c) == 1 for c in conts):
            return [Row(index, pieces, (), tuple((0, k, c[0]) for k, c in enumerate(conts)))]
        return [
            Row(index, pieces, c[:-1], tuple((j, k, tok) for j, tok in enumerate(c)))
            for k, c in enumerate(conts)
        ]

    # ---- scoring --------------------------------------------------------------------

    def rows(self, requests: Sequence[ScoreRequest]) -> list[Row]:
        """The token sequences one score() call runs (the benchmark sizes their trie too)."""
        return [row for i, r in enumerate(requests) for row in self._rows(i, r)]

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        rows = self.rows(requests)
        out = [[0.0] * len(r.continuations) for r in requests]
        self.stats.requests += len(requests)
        self.stats.tokens_requested += sum(row.length() for row in rows)
        try:
            with self.torch.inference_mode():
                if self.reuse_prefixes:
                    self._walk(build_trie(rows), self._new_cache(), out)
                else:
                    for row in rows:
                        tokens = [t for p in row.pieces for t in p] + list(row.tail)
                        self._read(None, row, tokens, row.prompt_length() - 1, out)
        except RuntimeError as e:  # torch reports OOM and device faults this way
            raise BackendError(f"{self.model_name}: model failed while scoring ({str(e).splitlines()[0]})")
        return out

    def _walk(self, node: Node, cache: Any, out: list[list[float]]) -> None:
        """Score every row below `node`; `cache` holds the prefix through node's piece."""
        while len(node.children) == 1:
            (child,) = node.children.values()
            if child.rows:
                break
            # A chain: nothing to come back to here (the caller restores its own mark), and a
            # mark per piece would keep every level's cache tensors alive: O(depth x length).
            node = child
            self._add_piece(cache, node)
        mark = _snapshot(cache)
        for child in node.children.values():
            for row in child.rows:
                # The last piece is run with the row, to read its hidden states.
                self._read(cache, row, list(child.piece) + list(row.tail), len(child.piece) - 1, out)
                _restore(cache, mark)
            if child.children:
                self._add_piece(cache, child)
                self._walk(child, cache, out)
                _restore(cache, mark)

    def _new_cache(self) -> Any:
        from transformers import DynamicCache

        return DynamicCache(config=self.model.config)

    def _add_piece(self, cache: Any, node: Node) -> None:
        layers = self.store.get(node.key)
        if layers is not None:
            for i, (keys, values) in enumerate(layers):
                cache.update(keys, values, i)
            self.stats.tokens_reused += len(node.piece)
            return
        self.model.model(input_ids=self.torch.tensor([node.piece], device=self.device), past_key_values=cache,
                         use_cache=True)
        self.stats.forward_calls += 1
        self.stats.tokens_computed += len(node.piece)
        m = len(node.piece)
        # Sliding-window layers hold only their window: a longer piece cannot be sliced out.
        # With no budget, skip the clones the store would throw away.
        if self.store.budget_bytes > 0 and all(layer.keys.shape[-2] >= m for layer in cache.layers):
            # Clones, so that a kept piece does not pin the whole cache in memory.
            self.store.put(node.key, tuple(
                (layer.keys[:, :, -m:].clone(), layer.values[:, :, -m:].clone()) for layer in cache.layers
            ))

    def _read(self, cache: Any, row: Row, tokens: list[int], end: int, out: list[list[float]]) -> None:
        """Run `tokens` on top of `cache` (None: from scratch) and add the row's label log-probs.

        `end`: index in `tokens` of the last prompt token.
        """
        torch = self.torch
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        hidden = self.model.model(input_ids=ids, past_key_values=cache, use_cache=cache is not None)
        hidden = hidden.last_hidden_state[0]
        self.stats.forward_calls += 1
        self.stats.tokens_computed += len(tokens)
        where = torch.tensor([end + offset for offset, _, _ in row.reads])
        logits = self.model.lm_head(hidden[where]).float()
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        logprobs = torch.log_softmax(logits, dim=-1)
        values = logprobs[torch.arange(len(row.reads)), torch.tensor([tok for _, _, tok in row.reads])].tolist()
        for (_, k, _), v in zip(row.reads, values):
            out[row.request][k] += v


# Cache layers replace their tensors on update (concatenation), never write into them, so
# holding the old tensors is enough to go back to an earlier prefix, at no copying cost.
_LAYER_STATE = ("keys", "values", "is_initialized", "cumulative_length")


def _snapshot(cache: Any) -> list[dict[str, Any]]:
    return [{name: getattr(layer, name) for name in _LAYER_STATE if hasattr(layer, name)} for layer in cache.layers]


def _restore(cache: Any, mark: list[dict[str, Any]]) -> None:
    for layer, state in zip(cache.layers, mark):
        for name, value in state.items():
            setattr(layer, name, value)
