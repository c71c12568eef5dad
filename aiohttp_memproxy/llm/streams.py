"""LiteLLM's streams as the client's dialect gets them: each item as it arrives, the call in progress set
around each step (a Router may still fall back there), a failure mid-stream as our GatewayError, the usage
read on the way, the stream closed however it ends."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import structlog

from aiohttp_memproxy import errors
from aiohttp_memproxy.dialects import anthropic, gemini, openai_chat, responses
from aiohttp_memproxy.llm.errors import UPSTREAM_ERRORS, to_gateway_error, untranslatable_stream
from aiohttp_memproxy.llm.upstream_message import secrets_of
from aiohttp_memproxy.outbound.call import CALL, Call
from aiohttp_memproxy.usage.outcome import read_later


def answered(call: Call) -> None:
    """The log line (for log lines only) and the outcome name the deployment that answered, and whether a
    fallback happened; its model is what the usage is priced as."""
    answering = call.deployment
    if answering is None:
        return
    outcome = call.outcome
    outcome.deployment = answering.where
    outcome.fallback = call.fallback
    outcome.litellm_model = call.litellm_model or answering.litellm_model
    outcome.provider = answering.provider
    structlog.contextvars.bind_contextvars(deployment=outcome.deployment, fallback=outcome.fallback)


async def items(stream: Any, call: Call) -> AsyncGenerator[Any, None]:
    """The items of a LiteLLM stream as they arrive; a failure mid-stream becomes GatewayError (the
    upstream's, or the gateway's translation); the stream is closed however it ends, its connection given
    back."""
    attributed = call.deployment
    try:
        iterator: AsyncIterator[Any] = aiter(stream)
        while True:
            token = CALL.set(call)
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                return
            finally:
                CALL.reset(token)
            if call.deployment is not attributed:  # a fallback changed who answers
                attributed = call.deployment
                answered(call)
            yield item
            call.relayed = True
    except UPSTREAM_ERRORS as exc:
        secrets = secrets_of([call.group, *call.tried]) | call.secrets
        raise to_gateway_error(exc, call.group.name, secrets=secrets) from exc
    except errors.GatewayError:
        raise
    except Exception as exc:
        raise untranslatable_stream(exc, call.group.name) from exc
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            token = CALL.set(call)
            try:
                await close()
            finally:
                CALL.reset(token)


async def chat_chunks(stream: Any, call: Call, hide_usage: bool) -> AsyncGenerator[str, None]:
    """Each chunk of a LiteLLM chat stream as OpenAI JSON. Its usage goes to the outcome; with
    ``hide_usage`` (the gateway asked for it, the client did not) the usage chunk is not relayed, nor a usage
    field on any other."""
    outcome = call.outcome
    metered = outcome.metered
    async with contextlib.aclosing(items(stream, call)) as chunks:
        async for chunk in chunks:
            found = getattr(chunk, "usage", None)
            if found is not None and metered:
                outcome.tokens.merge(openai_chat.usage(found.model_dump()))
            if not hide_usage:
                yield chunk.model_dump_json(exclude_none=True, warnings=False)
            elif found is None or any(map(_substantive, chunk.choices)):
                yield chunk.model_dump_json(exclude_none=True, exclude={"usage"}, warnings=False)
    if not metered or outcome.tokens.known:
        return
    if call.stream_usage is not None and call.stream_usage.known:
        outcome.tokens.merge(call.stream_usage)  # the usage chunk the transport took out
        return
    for chunk in reversed(_kept_chunks(stream)):  # the usage-only chunk LiteLLM kept to itself
        found = getattr(chunk, "usage", None)
        if found is not None:
            outcome.tokens.merge(openai_chat.usage(found.model_dump()))
            return


async def messages_events(answer: Any, call: Call) -> AsyncGenerator[bytes, None]:
    """The SSE bytes of a Messages stream as they arrive.

    From an Anthropic upstream every event passes as is, its own ``event: error`` included. LiteLLM's
    translation reports a failure as an ``event: error`` of its own whose text is LiteLLM's: that one
    becomes our error.
    """
    outcome = call.outcome
    if isinstance(answer, dict):  # answered whole (mock_response): the client still gets events
        if outcome.metered:
            outcome.tokens = anthropic.usage(answer.get("usage"))
        for frame in anthropic.message_events(answer):
            yield frame
        return
    reader = anthropic.StreamUsage() if outcome.metered else None
    if reader is not None:
        outcome.later = reader.read  # what the stream said of its usage, read when the row is made
    translated = call.answering.provider != "anthropic"
    async with contextlib.aclosing(items(answer, call)) as events:
        async for data in events:
            frame = data if isinstance(data, bytes) else str(data).encode()
            if reader is not None:
                reader.feed(frame)
            if translated and frame.startswith(b"event: error"):
                raise errors.UpstreamUnreachable(
                    f"model {call.group.name!r}: the upstream could not be reached or broke off"
                )
            yield frame


async def responses_events(answer: Any, call: Call) -> AsyncGenerator[bytes, None]:
    """Each event of a Responses stream as SSE, as it arrives. The usage of ``response.completed`` goes to
    the outcome."""
    outcome = call.outcome
    if not hasattr(answer, "__aiter__"):  # answered whole (mock_response): the client still gets events
        whole = answer.model_dump(mode="json", exclude_none=True, warnings=False)
        if outcome.metered:
            outcome.tokens = responses.usage(whole.get("usage"))
        for frame in responses.object_events(whole):
            yield frame
        return
    async with contextlib.aclosing(items(answer, call)) as events:
        async for event in events:
            # LiteLLM's event models hold plain dicts where their fields name a model: pydantic would warn
            # (to stderr, quoting the answer) on every one, for a dump that is right.
            data = event.model_dump(mode="json", exclude_none=True, warnings=False)
            if outcome.metered and data.get("type") == "response.completed":
                outcome.later = read_later(responses.usage, (data.get("response") or {}).get("usage"))
            yield responses.event(data)


async def gemini_frames(answer: Any, call: Call) -> AsyncGenerator[bytes, None]:
    """A Gemini stream's SSE frames as they arrive: the upstream's own (gemini/, vertex_ai/), or LiteLLM's
    translation of the chat completions stream of another provider (its SSE generator, which lets a failure
    through, unlike its wrapper's own iteration)."""
    outcome = call.outcome
    if isinstance(answer, dict):  # answered whole (mock_response): one frame
        if outcome.metered:
            outcome.tokens = gemini.usage(answer.get("usageMetadata"))
        yield gemini.frame(answer)
        return
    reader = gemini.StreamUsage() if outcome.metered else None
    if reader is not None:
        outcome.later = reader.read
    async with contextlib.aclosing(items(answer, call)) as frames:
        async for data in frames:
            frame = data if isinstance(data, bytes) else str(data).encode()
            if reader is not None:
                reader.feed(frame)
            yield frame


def _kept_chunks(stream: Any) -> list[Any]:
    """The chunks LiteLLM's stream wrapper kept (its own, or, behind the Router's, the wrapped one's)."""
    for holder in (stream, getattr(stream, "model_response", None)):
        chunks = getattr(holder, "chunks", None)
        if isinstance(chunks, list) and chunks:
            return chunks
    return []


def _substantive(choice: Any) -> bool:
    """A stream choice that says something: text, a tool call, a role, a finish reason (LiteLLM's final usage
    chunk has one choice with an empty delta)."""
    delta = getattr(choice, "delta", None)
    said = any(
        getattr(delta, name, None)
        for name in ("content", "tool_calls", "function_call", "role", "reasoning_content")
    )
    return said or getattr(choice, "finish_reason", None) is not None
