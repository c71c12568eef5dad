"""Anthropic's Messages API: its stream's events, its usage (read from a stream as it passes), its error
shape."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp_memproxy.usage.tokens import Tokens, count, dig

if TYPE_CHECKING:
    from aiohttp_memproxy.errors import GatewayError

# Anthropic's own table (https://docs.anthropic.com/en/api/errors); other statuses fall back to api_error.
ANTHROPIC_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    500: "api_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
    529: "overloaded_error",
}


def error_body(error: GatewayError) -> dict[str, Any]:
    return {
        "type": "error",
        "error": {"type": ANTHROPIC_TYPES.get(error.status, "api_error"), "message": error.message},
    }


def error_frame(error: GatewayError) -> bytes:
    return event("error", {"error": error_body(error)["error"]})


def event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


def message_events(message: dict[str, Any]) -> list[bytes]:
    """The event sequence of a whole Messages answer: for a stream request answered at once (LiteLLM's
    ``mock_response`` does that), so the client still gets the protocol it asked for."""
    usage = dict(message.get("usage") or {})
    start = {**message, "content": [], "stop_reason": None, "stop_sequence": None, "usage": usage}
    events = [event("message_start", {"message": start})]
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
        events.append(event("content_block_start", {"index": index, "content_block": empty}))
        events += [event("content_block_delta", {"index": index, "delta": d}) for d in deltas]
        events.append(event("content_block_stop", {"index": index}))
    stop = {"stop_reason": message.get("stop_reason"), "stop_sequence": message.get("stop_sequence")}
    events.append(
        event("message_delta", {"delta": stop, "usage": {"output_tokens": usage.get("output_tokens", 0)}})
    )
    events.append(event("message_stop", {}))
    return events


def usage(reported: Any) -> Tokens:
    """The Messages API's ``usage`` (of a message, or of ``message_start``/``message_delta``). Its
    ``input_tokens`` leaves the cached ones out; here, as in OpenAI's usage (and as LiteLLM's cost
    calculation expects), input counts them, cache read and write being parts of it."""
    if not isinstance(reported, Mapping):
        return Tokens()
    uncached = count(reported.get("input_tokens"))
    cache_read = count(reported.get("cache_read_input_tokens"))
    cache_write = count(reported.get("cache_creation_input_tokens"))
    return Tokens(
        input=None if uncached is None else uncached + (cache_read or 0) + (cache_write or 0),
        output=count(reported.get("output_tokens")),
        cache_read=cache_read,
        cache_write=cache_write,
    )


class StreamUsage:
    """Reads the usage of an Anthropic SSE stream while its bytes are relayed unchanged: ``message_start``
    carries the input (and cache) tokens, each ``message_delta`` the output so far. Frames may be split
    anywhere; only the end of the last line is kept, bounded.

    Only the data lines of those two events are looked at, found by their quoted type (a string inside an
    answer's text has its quotes escaped, so it never matches): a stream's other lines, its text, are not
    read one by one. They are kept as they are (a few, bounded) and read when ``read`` is called: the
    ledger calls it when it makes the row, in its batch, not on the stream's path.
    """

    MAX_LINE = 64 * 1024  # a usage event's data line is small; anything longer is not one
    MAX_KEPT = 16  # usage lines kept unread; more (a stream of many message_delta) are read as they come
    MARKERS = (b'"message_start"', b'"message_delta"')

    def __init__(self) -> None:
        self._tokens = Tokens()
        self._partial = b""
        self._kept: list[bytes] = []

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk if self._partial else chunk
        end = data.rfind(b"\n") + 1  # the complete lines: data[:end]
        self._partial = data[end:] if len(data) - end <= self.MAX_LINE else b""
        for marker in self.MARKERS:
            at = data.find(marker, 0, end)
            while at != -1:
                start = data.rfind(b"\n", 0, at) + 1
                stop = data.find(b"\n", at, end)  # found: data[end - 1] is a line break
                line = data[start:stop].rstrip(b"\r")
                if line.startswith(b"data:"):
                    self._kept.append(line[5:])
                at = data.find(marker, stop, end)
        if len(self._kept) > self.MAX_KEPT:
            self.read()

    def read(self) -> Tokens:
        """The usage so far: the kept lines read, in the order they came (in one read, a message_start's
        before a message_delta's, as a stream sends them)."""
        kept, self._kept = self._kept, []
        for payload in kept:
            self._read(payload)
        return self._tokens

    def _read(self, payload: bytes) -> None:
        try:
            event = json.loads(payload)
        except ValueError:
            return
        if not isinstance(event, dict):
            return
        kind = event.get("type")
        if kind == "message_start":
            self._tokens.merge(usage(dig(event, "message", "usage")))
        elif kind == "message_delta":
            self._tokens.merge(usage(event.get("usage")))
