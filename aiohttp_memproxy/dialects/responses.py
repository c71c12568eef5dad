"""OpenAI's Responses API: its stream's events, its usage, and its error event (its errors' body is
OpenAI's: ``openai_chat.error_body``)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp_memproxy.dialects import openai_chat
from aiohttp_memproxy.usage.tokens import Tokens, count, dig

if TYPE_CHECKING:
    from aiohttp_memproxy.errors import GatewayError


def event(data: dict[str, Any]) -> bytes:
    """One Responses API event as OpenAI sends it: its type as the SSE event name, the JSON as data."""
    return f"event: {data['type']}\ndata: {json.dumps(data)}\n\n".encode()


def object_events(response: dict[str, Any]) -> list[bytes]:
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
    return [event({**each, "sequence_number": number}) for number, each in enumerate(events)]


def error_frame(error: GatewayError) -> bytes:
    """The Responses API's ``error`` event (code, message, param), which ends a stream that failed."""
    body = openai_chat.error_body(error)["error"]
    return event({"type": "error", "code": body["code"], "message": body["message"], "param": body["param"]})


def usage(reported: Any) -> Tokens:
    """The Responses API's ``usage``."""
    if not isinstance(reported, Mapping):
        return Tokens()
    return Tokens(
        input=count(reported.get("input_tokens")),
        output=count(reported.get("output_tokens")),
        cache_read=count(dig(reported, "input_tokens_details", "cached_tokens")),
        reasoning=count(dig(reported, "output_tokens_details", "reasoning_tokens")),
    )
