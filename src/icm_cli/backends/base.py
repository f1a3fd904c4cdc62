"""The one narrow interface every backend implements: prompts in, label log-probabilities out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence


@dataclass(frozen=True)
class ScoreRequest:
    """A prompt given as pieces, and the continuations to score after it.

    Requests whose leading pieces are equal share that prefix; a backend that keeps
    attention state (KV cache) computes it once. Joining the pieces gives the prompt.
    """

    segments: tuple[str, ...]
    continuations: tuple[str, ...]


@dataclass
class BackendStats:
    tokens_requested: int = 0  # tokens in the prompts as asked for, counted one prompt at a time
    tokens_computed: int = 0  # tokens the model ran (servers: prompt tokens not served from their cache)
    tokens_reused: int = 0  # tokens whose attention state came from an earlier call
    forward_calls: int = 0
    requests: int = 0

    def hit_rate(self) -> float:
        """Share of requested prompt tokens that were served from shared prefixes."""
        if not self.tokens_requested:
            return 0.0
        return max(0.0, 1 - self.tokens_computed / self.tokens_requested)


class Backend(Protocol):
    name: str  # the backend type, as in backend.type
    model_name: str  # for people: the summary and messages
    identity: str  # what a checkpoint compares: the model's files, revision or served id, and dtype
    max_context: int
    stats: BackendStats

    def score(self, requests: Sequence[ScoreRequest]) -> list[list[float]]:
        """For each request, the log-probability of each continuation given the joined prompt."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def forget(self) -> None:
        """Drop attention state kept from earlier calls, so the next calls' cost is their own."""
        ...

    def close(self) -> None:
        """Release what the backend holds (threads, connections); quick, even mid-request."""
        ...
