"""The attention-state store: exact keys, least recently used out first, a hard byte budget."""

from __future__ import annotations

import torch

from icm_cli.backends.kv_store import ROOT_KEY, KVStore, chain_key


def layers(tokens: int) -> tuple:
    t = torch.zeros(1, 1, tokens, 4)  # 16 bytes per token per tensor
    return ((t, t.clone()),)


def test_a_piece_is_named_by_everything_before_it():
    a, b = chain_key(ROOT_KEY, (1, 2)), chain_key(ROOT_KEY, (1,))
    assert a != b
    assert chain_key(a, (3,)) != chain_key(b, (3,))
    assert chain_key(chain_key(ROOT_KEY, (1,)), (2, 3)) != chain_key(chain_key(ROOT_KEY, (1, 2)), (3,))
    assert chain_key(a, (3,)) == chain_key(chain_key(ROOT_KEY, (1, 2)), (3,))


def test_least_recently_used_goes_first_and_the_budget_holds():
    store = KVStore(budget_bytes=3 * 32 * 10)  # room for three 10-token pieces
    for k in (b"a", b"b", b"c"):
        store.put(k, layers(10))
    assert store.get(b"a") is not None  # now b is the oldest
    store.put(b"d", layers(10))
    assert b"b" not in store and all(k in store for k in (b"a", b"c", b"d"))
    assert store.bytes == 3 * 320
    store.put(b"huge", layers(100))  # bigger than the whole budget: not kept, nothing evicted
    assert b"huge" not in store and len(store) == 3
    store.clear()
    assert len(store) == 0 and store.bytes == 0


def test_zero_budget_keeps_nothing():
    store = KVStore(0)
    store.put(b"a", layers(1))
    assert len(store) == 0

