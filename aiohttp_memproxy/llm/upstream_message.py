"""What an upstream said about a failed request, made safe to show its client.

Clients and people act on it: Claude Code tells its user to ``/compact`` on "prompt is too long", a user
learns which tool schema a provider refused. It is taken only from the upstream's own JSON error body (never
LiteLLM's words around it), then every secret the gateway knows is removed (the deployments' keys, tokens and
header values, an api_base's query string and credentials), every URL is replaced, control characters go,
and its length is bounded.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from aiohttp_memproxy.config.settings import ModelConfig

MAX_LENGTH = 500
MAX_OBJECTS = 8  # JSON objects tried in one exception's text
# litellm_params whose values are credentials, by a part of their name.
SECRET_NAMES = ("key", "token", "secret", "password", "credential", "auth")
MIN_SECRET = 6  # shorter values would redact ordinary words
# A URL, up to a space, a quote, a bracket, or the punctuation that ends a sentence.
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]{0,15}://[^\s\"'<>()\[\]{}]*[^\s\"'<>()\[\]{}.,;:!?]")
CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
SPLIT = r"[\x00-\x1f\x7f]*"
REDACTED = "[redacted]"


def said(chain: Sequence[BaseException], secrets: Iterable[str]) -> str | None:
    """The upstream's own error message in an exception's chain (``llm.errors``'s), safe to show; None if it
    said none."""
    found = next(_messages(chain), None)
    if found is None:
        return None
    found = URL.sub("[url]", found)
    for secret in sorted({s for s in secrets if len(s) >= MIN_SECRET}, key=len, reverse=True):
        # A key split by control characters (a line break inside it) is still the key.
        found = re.sub(SPLIT.join(map(re.escape, secret)), REDACTED, found)
    found = CONTROL.sub(" ", found).strip()
    if len(found) > MAX_LENGTH:
        found = found[: MAX_LENGTH - 1] + "…"
    return found or None


def secrets_of(models: Iterable[ModelConfig]) -> set[str]:
    """Every value of these deployments that a message must not show."""
    found: set[str] = set()
    for model in models:
        for name, value in model.params.items():
            if isinstance(value, str) and any(part in name.lower() for part in SECRET_NAMES):
                found.add(value)
        for headers in ("extra_headers", "headers"):
            found.update(str(value) for value in (model.params.get(headers) or {}).values())
        api_base = str(model.params.get("api_base") or "")
        if api_base:
            parts = urlsplit(api_base)
            found.update(value for _, value in parse_qsl(parts.query))
            found.update(pair.partition("=")[2] for pair in parts.query.split("&"))  # as written, encoded
            found.update(value for value in (parts.username, parts.password) if value)
            if parts.username or parts.password:
                userinfo = f"{parts.username or ''}:{parts.password or ''}".encode()
                found.add(base64.b64encode(userinfo).decode())  # as Basic auth sends it
    return found


def environment_secrets(environ: Mapping[str, str]) -> set[str]:
    """The values of the environment's credentials: LiteLLM reads a provider's key from there when its
    litellm_params name none (OPENAI_API_KEY, ...), so an upstream may echo one the config never named."""
    return {
        value
        for name, value in environ.items()
        if any(part in name.lower() for part in SECRET_NAMES) and len(value) >= MIN_SECRET
    }


def _messages(chain: Sequence[BaseException]) -> Iterator[str]:
    """The upstream's messages, from the most direct source: a parsed body (the SDKs'), a response's JSON,
    then a JSON object inside an exception's text (LiteLLM quotes the upstream's body in its own)."""
    for error in chain:
        if (found := _message_in(getattr(error, "body", None))) is not None:
            yield found
        response = getattr(error, "response", None)
        if isinstance(response, httpx.Response):
            try:
                body = response.json()
            except (httpx.ResponseNotRead, ValueError, UnicodeDecodeError):
                body = None
            if (found := _message_in(body)) is not None:
                yield found
    for error in chain:
        text = getattr(error, "message", None)
        if not isinstance(text, str):
            text = str(error)
        if (found := _message_in_text(text)) is not None:
            yield found


def _message_in(body: Any) -> str | None:
    """``message`` of an error body in OpenAI's, Anthropic's or Google's shape (or of its ``error``)."""
    if not isinstance(body, dict):
        return None
    error = body.get("error")
    if isinstance(error, dict):
        return _message_in(error)
    if isinstance(error, str) and error.strip():
        return error
    message = body.get("message")
    return message if isinstance(message, str) and message.strip() else None


def _message_in_text(text: str) -> str | None:
    decoder = json.JSONDecoder()
    start = text.find("{")
    tried = 0
    while start != -1 and tried < MAX_OBJECTS:
        tried += 1
        try:
            value, _ = decoder.raw_decode(text, start)
        except ValueError:
            value = None
        if (found := _message_in(value)) is not None:
            return found
        start = text.find("{", start + 1)
    return None
