"""A backend type that is not icm's: all it takes is this module and one registry entry
(tests/test_backend_registry.py). It reads a label from the last letter of the query's text."""

from __future__ import annotations

import math

from icm_cli.backends.base import BackendStats


class ToyBackend:
    name = "toy"
    model_name = identity = "toy: the last letter decides"
    max_context = 100_000

    def __init__(self) -> None:
        self.stats = BackendStats()

    def score(self, requests):
        out = []
        for r in requests:
            text = r.segments[-1].rsplit("\n", 1)[0].strip()
            lean = 2.0 if text[-1:] in "aeiou" else -2.0
            out.append([-math.log1p(math.exp(-lean)), -math.log1p(math.exp(lean))])
            self.stats.requests += 1
        return out

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def forget(self) -> None:
        pass

    def close(self) -> None:
        pass


def load(config, log, progress):
    return ToyBackend()
