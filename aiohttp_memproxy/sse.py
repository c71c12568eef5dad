"""Server-sent events on a web.StreamResponse: each chunk written as it arrives, errors after the headers
as a final frame, a client that leaves stops the upstream read."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from aiohttp_memproxy.errors import ProxyError

log = structlog.get_logger()

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


async def openai_stream(request: web.Request, chunks: AsyncIterator[str]) -> web.StreamResponse:
    """``data: {chunk}`` frames then ``data: [DONE]``; an error after the headers ends with an error frame."""
    try:
        # The first chunk before the headers: an upstream that fails at once gets a real status code.
        first = await anext(chunks)
    except StopAsyncIteration:
        first = None
    except BaseException:
        await chunks.aclose()  # type: ignore[attr-defined]  # an async generator
        raise
    response = web.StreamResponse(headers=SSE_HEADERS)
    try:
        await response.prepare(request)
        if first is not None:
            await response.write(b"data: " + first.encode() + b"\n\n")
        async for data in chunks:
            await response.write(b"data: " + data.encode() + b"\n\n")
        await response.write(DONE)
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
            await response.write(b"data: " + json.dumps(exc.openai_body()).encode() + b"\n\n")
            await response.write_eof()
        except ConnectionResetError:
            log.info("client_disconnected")
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]  # an async generator
    return response
