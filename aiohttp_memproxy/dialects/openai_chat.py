"""OpenAI's chat completions: ``data:`` frames ending in ``data: [DONE]``, its usage, its error shape, and the
tap that takes a usage-only chunk out of an upstream's stream bytes."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Mapping
from typing import TYPE_CHECKING, Any

from aiohttp_memproxy.usage.tokens import Tokens, count, dig

if TYPE_CHECKING:
    from aiohttp_memproxy.errors import GatewayError

DONE = b"data: [DONE]\n\n"

# OpenAI's `type` values as its API and the LiteLLM proxy return them.
OPENAI_TYPES: Mapping[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(error: GatewayError) -> dict[str, Any]:
    return {
        "error": {
            "message": error.message,
            "type": OPENAI_TYPES.get(error.status, "api_error"),
            "param": error.param,
            "code": error.code,
        }
    }


def error_frame(error: GatewayError) -> bytes:
    return b"data: " + json.dumps(error_body(error)).encode() + b"\n\n"


async def frames(chunks: AsyncGenerator[str, None]) -> AsyncGenerator[bytes, None]:
    """``data: {chunk}`` frames of a stream's chunks (JSON text); the chunks are closed with the frames."""
    async with contextlib.aclosing(chunks):
        async for data in chunks:
            yield b"data: " + data.encode() + b"\n\n"


def usage(reported: Any) -> Tokens:
    """Chat completions' ``usage`` (LiteLLM's, which adds Anthropic's cache fields where it has them)."""
    if not isinstance(reported, Mapping):
        return Tokens()
    cached = count(dig(reported, "prompt_tokens_details", "cached_tokens"))
    return Tokens(
        input=count(reported.get("prompt_tokens")),
        output=count(reported.get("completion_tokens")),
        cache_read=count(reported.get("cache_read_input_tokens")) or cached,
        cache_write=count(reported.get("cache_creation_input_tokens")),
        reasoning=count(dig(reported, "completion_tokens_details", "reasoning_tokens")),
    )


class ChatUsageTap:
    """Takes the usage-only chunk out of an OpenAI chat stream's bytes, and reads it (``tokens``).

    The gateway asks an OpenAI-compatible upstream for a stream's usage when the client did not (the ledger
    needs it). The answer is one more event, ``"choices": []`` with ``usage``, which the OpenAI SDK and
    LiteLLM would parse and model like any other chunk only for the gateway to drop it. Taken out here,
    LiteLLM sees the stream a gateway without a ledger sees. (For a chat stream with no usage chunk, whose
    caller passed no ``stream_options``, LiteLLM's wrapper sets zero usage on the finish chunk and
    ``stream_chunk_builder`` reports that; it does not count the prompt with a tokenizer there.)

    The whole event goes: its data line, and what follows it up to and including the blank line that ends
    it (the OpenAI SDK's SSE decoder dispatches an empty event for a blank line once any ``id:`` was seen).
    Every other byte passes unchanged and in order, each line as soon as its end arrives; the SDK's decoder
    cannot use a line before that anyway, so nothing is held longer than it would be.
    """

    def __init__(self) -> None:
        self.tokens = Tokens()
        self._partial: list[bytes] = []  # a line whose end has not arrived
        self._taking = False  # a usage chunk's data line was taken out: the rest of its event goes too
        self._cr = False  # the last line ended in CR at the end of a read: its LF may come first in the next
        self._dropped = False  # the last line was taken out (and so is that LF)

    def feed(self, chunk: bytes) -> bytes:
        """What of ``chunk`` (and of the line it finishes) goes on to LiteLLM."""
        lead = b""
        if chunk and self._cr:
            self._cr = False
            if chunk[:1] == b"\n":  # a CRLF split between two reads: the line's own end
                lead = b"" if self._dropped else b"\n"
                chunk = chunk[1:]
        if not chunk:
            return lead
        end = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1  # in the new bytes only: linear in a long line
        if end == 0:
            self._partial.append(chunk)
            return lead
        lines = b"".join((*self._partial, chunk[:end])) if self._partial else chunk[:end]
        self._partial = [chunk[end:]] if end < len(chunk) else []
        self._cr = not self._partial and lines.endswith(b"\r")  # the read's very last byte: an LF may follow
        head = b""
        if not self._taking:  # the lines before the first that could be a usage chunk pass as they are
            at = lines.find(b"[]")
            if at == -1:  # no usage chunk here: the usual case
                self._dropped = False
                return lead + lines
            start = max(lines.rfind(b"\n", 0, at), lines.rfind(b"\r", 0, at)) + 1
            head, lines = lines[:start], lines[start:]
        return (
            lead + head + b"".join(line for line in lines.splitlines(keepends=True) if not self._drops(line))
        )

    def end(self) -> bytes:
        """The last line, if the body ended without a line break."""
        rest = b"".join(self._partial)
        self._partial = []
        return b"" if not rest or self._drops(rest) else rest

    def _drops(self, line: bytes) -> bool:
        """Whether ``line`` goes: a usage chunk's data line, or the rest of its event."""
        if self._taking and not line.startswith(b"data:"):
            self._taking = bool(line.strip(b"\r\n"))  # its other fields go, and the blank line that ends it
            self._dropped = True
        else:
            self._dropped = self._taking = self._read(line)
        return self._dropped

    def _read(self, line: bytes) -> bool:
        """Whether ``line`` is a usage-only chunk's data line; its usage is read if so."""
        if not line.startswith(b"data:") or b'"usage"' not in line or b"[]" not in line:
            return False
        try:
            event = json.loads(line[5:])
        except ValueError:
            return False
        if not isinstance(event, dict) or event.get("choices") != []:
            return False
        if not isinstance(event.get("usage"), dict):
            return False
        self.tokens.merge(usage(event["usage"]))
        return True
