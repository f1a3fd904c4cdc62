"""transformers + torch backend: exact label log-probabilities, shared prefixes computed once.

Prompts are walked as a trie of pieces (prefix_tree). A piece's attention state (keys and
values) is computed once on top of its prefix and kept (kv_store, under a byte budget), so the
search's next evaluation computes only the pieces whose prefix changed.

Two ways to run the walk, chosen by `backend.hf.attention` (auto: by device):
- pieces (the CPU's): packed forward calls of up to 2,048 tokens, every piece to compute and
  every prompt's last piece in depth-first order in one sequence. The matrix products run over
  the whole sequence at batched-prefill speed; attention runs per piece with the piece's own
  shapes (piece_attention). A score therefore depends only on its prompt, never on which prompts
  shared a call or what the store held: a run resumed with an empty store gives bit-for-bit the
  scores of an uninterrupted one (tested).
- tree (the GPU's): calls sized by the GPU's memory, whose attention is one FlexAttention kernel
  per layer over the trie (tree_attention, tree_calls): per-piece launches would leave the GPU
  waiting on Python. Scores equal the pieces path's to rounding, not bit for bit: a GPU's
  kernels round by the shapes of the call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from ..foundation.backend_options import HFOptions
from ..foundation.config import BackendConfig
from ..foundation.errors import BackendError, InputError, first_line
from .cpu_dtype import resolve_device, resolve_dtype
from .embedded import EMBEDDED, EMBEDDED_NAME, embedded_model_dir
from .models import model_identity, resolve_model
from .base import BackendStats, ScoreRequest
from .fixed_rows import use_fixed_row_blocks
from .kv_store import KVStore
from .piece_attention import NAME as PIECES, KVBuffer, Op, Plan, register
from .pieces import PieceTokenizer
from .prefix_tree import Node, Row, build_trie
from .tree_calls import READ_BLOCK, Read, TreeCalls, call_tokens

# Below this many rows some CPU matrix kernels take another path (measured: fp32 at 1-2 rows),
# whose rounding differs; calls and label reads are padded up to it.
MIN_ROWS = 16


# Evaluations the search may hand over at once where calls are cheap to widen (the GPU):
# the scorer then reads ahead the proposals the search would make if it rejected each.
GPU_LOOKAHEAD = 8

# Tokens in one packed call, unless a GPU's free memory sizes the calls (call_tokens).
CPU_CALL_TOKENS = 2048


class HFBackend:
    name = "hf"

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        options: HFOptions = HFOptions(),
        *,
        name: str,
        identity: Optional[str] = None,
        max_context: Optional[int] = None,
        log: Callable[[str], None] = lambda _: None,
    ):
        import torch

        self.torch = torch
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.model_name = name
        self.identity = identity or name
        self.reuse_prefixes = options.reuse_prefixes
        self.packed_tokens = CPU_CALL_TOKENS
        self.log = log
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
        self.store = KVStore(kv_cache_mib(options.kv_cache_mib, str(self.device)) * 2**20)
        self.buffer = KVBuffer()
        self._standard_attention = getattr(config, "_attn_implementation", None) or "sdpa"
        register()
        self.attention = _attention_path(options.attention, self.device.type)
        self.tree: Optional[TreeCalls] = None
        # How many evaluations the search hands over at once (search.py reads it).
        self.lookahead = 1
        if self.attention == "tree":
            from .tree_attention import register as register_tree

            register_tree()
            if self.device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(self.device)
                self.packed_tokens = call_tokens(config, self.model.dtype.itemsize, free)
                self.lookahead = GPU_LOOKAHEAD
            self.tree = TreeCalls(self.model, self.store, self.stats, self.packed_tokens, self._add_logprobs)
        if self.device.type == "cpu":
            use_fixed_row_blocks(self.model)
        layer_types = getattr(config, "layer_types", None)
        # Models with several kinds of layers take one mask per kind; passing them as None
        # keeps transformers from building an N x N mask for the packed sequence.
        self._no_masks: Any = {kind: None for kind in set(layer_types)} if layer_types else None

    def warm_up(self) -> None:
        """Compile the GPU path's attention kernels now (seconds, once per process), so the first
        evaluation of a run is not the one that waits for them."""
        if self.tree is None or self.device.type != "cuda":
            return
        from .tree_attention import static_shapes

        words = " ".join(f"w{k}" for k in range(60))
        requests = [ScoreRequest((words, f" q{k}"), (" yes", " no")) for k in range(3)]
        for fallback in (static_shapes, self._pieces_instead, None):
            try:
                self.score(requests)
                self.score(requests[:2] + [ScoreRequest((words + " more",), (" yes",))])
                break
            except BackendError as e:
                if fallback is None:
                    raise
                self.log(f"the GPU attention kernel failed to build ({e}); "
                         f"{'compiling for fixed sizes' if fallback is static_shapes else 'attending piece by piece'}")
                fallback()
        self.forget()
        self.stats = BackendStats()
        if self.tree is not None:
            self.tree.stats = self.stats

    def _pieces_instead(self) -> None:
        self.tree, self.attention, self.lookahead = None, "pieces", 1

    def forget(self) -> None:
        """Drop attention state kept from earlier calls (the next call computes from scratch)."""
        self.store.clear()

    def close(self) -> None:
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
                f"for {self.model_name}; lower core.max_tokens"
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
        self.tokens.prepare(s for r in requests for s in r.segments)
        return [row for i, r in enumerate(requests) for row in self._rows(i, r)]

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        rows = self.rows(requests)
        out = [[0.0] * len(r.continuations) for r in requests]
        self.stats.requests += len(requests)
        self.stats.tokens_requested += sum(row.length() for row in rows)
        try:
            with self.torch.inference_mode():
                if self.reuse_prefixes and self.tree is not None:
                    self.tree.score(build_trie(rows), out)
                elif self.reuse_prefixes:
                    self._score_packed(rows, out)
                else:
                    for row in rows:
                        self._score_alone(row, out)
        except RuntimeError as e:  # torch reports OOM and device faults this way
            raise BackendError(f"{self.model_name}: model failed while scoring ({str(e).splitlines()[0]})")
        return out

    def _score_alone(self, row: Row, out: list[list[float]]) -> None:
        """The reference path: the whole prompt from scratch, with the model's own attention."""
        torch = self.torch
        tokens = [t for p in row.pieces for t in p] + list(row.tail)
        ids = torch.tensor([tokens], dtype=torch.long, device=self.device)
        hidden = self.model.model(input_ids=ids, use_cache=False).last_hidden_state[0]
        self.stats.forward_calls += 1
        self.stats.tokens_computed += len(tokens)
        end = row.prompt_length() - 1
        self._add_logprobs(hidden, [Read(end + off, row.request, k, tok) for off, k, tok in row.reads], out)

    def _score_packed(self, rows: list[Row], out: list[list[float]]) -> None:
        config = self.model.config
        longest = max(row.length() for row in rows)
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.buffer.ensure(config.num_hidden_layers, longest, heads, dim, self.model.dtype, self.device)
        steps = _walk(build_trie(rows), self.store)
        for chunk in _chunks(steps, self.packed_tokens):
            self._run(chunk, out)

    def _run(self, steps: list[tuple[Op, list[int], list[tuple[int, Row]]]], out: list[list[float]]) -> None:
        """One packed forward call over `steps` (ops with their tokens and the rows they read)."""
        torch = self.torch
        tokens: list[int] = []
        positions: list[int] = []
        ops: list[Op] = []
        reads: list[Read] = []
        for op, ids, row_reads in steps:
            if op.offset >= 0:
                op = Op(op.start, op.length, len(tokens), keep=op.keep)
                tokens.extend(ids)
                positions.extend(range(op.start, op.start + op.length))
                for last, row in row_reads:  # `last`: index in ids of the row's last prompt token
                    reads.extend(Read(op.offset + last + off, row.request, k, tok) for off, k, tok in row.reads)
            else:
                self.stats.tokens_reused += op.length
            ops.append(op)
        if not tokens:
            return
        computed = len(tokens)
        # Padding tokens take part in the matrix products only; no op reads or attends to them.
        pad = max(0, MIN_ROWS - len(tokens))
        tokens.extend([tokens[-1]] * pad)
        positions.extend([positions[-1]] * pad)
        plan = Plan(ops, self.buffer)
        config = self.model.config
        config._attn_implementation = PIECES
        try:
            hidden = self.model.model(
                input_ids=torch.tensor([tokens], device=self.device),
                position_ids=torch.tensor([positions], device=self.device),
                attention_mask=self._no_masks, use_cache=False, icm_plan=plan,
            ).last_hidden_state[0]
        finally:
            config._attn_implementation = self._standard_attention
        self.stats.forward_calls += 1
        self.stats.tokens_computed += computed
        if self.store.budget_bytes > 0:
            for key, layers in plan.kept.items():
                self.store.put(key, tuple(layers))
        if reads:
            self._add_logprobs(hidden, reads, out)

    def _add_logprobs(self, hidden: Any, reads: list[Read], out: list[list[float]]) -> None:
        torch = self.torch
        device = hidden.device
        values: list[float] = []
        for first in range(0, len(reads), READ_BLOCK):
            block = reads[first:first + READ_BLOCK]
            where = [r.packed for r in block]
            where += [where[-1]] * (-len(where) % MIN_ROWS)  # fixed-size blocks: same rounding per row
            logits = self.model.lm_head(hidden[torch.tensor(where, device=device)]).float()[: len(block)]
            if self.softcap:
                logits = torch.tanh(logits / self.softcap) * self.softcap
            logprobs = torch.log_softmax(logits, dim=-1)
            picked = logprobs[torch.arange(len(block), device=device), torch.tensor([r.token for r in block], device=device)]
            values.extend(picked.tolist())
        for r, v in zip(reads, values):
            out[r.request][r.label] += v


Step = tuple[Op, list[int], list[tuple[int, Row]]]


def _walk(root: Node, store: KVStore) -> list[Step]:
    """The trie in depth-first order as ops: each piece loaded from the store or run, and each
    row's last piece run with its tail (its keys are not kept: no prompt continues past it)."""
    steps: list[Step] = []

    def visit(node: Node, start: int) -> None:
        for child in node.children.values():
            for row in child.rows:
                ids = list(child.piece) + list(row.tail)
                steps.append((Op(start, len(ids), 0), ids, [(len(child.piece) - 1, row)]))
            if not child.children:
                continue
            kept = store.get(child.key)
            if kept is not None:
                steps.append((Op(start, len(child.piece), stored=kept), [], []))
            else:
                steps.append((Op(start, len(child.piece), 0, keep=child.key), list(child.piece), []))
            visit(child, start + len(child.piece))

    visit(root, 0)
    return steps


def _chunks(steps: list[Step], budget: int) -> list[list[Step]]:
    """Consecutive runs of steps with up to `budget` packed tokens each (a longer step alone)."""
    out: list[list[Step]] = []
    current: list[Step] = []
    used = 0
    for step in steps:
        size = len(step[1])
        if current and used + size > budget:
            out.append(current)
            current, used = [], 0
        current.append(step)
        used += size
    if current:
        out.append(current)
    return out


def load_hf_backend(config: BackendConfig, log: Callable[[str], None] = lambda _: None,
                    progress: bool = False) -> HFBackend:
    """The hf backend for `config`: the embedded model, a local checkpoint or .gguf, or a hub name."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    # Our own progress report is the only thing on stderr (and --quiet means nothing at all).
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    device = resolve_device(config.device)
    dtype = resolve_dtype(config.dtype, device)
    ref = config.model
    display = ref
    try:
        source, kwargs = resolve_model(ref)
    except ValueError as e:
        raise InputError(f"backend.model: {e}")
    if ref == EMBEDDED:
        source, display = str(embedded_model_dir(log, progress)), EMBEDDED_NAME
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype, **kwargs)
    except OSError as e:
        raise InputError(f"backend.model: cannot load '{ref}' ({first_line(e)})")
    model.to(device)
    torch.set_grad_enabled(False)
    # "auto" resolves by hardware, and scores differ by dtype: the summary says which ran.
    dtype_name = str(dtype).replace("torch.", "")
    display = f"{display} [{dtype_name}]"
    revision = getattr(model.config, "_commit_hash", None)
    weights = str(Path(source) / kwargs["gguf_file"]) if "gguf_file" in kwargs else source
    identity = model_identity(ref, weights, f"{dtype_name}, {device}", revision)
    backend = HFBackend(model, tokenizer, config.hf, name=display, identity=identity,
                        max_context=config.max_context, log=log)
    if backend.tree is not None and backend.device.type == "cuda":
        log("compiling the GPU attention kernels (once per process)")
        backend.warm_up()
    return backend


def kv_cache_mib(configured: Optional[int], device: str) -> int:
    """The store's budget: as configured, else 1 GiB on a CPU and a quarter of a GPU's free memory
    (a large model's search trie holds several GiB of attention state)."""
    if configured is not None:
        return configured
    if device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return max(1024, free // 4 // 2**20)
    return 1024


def _attention_path(name: str, device_type: str) -> str:
    """pieces on a CPU (the fastest there, and bit-for-bit batch-invariant), tree on a GPU."""
    if name != "auto":
        return name
    return "tree" if device_type == "cuda" else "pieces"
