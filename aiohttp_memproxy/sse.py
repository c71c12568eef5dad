"""Server-sent events on a web.StreamResponse: each chunk written as it arrives, errors after the headers
as a final frame in the client's dialect, a client that leaves stops the upstream read."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any

import structlog
from aiohttp import web

from aiohttp_memproxy.errors import ProxyError
from aiohttp_memproxy.keys import METRICS, REQUEST_STARTED, USAGE

log = structlog.get_logger()

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
DONE = b"data: [DONE]\n\n"


def anthropic_event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def anthropic_message_events(message: dict[str, Any]) -> list[bytes]:
    """The event sequence of a whole Messages answer: for a stream request answered at once (LiteLLM's
    ``mock_response`` does that), so the client still gets the protocol it asked for."""
    usage = dict(message.get("usage") or {})
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
    events = [anthropic_event("message_start", {"message": start})]
    for index, block in enumerate(message.get("content") or []):
        kind = block.get("type")
        empty: dict[str, Any]
        deltas: list[dict[str, Any]]
        if kind == "text":
            empty, deltas = (
                {"type": "text", "text": ""},
                [{"type": "text_delta", "text": block.get("text", "")}],
            )
        elif kind == "thinking":
            empty = {"type": "thinking", "thinking": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block.get("thinking", "")},
                {"type": "signature_delta", "signature": block.get("signature", "")},
            ]
        elif kind == "tool_use":
            empty = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block.get("input", {}))}]
        else:
            empty, deltas = block, []
        events.append(anthropic_event("content_block_start", {"index": index, "content_block": empty}))
        events += [anthropic_event("content_block_delta", {"index": index, "delta": d}) for d in deltas]
        events.append(anthropic_event("content_block_stop", {"index": index}))
    stop = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    events.append(
        anthropic_event(
            "message_delta", {"delta": stop, "usage": {"output_tokens": usage.get("output_tokens", 0)}}
        )
    )
    events.append(anthropic_event("message_stop", {}))
    return events


def openai_error_frame(error: ProxyError) -> bytes:
    return b"data: " + json.dumps(error.openai_body()).encode() + b"\n\n"


def responses_event(data: dict[str, Any]) -> bytes:
    """One Responses API event as OpenAI sends it: its type as the SSE event name, the JSON as data."""
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def response_object_events(response: dict[str, Any]) -> list[bytes]:
    """The event sequence of a whole Responses answer: for a stream request answered at once (LiteLLM's
    ``mock_response`` does that), so the client still gets the protocol it asked for."""
    events: list[dict[str, Any]] = [
        {"type": "response.created", "response": {**response, "status": "in_progress", "output": []}}
    ]
    for index, item in enumerate(response.get("output") or []):
        events.append(
            {"type": "response.output_item.added", "output_index": index, "item": {**item, "content": []}}
        )
        for part_index, part in enumerate(item.get("content") or []):
            where = {"item_id": item.get("id", ""), "output_index": index, "content_index": part_index}
            events.append({"type": "response.content_part.added", **where, "part": {**part, "text": ""}})
            if part.get("type") == "output_text":
                events.append({"type": "response.output_text.delta", **where, "delta": part.get("text", "")})
                events.append({"type": "response.output_text.done", **where, "text": part.get("text", "")})
            events.append({"type": "response.content_part.done", **where, "part": part})
        events.append({"type": "response.output_item.done", "output_index": index, "item": item})
    events.append({"type": "response.completed", "response": response})
    return [responses_event({**event, "sequence_number": number}) for number, event in enumerate(events)]


def responses_error_frame(error: ProxyError) -> bytes:
    """The Responses API's ``error`` event (code, message, param), which ends a stream that failed."""
    body = error.openai_body()["error"]
    return responses_event(
        {"type": "error", "code": body["code"], "message": body["message"], "param": body["param"]}
    )


def anthropic_error_frame(error: ProxyError) -> bytes:
    return anthropic_event("error", {"error": error.anthropic_body()["error"]})


async def openai_stream(request: web.Request, chunks: AsyncGenerator[str, None]) -> web.StreamResponse:
    """``data: {chunk}`` frames then ``data: [DONE]``; an error after the headers ends with an error frame."""

    async def frames() -> AsyncIterator[bytes]:
        async for data in chunks:
            yield b"data: " + data.encode() + b"\n\n"

    return await relay(request, frames(), chunks, openai_error_frame, DONE)


async def anthropic_stream(request: web.Request, events: AsyncGenerator[bytes, None]) -> web.StreamResponse:
    """The upstream's Anthropic events as they are, byte for byte; an error ends with ``event: error``."""
    return await relay(request, events, events, anthropic_error_frame, b"")


async def responses_stream(request: web.Request, events: AsyncGenerator[bytes, None]) -> web.StreamResponse:
    """Responses API events as they arrive (``event:``, ``data:``); an error ends with an ``error`` event."""
    return await relay(request, events, events, responses_error_frame, b"")


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
    metrics = request.app[METRICS]
    metrics.streams.inc()
    try:
        await response.prepare(request)
        if first is not None:
            await response.write(first)
        first_byte_s = time.perf_counter() - request[REQUEST_STARTED]
        metrics.first_byte.labels(request.match_info.route.resource.canonical).observe(first_byte_s)  # type: ignore[union-attr]
        record = request.get(USAGE)
        if record is not None:
            record.first_byte_s = first_byte_s
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
        metrics.streams.dec()
        await source.aclose()
    return response
