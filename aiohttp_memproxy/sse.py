"""Server-sent events on a web.StreamResponse: each chunk written as it arrives, errors after the headers
as a final frame in the client's dialect, a client that leaves stops the upstream read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable

import structlog
from aiohttp import web

from aiohttp_memproxy.errors import ProxyError

log = structlog.get_logger()

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def openai_error_frame(error: ProxyError) -> bytes:
    return b"data: " + json.dumps(error.openai_body()).encode() + b"\n\n"


def anthropic_error_frame(error: ProxyError) -> bytes:
    return b"event: error\ndata: " + json.dumps(error.anthropic_body()).encode() + b"\n\n"


async def openai_stream(request: web.Request, chunks: AsyncGenerator[str, None]) -> web.StreamResponse:
    """``data: {chunk}`` frames then ``data: [DONE]``; an error after the headers ends with an error frame."""

    async def frames() -> AsyncIterator[bytes]:
        async for data in chunks:
            yield b"data: " + data.encode() + b"\n\n"

    return await relay(request, frames(), chunks, openai_error_frame, DONE)


async def anthropic_stream(request: web.Request, events: AsyncGenerator[bytes, None]) -> web.StreamResponse:
    """The upstream's Anthropic events as they are, byte for byte; an error ends with ``event: error``."""
    return await relay(request, events, events, anthropic_error_frame, b"")


async def relay(
    request: web.Request,
    frames: AsyncIterator[bytes],
    source: AsyncGenerator[object, None],
    error_frame: Callable[[ProxyError], bytes],
    trailer: bytes,
) -> web.StreamResponse:
    try:
        # The first frame before the headers: an upstream that fails at once gets a real status code.
        first: bytes | None = await anext(frames)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await source.aclose()
        raise
    response = web.StreamResponse(headers=SSE_HEADERS)
    try:
        await response.prepare(request)
        if first is not None:
            await response.write(first)
        async for frame in frames:
            await response.write(frame)
        if trailer:
            await response.write(trailer)
        await response.write_eof()
    except ConnectionResetError:
        log.info("client_disconnected")
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the client goes away mid-response.
        log.info("client_disconnected")
        raise
    except ProxyError as exc:
        structlog.contextvars.bind_contextvars(error_code=exc.code, stream_error=True)
        log.warning("stream_error", code=exc.code, status=exc.status)
        try:
            await response.write(error_frame(exc))
            await response.write_eof()
        except ConnectionResetError:
            log.info("client_disconnected")
    finally:
        await source.aclose()
    return response
