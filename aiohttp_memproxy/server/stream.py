"""The stream writer: an answer written to the client as it arrives, in one disconnect-safe loop.

``relay`` serves the model routes' server-sent events: the first frame is awaited before the headers go out
(an upstream that fails at once gets a real status code), and a failure after the headers ends the stream
with the dialect's error frame. ``pump`` is the loop itself, which forward mode uses for raw bytes. A client
that leaves stops the upstream read; the source is closed however the loop ends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable

import structlog
from aiohttp import web

from aiohttp_memproxy.errors import GatewayError
from aiohttp_memproxy.keys import METRICS, OUTCOME, REQUEST_STARTED

log = structlog.get_logger()

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


async def relay(
    request: web.Request,
    frames: AsyncGenerator[bytes, None],
    error_frame: Callable[[GatewayError], bytes],
    trailer: bytes = b"",
) -> web.StreamResponse:
    """``frames`` as server-sent events, then ``trailer``; an error after the headers ends with
    ``error_frame`` of it."""
    try:
        first: bytes | None = await anext(frames)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await frames.aclose()
        raise
    metrics = request.app[METRICS]

    def first_written() -> None:
        first_byte_s = time.perf_counter() - request[REQUEST_STARTED]
        metrics.first_byte.labels(request.match_info.route.resource.canonical).observe(first_byte_s)  # type: ignore[union-attr]
        request[OUTCOME].first_byte_s = first_byte_s

    response = web.StreamResponse(headers=SSE_HEADERS)
    metrics.streams.inc()
    try:
        await pump(request, response, frames, error_frame, trailer, first=first, first_written=first_written)
    finally:
        metrics.streams.dec()
    return response


async def pump(
    request: web.Request,
    response: web.StreamResponse,
    chunks: AsyncGenerator[bytes, None],
    error_frame: Callable[[GatewayError], bytes] | None,
    trailer: bytes = b"",
    first: bytes | None = None,
    first_written: Callable[[], None] | None = None,
) -> None:
    """The response's headers, ``first`` (a chunk read before them), each chunk as it comes, ``trailer``,
    the end of the body. A GatewayError from ``chunks`` ends the body with ``error_frame`` of it; without one
    (raw bytes) the body ends cut short, as the upstream cut it. A client that left ends the loop quietly.
    ``chunks`` is closed however it ends."""
    try:
        await response.prepare(request)
        if first is not None:
            await response.write(first)
        if first_written is not None:
            first_written()
        async for chunk in chunks:
            await response.write(chunk)
        if trailer:
            await response.write(trailer)
        await response.write_eof()
    except ConnectionResetError:
        log.info("client_disconnected")
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client goes away mid-response.
        log.info("client_disconnected")
        raise
    except GatewayError as exc:
        if error_frame is None:  # raw bytes: the body ends where the upstream's did
            log.warning("upstream_broke_off")
            _cut_short(request)
            return
        structlog.contextvars.bind_contextvars(error_code=exc.code, stream_error=True)
        log.warning("stream_error", code=exc.code, status=exc.status)
        try:
            await response.write(error_frame(exc))
            await response.write_eof()
        except ConnectionResetError:
            log.info("client_disconnected")
    finally:
        await chunks.aclose()


def _cut_short(request: web.Request) -> None:
    """The connection closed before the body's end: the client sees a truncated body, as the upstream sent
    it, never a complete one (aiohttp would end the body after the handler returns)."""
    if request.transport is not None:
        request.transport.close()
