"""The GPU's packed calls (tree_attention, tree_calls), checked on the CPU: the block table against
the dense mask it stands for, and with the real model, scores equal to the pieces path's.

On a CPU FlexAttention runs eagerly (it materializes each call's scores), so the model tests
stay small; tests/test_gpu.py runs the compiled kernel on a GPU.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from icm_cli.backends.loading import load_backend
from icm_cli.backends.tree_attention import BLOCK, Layout, TreeStep, block_table, subtree_ends
from icm_cli.foundation.config import BackendConfig, HFOptions, SearchConfig
from icm_cli.algorithm.scoring import CoherenceScorer, PromptSet
from icm_cli.algorithm.search import Problem, run_search

ROOT = Path(__file__).resolve().parents[1]
# Eager FlexAttention says once that it is unfused; on a CPU that is the point.
pytestmark = pytest.mark.filterwarnings("ignore:flex_attention called without torch.compile")


def random_layout(rng: random.Random, steps: int, loaded_share: float, spare: int = 0) -> tuple[Layout, np.ndarray]:
    """A random trie of steps in preorder, some loaded, the rest the call's own tokens; `spare`
    whole blocks of padding after each region, as the fixed-sizes mode pads to a power of two."""
    tree: list[TreeStep] = []
    depth_end: list[int] = []
    for i in range(steps):
        parent = rng.randrange(-1, i) if i else -1
        # Preorder: a step's parent must still be open, i.e. on the path to the last step.
        if i:
            path = []
            p = i - 1
            while p >= 0:
                path.append(p)
                p = tree[p].parent
            parent = rng.choice(path + [-1])
        start = depth_end[parent] if parent >= 0 else 0
        length = rng.randint(1, 40)
        loaded = rng.random() < loaded_share
        tree.append(TreeStep(start, length, parent, () if loaded else (1,) * length, stored=object() if loaded else None))
        depth_end.append(start + length)
    # As in a real walk, a loaded piece is always on the way to a prompt the call runs.
    below = [s.run for s in tree]
    for i in range(len(tree) - 1, -1, -1):
        if tree[i].parent >= 0:
            below[tree[i].parent] = below[tree[i].parent] or below[i]
    for i, s in enumerate(tree):
        if not below[i]:
            s.stored, s.tokens = None, (1,) * s.length
    tout = subtree_ends(tree)
    loaded_steps = [i for i, s in enumerate(tree) if not s.run]
    run_steps = [i for i, s in enumerate(tree) if s.run]
    kv_step, kv_pos = [], []
    for i in loaded_steps:
        kv_step += [i] * tree[i].length
        kv_pos += list(range(tree[i].start, tree[i].start + tree[i].length))
    pad = -len(kv_step) % BLOCK + (spare * BLOCK if kv_step else 0)
    kv_step += [-1] * pad
    kv_pos += [0] * pad
    loaded = len(kv_step)
    q_step, q_pos = [], []
    for i in run_steps:
        q_step += [i] * tree[i].length
        q_pos += list(range(tree[i].start, tree[i].start + tree[i].length))
    pad = -len(q_step) % BLOCK + spare * BLOCK
    q_step += [-1] * pad
    q_pos += [0] * pad
    layout = Layout(np.array(q_step), np.array(q_pos), np.array(kv_step + q_step), np.array(kv_pos + q_pos), loaded)
    return layout, tout


def dense(layout: Layout, tout: np.ndarray, window: int) -> np.ndarray:
    q, k = layout.q_step[:, None], layout.kv_step[None, :]
    qp, kp = layout.q_pos[:, None], layout.kv_pos[None, :]
    seen = (q >= 0) & (k >= 0) & (k <= q) & (tout[np.maximum(k, 0)] >= q) & (kp <= qp)
    if window:
        seen &= qp - kp < window
    return seen


@pytest.mark.parametrize("spare", [0, 2])
@pytest.mark.parametrize("seed", range(12))
def test_block_table_holds_every_visible_pair_and_is_exact_without_a_window(seed, spare):
    rng = random.Random(seed)
    layout, tout = random_layout(rng, rng.randint(2, 120), rng.choice([0.0, 0.3, 0.7]), spare)
    for window in (0, 64):
        mask = dense(layout, tout, window)
        qb, kb = mask.shape[0] // BLOCK, mask.shape[1] // BLOCK
        tiles = mask.reshape(qb, BLOCK, kb, BLOCK).any(axis=(1, 3))
        table = block_table(layout, tout, window)
        assert not (tiles & ~table).any(), "a tile with a visible pair was left out"
        if not window:
            assert (table == tiles).all(), "a tile with no visible pair was kept"


# ---- with the real model -------------------------------------------------------------------



@pytest.fixture(scope="module")
def backends():
    pieces = load_backend(BackendConfig(dtype="float32"))
    tree = load_backend(BackendConfig(dtype="float32", hf=HFOptions(attention="tree")))
    return pieces, tree


@pytest.fixture(scope="module")
def prompts() -> PromptSet:
    rows = [json.loads(line) for line in (ROOT / "examples" / "tweets-16.jsonl").read_text().splitlines()]
    return PromptSet(tuple(f"Tweet: {r['text']}\nSentiment:" for r in rows[:6]), ("positive", "negative"),
                     calibrate=True)


def _close(a, b, tol=1e-4):
    return max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb)) < tol


@pytest.mark.model
def test_tree_calls_score_as_the_pieces_path_cold_warm_split_and_without_a_store(backends, prompts):
    pieces, tree = backends
    rng = random.Random(3)
    labels = tuple(rng.choice([0, 1]) for _ in prompts.queries)
    requests, _ = CoherenceScorer(prompts, pieces).requests(labels)
    pieces.forget()
    want = pieces.score(requests)
    tree.forget()
    assert _close(tree.score(requests), want)  # cold
    changed = tuple(1 - y if k == 2 else y for k, y in enumerate(labels))
    requests2, _ = CoherenceScorer(prompts, pieces).requests(changed)
    pieces.forget()
    want2 = pieces.score(requests2)
    reused = tree.stats.tokens_reused
    assert _close(tree.score(requests2), want2)  # warm: the unchanged prefixes come from the store
    assert tree.stats.tokens_reused > reused
    budget, tree.tree.budget = tree.tree.budget, 300  # many calls: later ones read earlier ones' pieces
    try:
        tree.forget()
        assert _close(tree.score(requests2), want2)
        store = tree.store.budget_bytes
        tree.store.budget_bytes = 0
        tree.forget()
        assert _close(tree.score(requests2), want2)
    finally:
        tree.tree.budget, tree.store.budget_bytes = budget, store


@pytest.mark.model
def test_no_tensor_of_the_computation_is_made_without_a_device(backends, prompts):
    # With torch's default device set to meta, a tensor made without device= holds no numbers,
    # and the scores would come back as garbage (they did, before the packed walk named its device).
    rng = random.Random(5)
    labels = tuple(rng.choice([0, 1]) for _ in prompts.queries[:5])
    small = PromptSet(prompts.queries[:5], prompts.label_words, calibrate=True)
    for backend in backends:
        requests, _ = CoherenceScorer(small, backend).requests(labels)
        backend.forget()
        want = backend.score(requests)
        backend.forget()
        with torch.device("meta"):
            got = backend.score(requests)
        assert got == want


@pytest.mark.model
def test_a_search_on_the_tree_path_labels_as_the_pieces_path(backends, prompts):
    # The pieces path labels as scoring every prompt from scratch (test_backend_hf.py); on a GPU
    # tests/test_gpu.py compares the tree path with scoring from scratch directly.
    pieces, tree = backends
    params = SearchConfig(initial_labels=2, iterations=8, seed=1)
    problem = Problem(len(prompts.queries), 2)
    results = []
    for backend in (pieces, tree):
        backend.forget()
        results.append(run_search(problem, CoherenceScorer(prompts, backend), params))
    assert results[0].labels == results[1].labels
    assert results[0].utility == pytest.approx(results[1].utility, abs=1e-3)
