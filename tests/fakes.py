"""Fake backends for tests of the run's logic (the real model runs the same paths elsewhere)."""

from __future__ import annotations

import math
import re

from icm_cli.backends.base import BackendStats

GOOD = {"good", "great", "love", "happy", "nice"}
BAD = {"bad", "awful", "hate", "sad", "late"}


class SentimentBackend:
    """Keyword sentiment for the query (the text after the last 'Tweet:'), nudged by how many
    demonstrations before it say positive."""

    name = "fake"
    model_name = "fake-sentiment"
    identity = "fake-sentiment"
    max_context = 1_000_000

    def __init__(self) -> None:
        self.stats = BackendStats()
        self.calls = 0
        self.requests = 0

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def forget(self) -> None:
        pass

    def close(self) -> None:
        pass

    def score(self, requests):
        self.calls += 1
        self.requests += len(requests)
        out = []
        for r in requests:
            prompt = "".join(r.segments)
            self.stats.tokens_requested += len(prompt.split())
            self.stats.tokens_computed += len(r.segments[-1].split())
            query = prompt.rsplit("Tweet:", 1)[-1]
            words = set(re.findall(r"[a-z]+", query.lower()))
            lean = len(words & GOOD) - len(words & BAD)
            shown = prompt.count("Sentiment: positive") - prompt.count("Sentiment: negative")
            logit = 1.5 * lean + 0.05 * shown + 0.3
            out.append([-math.log1p(math.exp(-logit)), -math.log1p(math.exp(logit))])
        return out
