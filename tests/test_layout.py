"""Prompt layout: each prompt holds exactly the other labelled examples, newest last."""

from __future__ import annotations

import random

import pytest

from icm_cli.algorithm.scoring import CoherenceScorer, PromptSet, layout
from icm_cli.algorithm.search import extend_order


@pytest.mark.parametrize("n", [1, 2, 7, 8, 9, 23, 64])
def test_every_context_is_the_others_with_the_tail_last(n):
    order = random.Random(n).sample(range(100), n)
    contexts, full = layout(order, tail_block=8)
    assert full == order
    assert set(contexts) == set(order)
    tail = order[n - n % 8:]
    for i, ctx in contexts.items():
        assert sorted(ctx) == sorted(set(order) - {i})
        others = [j for j in tail if j != i]
        if i not in tail:
            assert ctx[len(ctx) - len(others):] == others  # the tail, in labelling order, closes every prompt


def test_adding_one_example_leaves_every_prompt_prefix_in_place():
    # What makes growth cheap for a backend that keeps attention state: with 8k+r examples
    # (r < 7), adding one changes every old prompt only at its end.
    order = list(range(19))
    before, _ = layout(order)
    after, _ = layout(order + [19])
    for i, ctx in before.items():
        assert after[i][: len(ctx)] == ctx or i in order[16:]
    for i in order[:16]:
        assert after[i] == before[i] + [19]


def test_extend_order_appends_new_labels_and_keeps_relabelled_in_place():
    assert extend_order((3, 1), (None, 0, None, 1, 1)) == (3, 1, 4)
    assert extend_order((3, 1, 4), (None, 1, None, 1, 1)) == (3, 1, 4)
    assert extend_order((3, 1, 4), (None, 1, None, None, 1)) == (1, 4)


def test_requests_follow_the_order_and_reject_a_wrong_one():
    prompts = PromptSet(tuple(f"q{i}" for i in range(4)), ("a", "b"))
    scorer = CoherenceScorer(prompts, backend=None)  # type: ignore[arg-type]  # requests() only
    labels = (0, 1, None, 0)
    requests, examples = scorer.requests(labels, (3, 0, 1))
    full = requests[examples.index(2)].segments
    assert full == ("q3 a\n\n", "q0 a\n\n", "q1 b\n\n", "q2")
    with pytest.raises(ValueError):
        scorer.requests(labels, (3, 1))
