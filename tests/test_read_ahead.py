"""The search's read ahead (search.read_ahead): evaluations handed to the backend several at a
time give exactly the search that asks for them one at a time, in fewer calls."""

from __future__ import annotations

import dataclasses
import random
import zlib

import pytest

from fakes import SentimentBackend
from icm_cli.foundation.config import SearchConfig
from icm_cli.algorithm.scoring import CoherenceScorer, PromptSet
from icm_cli.algorithm.search import Constraint, Problem, run_search

WORDS = ["good", "great", "bad", "awful", "love", "hate", "nice", "sad", "late", "happy", "meh", "ok"]


def tweets(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [f"Tweet: {' '.join(rng.sample(WORDS, 3))}\nSentiment:" for _ in range(n)]


class NoisyBackend(SentimentBackend):
    """Keyword sentiment plus a fixed pseudo-random nudge per whole prompt: the context moves each
    reading unpredictably, so proposals that follow one example's reading often lower U."""

    def score(self, requests):
        out = super().score(requests)
        for r, values in zip(requests, out):
            nudge = (zlib.crc32("".join(r.segments).encode()) % 1000) / 250 - 2
            values[0] += nudge
        return out


def search(lookahead: int, problem: Problem, texts: list[str], params: SearchConfig, noisy: bool = False):
    backend = NoisyBackend() if noisy else SentimentBackend()
    backend.lookahead = lookahead
    scorer = CoherenceScorer(PromptSet(tuple(texts), ("positive", "negative"), calibrate=True), backend)
    steps = []
    result = run_search(problem, scorer, params, on_step=steps.append)
    return result, [(s.iteration, s.labels, s.utility, s.accepted) for s in steps], backend


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("quench", [False, True])
def test_reading_ahead_changes_nothing_but_the_number_of_calls(seed, quench):
    texts = tweets(20, seed)
    params = SearchConfig(initial_labels=4, iterations=80, seed=seed, final_quench=quench)
    problem = Problem(len(texts), 2)
    one, steps_one, b1 = search(1, problem, texts, params)
    many, steps_many, b8 = search(8, problem, texts, params)
    assert dataclasses.astuple(one) == dataclasses.astuple(many)
    assert steps_one == steps_many
    assert b8.calls <= b1.calls
    # Every evaluation the search used was computed; the rest is what reading ahead wasted,
    # kept small by reading about one acceptance ahead.
    assert b1.requests <= b8.requests <= 2 * b1.requests


def test_reading_ahead_saves_calls_where_proposals_are_rejected():
    texts = tweets(24, 10)
    params = SearchConfig(initial_labels=24, iterations=200, seed=4, t0=0.05, t_min=0.01)
    one, _, b1 = search(1, Problem(len(texts), 2), texts, params, noisy=True)
    many, _, b8 = search(8, Problem(len(texts), 2), texts, params, noisy=True)
    assert dataclasses.astuple(one) == dataclasses.astuple(many)
    assert one.proposals > 2 * one.accepted
    assert b8.calls <= 0.6 * b1.calls


def test_reading_ahead_stops_at_a_proposal_the_repair_must_see():
    texts = tweets(16, 5)
    constraints = tuple(Constraint(2 * k, 2 * k + 1, "exactly_one_true") for k in range(8))
    problem = Problem(len(texts), 2, constraints=constraints)
    params = SearchConfig(initial_labels=4, iterations=60, seed=3)
    one, steps_one, _ = search(1, problem, texts, params)
    many, steps_many, _ = search(8, problem, texts, params)
    assert dataclasses.astuple(one) == dataclasses.astuple(many)
    assert steps_one == steps_many
