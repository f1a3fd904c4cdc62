"""JSON over HTTP to a set of OpenAI-compatible replicas: one httpx client, replica choice, retries.

httpx keeps the keep-alive connections (one pool for every request). What is ours is a deadline
per attempt, spreading requests over the replicas and riding out their failures:
a failed attempt (5xx, timeout, refused or dropped connection) is tried again on another
replica after an exponential backoff with jitter, and the replica that failed rests for a
moment. A 429 is retried the same way, after at least its Retry-After, but it is the server
pacing us, not failing: it does not spend `retries` (see THROTTLE_BUDGET_S). What no other
attempt can change fails at once: a 4xx or 501 answer, a TLS certificate that does not verify.
httpx's own transport retries stay off: they would retry a dead replica in place instead of
moving on, double the connect timeout against an unreachable host, and go uncounted in the
stats.

The API key is held in a `Secret` and sent only as the Authorization header of each request;
server text that goes into an error is scrubbed of it.

The requests run as asyncio tasks of an httpx.AsyncClient, on an event loop in a daemon thread
of their own; `request()` is the blocking face the rest of the backend calls from any thread.
Why not a blocking httpx.Client: its timeouts are per phase (connect, each read, each write), so
a server that trickles a byte now and then, in its headers or its body, holds an attempt for
ever; and a blocked read cannot be interrupted from another thread. As tasks, one attempt is
bounded as a whole (asyncio.wait_for) and any request can be cancelled where it waits: close()
(or cancel(), when a batch has failed) ends every request at once, its caller gets Cancelled,
and no retry starts after it. So after Ctrl-C no thread of ours keeps waiting on a server that
never answers, and nothing holds the process at exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import email.utils
import ipaddress
import itertools
import json
import math
import random
import ssl
import threading
import time
import urllib.parse
from contextlib import contextmanager, suppress
from typing import Any, Callable, Iterator, Optional, Sequence, TypeVar, Union

import httpx

from ..errors import BackendError

_TRANSIENT_STATUS = {408, 429}  # plus every 5xx
# 429s do not count against `retries` (throttling slows a run, it should not fail it), so they
# need a bound of their own: the time one request may spend waiting them out, in all. Ten
# minutes rides out per-minute rate limits many times over; a server that still throttles after
# that, or asks for a longer wait in one Retry-After, fails the request with a message saying so.
THROTTLE_BUDGET_S = 600.0
_jitter = random.Random()


class Secret:
    """Holds the API key so that no repr, log line or traceback variable dump shows it."""

    def __init__(self, value: str):
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "<secret>"

    __str__ = __repr__


def sent_in_clear(urls: Sequence[str]) -> list[str]:
    """The hosts of plain http:// URLs that are not this machine: a key sent there crosses a network
    unencrypted. Loopback is 127.0.0.0/8, ::1 (also IPv4-mapped) and localhost."""
    hosts = []
    for url in urls:
        parts = urllib.parse.urlsplit(url)
        host = (parts.hostname or "").rstrip(".")
        if parts.scheme != "http" or host == "localhost" or host.endswith(".localhost"):
            continue
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None  # a name other than localhost: it may resolve anywhere
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if (ip is None or not ip.is_loopback) and host not in hosts:
            hosts.append(host)
    return hosts


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


def error_text(data: bytes) -> str:
    """The message inside a server's error body, whichever of the usual shapes it has."""
    text = data.decode("utf-8", "replace")
    try:
        body = json.loads(text)
    except ValueError:
        return text
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            for key in ("message", "detail", "error"):
                if isinstance(err.get(key), str):
                    return err[key]
        if isinstance(err, str):
            return err
        for key in ("message", "detail"):
            if isinstance(body.get(key), str):
                return body[key]
    return text


class _BlockingTransport(httpx.AsyncBaseTransport):
    """A blocking httpx transport (tests inject one) run in the loop's worker threads."""

    def __init__(self, inner: httpx.BaseTransport):
        self.inner = inner

    def _send(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        try:
            content = response.read()
        finally:
            response.close()
        return httpx.Response(response.status_code, headers=response.headers, content=content,
                              extensions=response.extensions)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await asyncio.to_thread(self._send, request)

    async def aclose(self) -> None:
        self.inner.close()


E = TypeVar("E", bound=BaseException)


def _cause(error: BaseException, kind: type[E]) -> Optional[E]:
    """The first exception of `kind` in the chain httpx raised (it wraps the OS or ssl error)."""
    cause: Optional[BaseException] = error
    while cause is not None:
        if isinstance(cause, kind):
            return cause
        cause = cause.__cause__ or cause.__context__
    return None


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


class Transport:
    """Sends JSON requests to the replicas and returns the JSON object of the first success."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        timeout_s: float,
        retries: int,
        backoff_s: float,
        concurrency: int,
        key: Optional[Secret] = None,
        on_retry: Callable[[], None] = lambda: None,
        transport: Optional[Union[httpx.AsyncBaseTransport, httpx.BaseTransport]] = None,
    ):
        self.base_urls = list(base_urls)
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self.throttle_budget_s = THROTTLE_BUDGET_S
        self.replicas = Replicas(self.base_urls, cooldown_s=min(30.0, max(0.05, 10 * backoff_s)), concurrency=concurrency)
        self._key = key
        self._on_retry = on_retry
        # No cap on connections (the backend's thread pool already bounds requests in flight, and
        # a cap would add a pool wait that is not a server failure); keep enough idle ones alive
        # that every thread finds one on whichever replica it is sent to.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=max(1, concurrency) * len(self.base_urls))
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            transport = _BlockingTransport(transport)
        self._client = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(limits=limits, retries=0),
            # Each phase inside the whole attempt's deadline (see _attempt), which is what bounds it.
            timeout=httpx.Timeout(timeout_s),
            # The servers are named in the config: no proxy or .netrc from the environment.
            trust_env=False,
        )
        self._loop = asyncio.new_event_loop()
        # A daemon: a request still waiting on a server must never keep the process from exiting.
        self._thread = threading.Thread(target=self._run_loop, name="icm-openai-http", daemon=True)
        self._thread.start()
        self._lock = threading.Lock()
        self._closed = False
        self._pending: set[concurrent.futures.Future] = set()  # one per request() waiting

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def __repr__(self) -> str:
        return f"Transport(base_urls={self.base_urls!r})"

    def request(self, url_for: Callable[[str], str], payload: Optional[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        """GET (no payload) or POST `url_for(replica)`, retried over replicas; (url, JSON object).

        Blocks the calling thread until the request's task on the loop is done. Raises Rejected
        for a 4xx or 501 answer and RetriesExhausted once every attempt has failed.
        """
        with self._lock:  # checked and registered together, so no request starts after close()
            if self._closed:
                raise Cancelled("the openai backend is closed")
            future = asyncio.run_coroutine_threadsafe(self._outcome(url_for, payload), self._loop)
            self._pending.add(future)
        try:
            result, error = future.result()
            if error is not None:
                raise error
            assert result is not None
            return result
        except concurrent.futures.CancelledError:
            raise Cancelled("request cancelled: the openai backend was closed or its batch failed") from None
        finally:
            future.cancel()  # nothing once done; after a KeyboardInterrupt here, the task stops
            with self._lock:
                self._pending.discard(future)

    def cancel(self) -> None:
        """End every request in flight: each caller gets Cancelled now, each task stops where it waits."""
        with self._lock:
            pending = list(self._pending)
        for future in pending:
            future.cancel()

    async def _outcome(self, url_for: Callable[[str], str], payload: Optional[dict[str, Any]]
                       ) -> tuple[Optional[tuple[str, dict[str, Any]]], Optional[Exception]]:
        # The error as a value, not as the task's exception: a request its caller stopped waiting
        # for (cancel(), Ctrl-C) can still end in an error before the cancellation reaches it, and
        # asyncio would log that unread exception, traceback and all, on stderr.
        try:
            return await self._request(url_for, payload), None
        except Exception as e:  # noqa: BLE001 - re-raised in the caller's thread by request()
            return None, e

    async def _request(self, url_for: Callable[[str], str], payload: Optional[dict[str, Any]]) -> tuple[str, dict[str, Any]]:
        failures = throttles = 0
        throttled_s = 0.0  # waited out on 429s, against throttle_budget_s
        last_base: Optional[str] = None
        while True:
            with self.replicas.lease(avoid=last_base) as base:
                url = url_for(base)
                try:
                    return url, await self._attempt(url, payload)
                except Transient as e:
                    last, last_base = e, base
                    self.replicas.failed(base)
            if last.throttled:
                delay = self._throttle_delay(last, throttles, throttled_s)
                throttles += 1
                throttled_s += delay
            else:
                failures += 1
                if failures > self.retries:
                    break
                delay = self._delay(failures - 1, last.retry_after)
            self._on_retry()
            await asyncio.sleep(delay)
        attempts = failures + throttles
        servers = f"{len(self.base_urls)} servers" if len(self.base_urls) > 1 else "1 server"
        # What the caller should do next (resume from a checkpoint, or start again) is the CLI's to say.
        raise RetriesExhausted(f"{last.url}: {last.what} ({attempts} attempts over {servers})")

    def _delay(self, n: int, retry_after: Optional[float], most: float = 60.0) -> float:
        # Exponential backoff with jitter, so retries from many threads do not arrive together;
        # a server's Retry-After is honoured up to `most`.
        delay = min(30.0, self.backoff_s * 2 ** min(n, 30)) * _jitter.uniform(0.5, 1.5)
        if retry_after is not None and retry_after > 0:
            delay = max(delay, min(retry_after, most))
        return delay

    def _throttle_delay(self, last: Transient, n: int, waited_s: float) -> float:
        """How long to wait after the (n+1)-th 429 of a request; BackendError once the budget is spent."""
        budget, left = self.throttle_budget_s, self.throttle_budget_s - waited_s
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
        delay = min(30.0, max(self.backoff_s, 0.01) * 2 ** min(n, 30)) * _jitter.uniform(0.5, 1.5)
        return min(left, max(delay, last.retry_after or 0.0))

    async def _exchange(self, url: str, payload: Optional[dict[str, Any]]) -> httpx.Response:
        headers = {"Accept": "application/json"}
        if self._key is not None:
            headers["Authorization"] = "Bearer " + self._key.reveal()
        if payload is None:
            return await self._client.get(url, headers=headers)
        return await self._client.post(url, json=payload, headers=headers)  # the whole body is read

    async def _attempt(self, url: str, payload: Optional[dict[str, Any]]) -> dict[str, Any]:
        try:
            # One deadline for the whole attempt: connecting, sending, the headers and the body.
            response = await asyncio.wait_for(self._exchange(url, payload), self.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise Transient(url, f"no response within {self.timeout_s:g} s") from None
        except httpx.RequestError as e:  # connect, read, write, protocol or decoding failures
            refused = _cause(e, ssl.SSLCertVerificationError)
            if refused is not None:  # the same certificate will not verify on the next attempt
                reason = refused.verify_message or refused.reason or str(refused)
                raise BackendError(f"{url}: TLS certificate verification failed ({self.clean(str(reason))})") from None
            raise Transient(url, self._describe(e)) from None
        status, data = response.status_code, response.content
        if status == 501:  # Not Implemented: this server lacks the endpoint or the feature
            raise Rejected(url, status, self.clean(error_text(data)) or "Not Implemented")
        if status in _TRANSIENT_STATUS or status >= 500:
            detail = self.clean(error_text(data))
            raise Transient(url, f"HTTP {status}" + (f" ({detail})" if detail else ""),
                            retry_after_s(response.headers.get("Retry-After")), throttled=status == 429)
        if not 200 <= status < 300:
            raise Rejected(url, status, self.clean(error_text(data)))
        try:
            parsed = json.loads(data)
        except ValueError:
            raise BackendError(f"{url}: malformed response (not JSON: {self.clean(data.decode('utf-8', 'replace'))!r})") from None
        if not isinstance(parsed, dict):
            raise BackendError(f"{url}: malformed response (not a JSON object)")
        return parsed

    def _describe(self, e: httpx.RequestError) -> str:
        if _cause(e, ConnectionRefusedError) is not None:
            return "connection refused"
        return self.clean(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)

    def clean(self, text: str) -> str:
        """One short line of server text, with the key scrubbed in case a server echoes headers."""
        if self._key is not None:  # before cutting, so no part of the key survives the cut
            text = text.replace(self._key.reveal(), "***")
        return " ".join(text.split())[:240]

    def close(self) -> None:
        """Cancel what is in flight, refuse new requests, close the connections; within about a second."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.cancel()
        # A close that does not finish in a second must not hold the caller: the thread is a daemon.
        with suppress(concurrent.futures.TimeoutError, httpx.HTTPError, OSError, RuntimeError):
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=1.0)
        with suppress(RuntimeError):  # the loop has stopped already
            self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=0.5)

    async def _shutdown(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()
