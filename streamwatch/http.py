"""The daemon's HTTP edge: ``/metrics``, ``/healthz`` and ``/readyz``.

- ``/healthz`` (liveness): 200 while the run loop has turned within ``stale_after`` seconds.
  It never asks whether the broker is reachable: restarting a pod does not fix a broker, and
  a loop waiting on a broker still turns.
- ``/readyz`` (readiness): 200 once the model is loaded, partitions are assigned, the state is
  ready and the broker answers; the body says which is missing otherwise.

The server is one asyncio loop in one daemon thread ("streamwatch-http"), built so that no
client can take the probes down with it:

- at most ``MAX_CONNECTIONS`` stay open (for a moment, one accept burst of up to ``BACKLOG``
  more): one more closes the oldest that has not yet sent a whole request, so held connections
  cannot use up the process's descriptors, and a probe gets through while hundreds are held;
- the request head (at most ``MAX_HEAD_BYTES``) must arrive within ``HEAD_TIMEOUT`` seconds
  and the response be taken within ``WRITE_TIMEOUT``; one request per connection
  (``Connection: close``);
- out of descriptors all the same (other parts of the process hold them), asyncio stops
  accepting for a second instead of spinning, and the server closes its idle connections;
- client failures (resets, timeouts, early closes) are logged at DEBUG on the ``streamwatch``
  logger, anything else once at ERROR there; the server goes on serving.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import errno
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger("streamwatch")

MAX_CONNECTIONS = 64  # a few scrapers and probes need a handful; far below `ulimit -n` 1024
BACKLOG = 128  # listen queue; asyncio also accepts up to this many per loop turn
HEAD_TIMEOUT = 5.0  # seconds for the request line and headers to arrive
WRITE_TIMEOUT = 10.0  # seconds for the client to take the response
LINGER_TIMEOUT = 1.0  # seconds to wait for the client's close once it has the response
MAX_HEAD_BYTES = 8192
_MAX_LINGER_BYTES = 65536
# Out of descriptors, idle connections are closed at once and again _SHED_AGAIN_AFTER seconds
# later (asyncio accepts again after 1 s), sparing those younger than _SHED_MIN_AGE seconds:
# their request, a probe's say, is probably on its way.
_SHED_MIN_AGE = 0.1
_SHED_AGAIN_AFTER = 0.5
_WARN_EVERY = 60.0  # seconds between two "out of descriptors" warnings
_OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
# asyncio.TimeoutError is TimeoutError (an OSError) from 3.11 on, a class of its own before.
_CLIENT_ERRORS = (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError)
_REQUEST_LINE = re.compile(rb"([A-Za-z]+) ([\x21-\x7e]+) HTTP/1\.[0-9]")


@dataclass
class Health:
    """Written by the run loop, read by the HTTP thread (single assignments: no lock needed)."""

    stale_after: float = 60.0
    clock: Callable[[], float] = time.monotonic
    last_loop: float | None = None
    model_loaded: bool = False
    partitions_assigned: bool = False
    state_ready: bool = False
    state_detail: str = ""  # what the state waits for (a restore and its progress)
    broker_reachable: bool = True

    def beat(self) -> None:
        self.last_loop = self.clock()

    def live(self) -> tuple[bool, str]:
        if self.last_loop is None:
            return True, "starting"  # not yet looping is not dead: readiness covers it
        age = self.clock() - self.last_loop
        ok = age <= self.stale_after
        return ok, f"loop ran {age:.1f}s ago" + ("" if ok else f" (> {self.stale_after:g}s)")

    def ready(self) -> tuple[bool, str]:
        missing = [
            name
            for name, ok in (
                ("model", self.model_loaded),
                ("partitions", self.partitions_assigned),
                ("state", self.state_ready),
                ("broker", self.broker_reachable),
            )
            if not ok
        ]
        if not missing:
            return True, "ready"
        detail = f" ({self.state_detail})" if "state" in missing and self.state_detail else ""
        return False, "waiting for " + ", ".join(missing) + detail


class _BadHead(Exception):
    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


@dataclass(eq=False)  # identity-hashed: a key of MetricsServer._conns
class _Conn:
    transport: asyncio.WriteTransport
    since: float
    has_request: bool = False


class MetricsServer:
    """What ``serve`` returns: ``server_address``, ``shutdown()`` and ``server_close()`` as on
    a ``socketserver`` server."""

    def __init__(
        self,
        registry: CollectorRegistry,
        health: Health,
        *,
        head_timeout: float,
        write_timeout: float,
        max_connections: int,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.server_address: tuple[Any, ...] = ()
        self._registry = registry
        self._health = health
        self._head_timeout = head_timeout
        self._write_timeout = write_timeout
        self._max_connections = max_connections
        self._conns: dict[_Conn, None] = {}  # oldest first
        self._closing = False
        self._warned_at = -_WARN_EVERY
        self._shed_again: asyncio.TimerHandle | None = None
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(self._on_loop_error)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def connections(self) -> int:
        """Connections open now (read from another thread: a snapshot)."""
        return len(self._conns)

    def start(self, host: str, port: int) -> None:
        started: concurrent.futures.Future[tuple[Any, ...]] = concurrent.futures.Future()
        thread = threading.Thread(
            target=self._run, args=(host, port, started), name="streamwatch-http", daemon=True
        )
        thread.start()
        self.server_address = started.result()  # raises what binding raised, in the caller
        self._thread = thread

    def shutdown(self) -> None:
        """Stop serving and close every connection; a second call does nothing."""
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: its thread has ended
            self._loop.call_soon_threadsafe(self._loop.stop)
        thread.join(timeout=10.0)
        if thread.is_alive():
            log.warning("metrics server: its thread did not stop within 10s")

    def server_close(self) -> None:
        self.shutdown()

    # -- the loop's thread ---------------------------------------------------------------------

    def _run(
        self, host: str, port: int, started: concurrent.futures.Future[tuple[Any, ...]]
    ) -> None:
        loop = self._loop
        try:
            server = loop.run_until_complete(
                asyncio.start_server(
                    self._handle, host, port, backlog=BACKLOG, limit=MAX_HEAD_BYTES
                )
            )
        except BaseException as exc:
            started.set_exception(exc)
            self._close_loop()
            return
        started.set_result(tuple(server.sockets[0].getsockname()))
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._close(server))
            self._close_loop()

    def _close_loop(self) -> None:
        self._loop.run_until_complete(self._loop.shutdown_default_executor())
        self._loop.close()

    async def _close(self, server: asyncio.AbstractServer) -> None:
        self._closing = True
        server.close()
        me = asyncio.current_task()
        # Connections accepted just before the close still get their handler: abort those too
        # until no task is left, rather than cancel asyncio's own tasks (leaking their sockets).
        for _ in range(50):
            for conn in self._conns:
                conn.transport.abort()
            pending = asyncio.all_tasks() - {me}
            if not pending:
                break
            await asyncio.wait(pending, timeout=0.1)
        await asyncio.sleep(0)  # aborted transports close their sockets on the next turn

    def _on_loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES:
            # asyncio has already stopped accepting for a second (Linux keeps the listening
            # socket readable, so retrying at once would spin); free what idle clients hold,
            # including those accepted in the burst that ran out, once they had their chance.
            self._shed()
            if self._shed_again is None:
                self._shed_again = loop.call_later(_SHED_AGAIN_AFTER, self._shed)
            if loop.time() - self._warned_at >= _WARN_EVERY:
                self._warned_at = loop.time()
                log.warning(
                    "metrics server: cannot accept (%s): closing idle connections, "
                    "accepting again in 1s (said at most every %gs)",
                    exc.strerror,
                    _WARN_EVERY,
                )
        elif self._closing:
            log.debug("metrics server, closing: %s (%r)", context.get("message"), exc)
        else:
            log.error("metrics server: %s", context.get("message"), exc_info=exc)

    def _shed(self) -> None:
        self._shed_again = None
        cutoff = self._loop.time() - _SHED_MIN_AGE
        idle = [c for c in self._conns if not c.has_request and c.since <= cutoff]
        for conn in idle:
            del self._conns[conn]
            conn.transport.abort()
        if idle:
            log.debug("metrics server: out of descriptors, closed %d idle connections", len(idle))

    def _evict(self) -> None:
        # The oldest still waiting for its request: a held connection, not a probe underway.
        victim = next((c for c in self._conns if not c.has_request), None)
        if victim is None:
            victim = next(iter(self._conns))
        del self._conns[victim]
        victim.transport.abort()
        log.debug("metrics server: at %d connections, closed the oldest", self._max_connections)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        transport = writer.transport
        if self._closing:
            transport.abort()
            return
        while len(self._conns) >= self._max_connections:
            self._evict()
        conn = _Conn(transport, self._loop.time())
        self._conns[conn] = None
        try:
            await self._exchange(reader, writer, conn)
        except _CLIENT_ERRORS as exc:
            log.debug("metrics client %s: %r", transport.get_extra_info("peername"), exc)
        except Exception:
            log.exception("metrics server: unexpected error; connection closed")
        finally:
            self._conns.pop(conn, None)
            transport.abort()  # does nothing after a clean close

    async def _exchange(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Conn
    ) -> None:
        method = "GET"
        try:
            head = await asyncio.wait_for(_read_head(reader), self._head_timeout)
            if head is None:
                return  # connected and left without a request: a TCP probe, say
            conn.has_request = True
            method, target = _request_line(head)
            status, content_type, body = self._route(method, target)
        except _BadHead as exc:
            conn.has_request = True
            status, content_type = exc.status, "text/plain; charset=utf-8"
            body = f"{exc.status.value} {exc.status.phrase}\n".encode()
        writer.write(_response(status, content_type, body, head_only=method == "HEAD"))
        await asyncio.wait_for(writer.drain(), self._write_timeout)
        # Closing with unread input (a body we ignored) would reset the connection, and a
        # reset can destroy the response before the client reads it: half-close and wait for
        # the client's close instead.
        writer.write_eof()
        await asyncio.wait_for(_discard(reader, _MAX_LINGER_BYTES), LINGER_TIMEOUT)
        writer.close()

    def _route(self, method: str, target: str) -> tuple[HTTPStatus, str, bytes]:
        if method not in ("GET", "HEAD"):
            raise _BadHead(HTTPStatus.METHOD_NOT_ALLOWED)
        path = target.split("?", 1)[0]
        try:
            if path == "/metrics":  # on the loop: milliseconds, and no thread per scrape
                return HTTPStatus.OK, CONTENT_TYPE_LATEST, generate_latest(self._registry)
            if path in ("/healthz", "/readyz"):
                ok, why = self._health.live() if path == "/healthz" else self._health.ready()
                body = json.dumps({"ok": ok, "status": why}).encode()
                status = HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE
                return status, "application/json", body
        except Exception:
            log.exception("metrics server: %s %s failed", method, path)
            return HTTPStatus.INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", b"error\n"
        body = b"not found: try /metrics, /healthz or /readyz\n"
        return HTTPStatus.NOT_FOUND, "text/plain; charset=utf-8", body


def serve(
    host: str,
    port: int,
    registry: CollectorRegistry,
    health: Health,
    *,
    head_timeout: float = HEAD_TIMEOUT,
    write_timeout: float = WRITE_TIMEOUT,
    max_connections: int = MAX_CONNECTIONS,
) -> MetricsServer:
    """Start serving in a daemon thread (port 0: any free port); ``shutdown()`` stops it."""
    server = MetricsServer(
        registry,
        health,
        head_timeout=head_timeout,
        write_timeout=write_timeout,
        max_connections=max_connections,
    )
    server.start(host, port)
    return server


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The request line and headers; None if the client closes before sending a byte."""
    buf = b""
    while True:
        chunk = await reader.read(MAX_HEAD_BYTES)
        if not chunk:
            if buf:
                raise asyncio.IncompleteReadError(buf, None)
            return None
        buf += chunk
        ends = [i for i in (buf.find(b"\r\n\r\n"), buf.find(b"\n\n")) if i >= 0]
        if ends:
            if min(ends) > MAX_HEAD_BYTES:
                raise _BadHead(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
            return buf[: min(ends)]
        if len(buf) > MAX_HEAD_BYTES:
            raise _BadHead(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)


def _request_line(head: bytes) -> tuple[str, str]:
    match = _REQUEST_LINE.fullmatch(head.split(b"\n", 1)[0].rstrip(b"\r"))
    if match is None:
        raise _BadHead(HTTPStatus.BAD_REQUEST)
    return match[1].decode("ascii"), match[2].decode("ascii")


def _response(status: HTTPStatus, content_type: str, body: bytes, *, head_only: bool) -> bytes:
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        "Connection: close",
    ]
    if status == HTTPStatus.METHOD_NOT_ALLOWED:
        lines.append("Allow: GET, HEAD")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)


async def _discard(reader: asyncio.StreamReader, limit: int) -> None:
    while limit > 0:
        chunk = await reader.read(limit)
        if not chunk:
            return
        limit -= len(chunk)
