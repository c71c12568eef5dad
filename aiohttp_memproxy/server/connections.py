"""Inbound connections, bounded in time and in number, so that idle or half-sent ones cannot starve the rest.

Time is aiohttp's: ``keepalive_timeout`` (``memproxy.idle_timeout_s``) closes a connection that runs no
request that long after it opened or after its last response, whatever it has sent since (aiohttp 3.14 arms
the timer at ``connection_made``, and received bytes do not re-arm it), so one that sends half a request line,
or nothing, is closed then.

Number is this module's: at most ``cap`` connections are open. At the cap the one idle the longest (no
request running and nothing received since: nothing sent yet, half a request, or kept alive; no answer still
being written) is closed to make room, as nginx reuses its idle keep-alive connections when short of them;
when every one runs a request, the new one gets a 503 and is closed. The cap stays below the process's file
limit (``effective_cap``), so ``accept`` never fails for want of a descriptor, which would leave asyncio
logging an error per attempt and ``/health`` unanswered.
"""

from __future__ import annotations

import asyncio
import math
import resource
import time
from collections import OrderedDict
from collections.abc import Callable

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from aiohttp_memproxy.usage.metrics import Metrics

log = structlog.get_logger()

# The listening socket's backlog. asyncio accepts up to this many connections per readiness event, before
# any of them reaches the guard, and a connection shed to make room closes its descriptor a loop turn later:
# two batches may be open above the cap at once.
BACKLOG = 128
# Descriptors kept for what is not an inbound connection (the process's own files, the listening socket, the
# ledger and the cookie jar) and for those batches; the upstream pool comes on top (pool_limit).
RESERVED_FDS = 64 + 2 * BACKLOG
MIN_CAP = 16
# Asked for at start where the hard limit allows (systemd and macOS start services with a soft 1024 or 256).
WANTED_FILE_LIMIT = 8192
WARN_EVERY_S = 10.0
BUSY_ANSWER = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def raise_file_limit(wanted: int = WANTED_FILE_LIMIT) -> float:
    """The soft limit on open files, raised towards ``wanted`` as far as the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):  # a platform that refuses (macOS above OPEN_MAX): keep what we have
            pass
    return math.inf if soft == resource.RLIM_INFINITY else soft


def effective_cap(configured: int, pool_limit: int, file_limit: float) -> int:
    """``memproxy.max_connections``, lowered to what the file limit leaves after the upstream pool."""
    room = file_limit - pool_limit - RESERVED_FDS
    return max(MIN_CAP, min(configured, int(room) if room != math.inf else configured))


class Connection(asyncio.Protocol):
    """aiohttp's protocol for one connection, wrapped: the guard sees it open, run requests and close."""

    def __init__(self, inner: asyncio.Protocol, guard: ConnectionGuard) -> None:
        self.inner = inner
        self.guard = guard
        self.transport: asyncio.BaseTransport | None = None
        self.started = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        if self.guard.admit(self):
            self.started = True
            self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.started:
            self.guard.touched(self)
            self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self.inner.eof_received() if self.started else None

    def connection_lost(self, exc: Exception | None) -> None:
        self.guard.closed(self)
        if self.started:
            self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def sheddable(self) -> bool:
        """Nothing of an answer still waits to be written."""
        transport = self.transport
        return not isinstance(transport, asyncio.WriteTransport) or transport.get_write_buffer_size() == 0

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()  # type: ignore[attr-defined]  # a socket transport's: frees the fd now


class ConnectionGuard:
    """The open connections, the idle ones in the order they became idle (the oldest is shed first)."""

    def __init__(self, cap: int, metrics: Metrics) -> None:
        self.cap = cap
        self._metrics = metrics
        self._open: set[Connection] = set()
        self._idle: OrderedDict[Connection, None] = OrderedDict()
        self._warned_at = -math.inf

    def protocol_factory(self, make: Callable[[], asyncio.Protocol]) -> Callable[[], Connection]:
        return lambda: Connection(make(), self)

    def admit(self, connection: Connection) -> bool:
        if len(self._open) >= self.cap:
            oldest = next((idle for idle in self._idle if idle.sheddable()), None)
            if oldest is not None:
                del self._idle[oldest]
                self._open.discard(oldest)
                oldest.abort()
                self._shed("idle")
            else:
                transport = connection.transport
                if isinstance(transport, asyncio.WriteTransport):
                    transport.write(BUSY_ANSWER)
                if transport is not None:
                    transport.close()
                self._shed("refused")
                return False
        self._open.add(connection)
        self._idle[connection] = None
        self._metrics.connections.set(len(self._open))
        return True

    def busy(self, connection: Connection) -> None:
        self._idle.pop(connection, None)

    def touched(self, connection: Connection) -> None:
        """Bytes came in: a request whose handler has not started yet is the last one shed, not the first."""
        if connection in self._idle:
            self._idle.move_to_end(connection)

    def idle(self, connection: Connection) -> None:
        if connection in self._open:
            self._idle[connection] = None
            self._idle.move_to_end(connection)

    def closed(self, connection: Connection) -> None:
        self._open.discard(connection)
        self._idle.pop(connection, None)
        self._metrics.connections.set(len(self._open))

    def _shed(self, how: str) -> None:
        self._metrics.connections_shed.labels(how).inc()
        now = time.monotonic()
        if now - self._warned_at >= WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "connection_limit_reached",
                cap=self.cap,
                shed=how,
                detail="at memproxy.max_connections (or the open-file limit): the longest-idle connection "
                "is closed to make room, a new one is refused when every one runs a request",
            )


@web.middleware
async def mark_busy(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A connection running a request is never the one shed to make room."""
    transport = request.transport
    connection = transport.get_protocol() if transport is not None else None
    if not isinstance(connection, Connection):  # not served through a GuardedSite (the tests' own server)
        return await handler(request)
    connection.guard.busy(connection)
    try:
        return await handler(request)
    finally:
        connection.guard.idle(connection)


class GuardedSite(web.TCPSite):
    """aiohttp's TCPSite, its connections made through a ConnectionGuard."""

    __slots__ = ("_guard",)

    def __init__(self, runner: web.BaseRunner, host: str, port: int, guard: ConnectionGuard) -> None:
        super().__init__(runner, host, port)
        self._guard = guard

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site with its runner
        server = self._runner.server
        assert server is not None  # runner.setup() ran
        self._server = await asyncio.get_running_loop().create_server(
            self._guard.protocol_factory(server), self._host, self._port, backlog=BACKLOG
        )
