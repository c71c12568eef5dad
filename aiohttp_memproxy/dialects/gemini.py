"""Google's Gemini API (Gemini CLI, the google-genai SDKs): its stream's frames, its usage (read from a
stream as it passes), its error shape, its model list."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp_memproxy.usage.tokens import Tokens, count

if TYPE_CHECKING:
    from aiohttp_memproxy.config.settings import ModelConfig
    from aiohttp_memproxy.errors import GatewayError

# google.rpc.Code names for HTTP statuses, as Google's API (and the LiteLLM proxy) answer them.
RPC_STATUS: Mapping[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    413: "INVALID_ARGUMENT",
    415: "INVALID_ARGUMENT",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
METHODS = ("generateContent", "streamGenerateContent", "countTokens")


def error_body(error: GatewayError) -> dict[str, Any]:
    status = RPC_STATUS.get(error.status, "INTERNAL" if error.status >= 500 else "FAILED_PRECONDITION")
    return {"error": {"code": error.status, "message": error.message, "status": status}}


def frame(chunk: Mapping[str, Any]) -> bytes:
    """One streamed GenerateContentResponse as Google sends it with ``alt=sse``."""
    return b"data: " + json.dumps(chunk).encode() + b"\r\n\r\n"


def error_frame(error: GatewayError) -> bytes:
    return frame(error_body(error))


def usage(reported: Any) -> Tokens:
    """A GenerateContentResponse's ``usageMetadata``. Its prompt count includes the cached tokens, as
    OpenAI's does; thoughts are output the model was billed for."""
    if not isinstance(reported, Mapping):
        return Tokens()
    if not reported.get("promptTokenCount") and not reported.get("candidatesTokenCount"):
        return Tokens()  # LiteLLM's translation writes zeros where the bridged stream said nothing
    output = count(reported.get("candidatesTokenCount"))
    thoughts = count(reported.get("thoughtsTokenCount"))
    return Tokens(
        input=count(reported.get("promptTokenCount")),
        output=None if output is None and thoughts is None else (output or 0) + (thoughts or 0),
        cache_read=count(reported.get("cachedContentTokenCount")),
        reasoning=thoughts,
    )


class StreamUsage:
    """Reads a Gemini stream's usage while its bytes are relayed unchanged: the last ``usageMetadata`` a
    chunk carries is the stream's. Only data lines that name it are parsed; frames may be split anywhere."""

    MAX_LINE = 1024 * 1024
    MARKER = b'"usageMetadata"'

    def __init__(self) -> None:
        self._partial = b""
        self._last: bytes | None = None

    def feed(self, chunk: bytes) -> None:
        data = self._partial + chunk if self._partial else chunk
        end = data.rfind(b"\n") + 1
        self._partial = data[end:] if len(data) - end <= self.MAX_LINE else b""
        at = data.rfind(self.MARKER, 0, end)
        if at != -1:
            start = data.rfind(b"\n", 0, at) + 1
            stop = data.find(b"\n", at, end)
            line = data[start:stop].rstrip(b"\r")
            if line.startswith(b"data:"):
                self._last = line[5:]

    def read(self) -> Tokens:
        if self._last is None:
            return Tokens()
        try:
            chunk = json.loads(self._last)
        except ValueError:
            return Tokens()
        return usage(chunk.get("usageMetadata") if isinstance(chunk, dict) else None)


def model_entry(name: str, model: ModelConfig) -> dict[str, Any]:
    """One entry of ``GET /v1beta/models`` as Google lists its models."""
    entry: dict[str, Any] = {
        "name": f"models/{name}",
        "baseModelId": name,
        "version": "001",
        "displayName": str(model.info.get("display_name") or name),
        "supportedGenerationMethods": list(METHODS),
    }
    for ours, google in (("max_input_tokens", "inputTokenLimit"), ("max_output_tokens", "outputTokenLimit")):
        if isinstance(model.info.get(ours), int):
            entry[google] = model.info[ours]
    return entry
