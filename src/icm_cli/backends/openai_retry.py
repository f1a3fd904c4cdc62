"""What the openai transport tries again, where and after how long: the errors that tell a
transient failure from a final one, a server's Retry-After, the choice of replica, and the
backoff between attempts (openai_transport.py makes the attempts).

A failed attempt (5xx, timeout, refused or dropped connection) is tried again on another
replica after an exponential backoff with jitter, and the replica that failed rests for a
moment. A 429 is retried the same way, after at least its Retry-After, but it is the server
pacing us, not failing: it does not spend `retries` (see THROTTLE_BUDGET_S). What no other
attempt can change fails at once: a 4xx or 501 answer, a TLS certificate that does not verify.
"""

from __future__ import annotations

import datetime
import email.utils
import itertools
import math
import random
import threading
import time
from contextlib import contextmanager
from typing import Iterator, Optional, Sequence

from ..foundation.errors import BackendError


TRANSIENT_STATUS = {408, 429}  # plus every 5xx
# 429s do not count against `retries` (throttling slows a run, it should not fail it), so they
# need a bound of their own: the time one request may spend waiting them out, in all. Ten
# minutes rides out per-minute rate limits many times over; a server that still throttles after
# that, or asks for a longer wait in one Retry-After, fails the request with a message saying so.
THROTTLE_BUDGET_S = 600.0
_jitter = random.Random()


class Transient(Exception):
    """One attempt failed in a way another attempt (or another replica) may not."""

    def __init__(self, url: str, what: str, retry_after: Optional[float] = None, throttled: bool = False):
        super().__init__(what)
        self.url, self.what, self.retry_after, self.throttled = url, what, retry_after, throttled


class RetriesExhausted(BackendError):
    """Every attempt at one request failed (timeouts, 5xx, refused or dropped connections)."""


class ServerUnreachable(BackendError):
    """No server answered at start-up (connect()): nothing had been sent, so nothing is lost."""


class Cancelled(BackendError):
    """The request was abandoned: the backend was closed, or the batch it belonged to failed."""


class Rejected(Exception):
    """The server answered 4xx or 501: retrying the same request will not help."""

    def __init__(self, url: str, status: int, message: str):
        super().__init__(message)
        self.url, self.status, self.message = url, status, message


def retry_after_s(value: Optional[str]) -> Optional[float]:
    """The wait a Retry-After header asks for, in seconds: it is either a number of seconds or an
    HTTP date (RFC 9110, 10.2.3); None if absent or unreadable."""
    if not value or not value.strip():
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value.strip())
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # HTTP dates are in GMT
            when = when.replace(tzinfo=datetime.timezone.utc)
        seconds = (when - datetime.datetime.now(datetime.timezone.utc)).total_seconds()
    return max(0.0, seconds) if math.isfinite(seconds) else None


class Replicas:
    """Which replica takes the next request: round-robin, passing over a replica that is behind.

    A replica with a fair share (concurrency / replicas) more requests in flight than the least
    busy one is skipped for now: equal servers take turns, an even share each, while a slow one
    does not hold work the others could do. A replica that just failed rests for `cooldown_s`
    (used only when no other is available); a retry avoids the replica its last attempt failed on.
    """

    def __init__(self, urls: Sequence[str], cooldown_s: float, concurrency: int = 1):
        self.urls = list(urls)
        self.cooldown_s = cooldown_s
        self.slack = max(1, -(-concurrency // len(self.urls)))  # the fair share, rounded up
        self._turn = itertools.count()
        self._busy = dict.fromkeys(self.urls, 0)
        self._resting: dict[str, float] = {}
        self._lock = threading.Lock()

    @contextmanager
    def lease(self, avoid: Optional[str] = None) -> Iterator[str]:
        with self._lock:
            now = time.monotonic()
            start = next(self._turn)
            order = [self.urls[(start + k) % len(self.urls)] for k in range(len(self.urls))]
            others = [u for u in order if u != avoid] or order
            healthy = [u for u in others if self._resting.get(u, 0.0) <= now]
            candidates = healthy or others
            least = min(self._busy[u] for u in candidates)
            url = next(u for u in candidates if self._busy[u] <= least + self.slack)
            self._busy[url] += 1
        try:
            yield url
        finally:
            with self._lock:
                self._busy[url] -= 1

    def failed(self, url: str) -> None:
        with self._lock:
            self._resting[url] = time.monotonic() + self.cooldown_s


def backoff_delay(backoff_s: float, n: int, retry_after: Optional[float], most: float = 60.0) -> float:
    """How long to wait before the (n+1)-th retry of a failed attempt."""
    # Exponential backoff with jitter, so retries from many threads do not arrive together;
    # a server's Retry-After is honoured up to `most`.
    delay = min(30.0, backoff_s * 2 ** min(n, 30)) * _jitter.uniform(0.5, 1.5)
    if retry_after is not None and retry_after > 0:
        delay = max(delay, min(retry_after, most))
    return delay


def throttle_delay(budget: float, backoff_s: float, last: Transient, n: int, waited_s: float) -> float:
    """How long to wait after the (n+1)-th 429 of a request; BackendError once the budget is spent."""
    left = budget - waited_s
    limit = f"the most this backend waits out throttling is {budget:g} s per request"
    if last.retry_after is not None and last.retry_after > left:
        raise BackendError(
            f"{last.url}: {last.what} asks to wait {last.retry_after:.0f} s ({limit}, {waited_s:.0f} s "
            f"spent already); try again later or raise the server's rate limit"
        )
    if left <= 0:
        raise BackendError(
            f"{last.url}: {last.what}: still throttled after {waited_s:.0f} s of waiting ({n + 1} answers "
            f"of 429 to one request; {limit}); lower backend.concurrency or raise the server's rate limit"
        )
    # Backoff from at least 10 ms, so a backoff_s of 0 cannot turn throttling into a busy loop.
    delay = min(30.0, max(backoff_s, 0.01) * 2 ** min(n, 30)) * _jitter.uniform(0.5, 1.5)
    return min(left, max(delay, last.retry_after or 0.0))
