"""JSON over HTTP to a set of OpenAI-compatible replicas: one httpx client, replica choice, retries.

httpx keeps the keep-alive connections (one pool for every request). What is ours is a deadline
per attempt, spreading requests over the replicas and riding out their failures: what is tried
again, on which replica and after how long is openai_retry.py's to say.
httpx's own transport retries stay off: they would retry a dead replica in place instead of
moving on, double the connect timeout against an unreachable host, and go uncounted in the
stats.

The API key is held in a `Secret` (openai_key.py) and sent only as the Authorization header of
each request; server text that goes into an error is scrubbed of it.

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
import json
import ssl
import threading
from contextlib import suppress
from typing import Any, Callable, Optional, TypeVar, Union

import httpx

from ..foundation.backend_options import OpenAIOptions
from ..foundation.errors import BackendError
from .openai_key import Secret
from .openai_retry import THROTTLE_BUDGET_S, TRANSIENT_STATUS, Cancelled, Rejected, Replicas, RetriesExhausted, Transient, backoff_delay, retry_after_s, throttle_delay


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


class Transport:
    """Sends JSON requests to the replicas and returns the JSON object of the first success."""

    def __init__(
        self,
        options: OpenAIOptions,
        *,
        key: Optional[Secret] = None,
        on_retry: Callable[[], None] = lambda: None,
        transport: Optional[Union[httpx.AsyncBaseTransport, httpx.BaseTransport]] = None,
    ):
        self.options = options
        self.throttle_budget_s = THROTTLE_BUDGET_S
        self.replicas = Replicas(options.base_urls, cooldown_s=min(30.0, max(0.05, 10 * options.backoff_s)),
                                 concurrency=options.concurrency)
        self._key = key
        self._on_retry = on_retry
        # No cap on connections (the backend's thread pool already bounds requests in flight, and
        # a cap would add a pool wait that is not a server failure); keep enough idle ones alive
        # that every thread finds one on whichever replica it is sent to.
        limits = httpx.Limits(max_connections=None, max_keepalive_connections=max(1, options.concurrency) * len(options.base_urls))
        if transport is not None and not isinstance(transport, httpx.AsyncBaseTransport):
            transport = _BlockingTransport(transport)
        self._client = httpx.AsyncClient(
            transport=transport or httpx.AsyncHTTPTransport(limits=limits, retries=0),
            # Each phase inside the whole attempt's deadline (see _attempt), which is what bounds it.
            timeout=httpx.Timeout(options.timeout_s),
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
        self._tasks: set[asyncio.Task] = set()  # the loop's tasks that are requests; touched on the loop only

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.close()

    def __repr__(self) -> str:
        return f"Transport(base_urls={list(self.options.base_urls)!r})"

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
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            return await self._request(url_for, payload), None
        except Exception as e:  # noqa: BLE001 - re-raised in the caller's thread by request()
            return None, e
        finally:
            self._tasks.discard(task)

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
                delay = throttle_delay(self.throttle_budget_s, self.options.backoff_s, last, throttles, throttled_s)
                throttles += 1
                throttled_s += delay
            else:
                failures += 1
                if failures > self.options.retries:
                    break
                delay = backoff_delay(self.options.backoff_s, failures - 1, last.retry_after)
            self._on_retry()
            await asyncio.sleep(delay)
        attempts = failures + throttles
        servers = f"{len(self.options.base_urls)} servers" if len(self.options.base_urls) > 1 else "1 server"
        # What the caller should do next (resume from a checkpoint, or start again) is the CLI's to say.
        raise RetriesExhausted(f"{last.url}: {last.what} ({attempts} attempts over {servers})")

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
            response = await asyncio.wait_for(self._exchange(url, payload), self.options.timeout_s)
        except (asyncio.TimeoutError, httpx.TimeoutException):
            raise Transient(url, f"no response within {self.options.timeout_s:g} s") from None
        except httpx.RequestError as e:  # connect, read, write, protocol or decoding failures
            refused = _cause(e, ssl.SSLCertVerificationError)
            if refused is not None:  # the same certificate will not verify on the next attempt
                reason = refused.verify_message or refused.reason or str(refused)
                raise BackendError(f"{url}: TLS certificate verification failed ({self.clean(str(reason))})") from None
            raise Transient(url, self._describe(e)) from None
        status, data = response.status_code, response.content
        if status == 501:  # Not Implemented: this server lacks the endpoint or the feature
            raise Rejected(url, status, self.clean(error_text(data)) or "Not Implemented")
        if status in TRANSIENT_STATUS or status >= 500:
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
        # Only the requests' own tasks: a cancelled request ends its library's tasks (anyio's
        # connect attempts) itself. Cancelling one of those before its first step, as cancelling
        # every task in the loop would, leaves its coroutine never awaited, and Python's warning
        # about it lands on stderr at exit, after the run's one-line error.
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._client.aclose()
