"""The prefix trie and its size: the least work an exact per-evaluation engine can do."""

from __future__ import annotations

import math

import pytest

from icm_cli.backends.prefix_tree import Row, build_trie, trie_tokens
from icm_cli.algorithm.scoring import leave_one_out_contexts


def row(request: int, *pieces: tuple[int, ...], tail: tuple[int, ...] = ()) -> Row:
    return Row(request, tuple(pieces), tail, ((0, 0, 1),))


def test_shared_pieces_are_counted_once():
    a, b, c = (1, 2, 3), (4, 5), (6,)
    rows = [row(0, a, b), row(1, a, c), row(2, a, b, c, tail=(7, 8))]
    # a once, b once (rows 0 and 2 share a+b), c twice (after a, after a+b), tail 2
    assert trie_tokens(build_trie(rows)) == 3 + 2 + 1 + 1 + 2


def test_distinct_prompts_share_nothing():
    rows = [row(i, (i, i), (100 + i,)) for i in range(5)]
    assert trie_tokens(build_trie(rows)) == sum(r.length() for r in rows)


def halving_rows(n: int, demo_len: int, query_len: int) -> list[Row]:
    # Example j's demonstration and query as distinct token runs, like rendered text.
    demo = {j: tuple(range(1000 * j, 1000 * j + demo_len)) for j in range(n)}
    query = {j: tuple(range(1000 * j + 500, 1000 * j + 500 + query_len)) for j in range(n)}
    return [row(i, *(demo[j] for j in ctx), query[i]) for i, ctx in leave_one_out_contexts(range(n)).items()]


@pytest.mark.parametrize("n", [2, 5, 16, 37, 64, 128])
def test_halving_layout_trie_is_n_log_n_demonstrations(n):
    d, q = 10, 3
    rows = halving_rows(n, d, q)
    reference = sum(r.length() for r in rows)
    assert reference == n * ((n - 1) * d + q)
    trie = trie_tokens(build_trie(rows))
    # Each recursion level writes every demonstration once (T(n) = 2T(n/2) + n): at most
    # n * ceil(log2 n) demonstrations, plus every query once.
    assert trie <= n * math.ceil(math.log2(n)) * d + n * q
    if n >= 64:
        assert reference / trie > 9  # the per-evaluation bound the benchmark reports (ref/trie)
