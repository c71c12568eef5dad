"""What each route accepts, declared by the official SDKs' own request types, checked at the edge.

The ``openai`` and ``anthropic`` packages ship a TypedDict per request (``CompletionCreateParamsBase``,
``MessageCreateParamsBase``, ``MessageCountTokensParams``, ``ResponseCreateParamsBase``); pydantic validates
a body against them in strict mode (a string is not a number, ``"yes"`` is not a boolean). Keys the types do
not name pass through (LiteLLM's extensions, newer API fields), as the APIs themselves let them. A body that
does not fit is a 400 that names the field, before LiteLLM or any upstream sees it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from anthropic.types.message_count_tokens_params import MessageCountTokensParams
from anthropic.types.message_create_params import MessageCreateParamsBase
from openai.types.chat.completion_create_params import CompletionCreateParamsBase
from openai.types.responses.response_create_params import ResponseCreateParamsBase
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from aiohttp_memproxy.errors import InvalidRequest

Route = Literal["chat", "messages", "count_tokens", "responses"]

ADAPTERS: Mapping[Route, TypeAdapter[Any]] = {
    "chat": TypeAdapter(CompletionCreateParamsBase),
    "messages": TypeAdapter(MessageCreateParamsBase),
    "count_tokens": TypeAdapter(MessageCountTokensParams),
    "responses": TypeAdapter(ResponseCreateParamsBase),
}
# Where pydantic names the union member or the validator it tried instead of a field: not part of the path.
NOT_A_FIELD = re.compile(r"^([A-Z]\w*|str|int|float|bool|bytes|none|.*\[.*)$")
# Not in the SDKs' base types (each API's own variants fix it to true or false), checked here.
BOOLEANS = ("stream",)
SHOWN = 200  # a message quotes none of the client's values, and is capped anyway


def validate(route: Route, body: dict[str, Any]) -> None:
    """InvalidRequest naming the first field of ``body`` that does not fit the route's SDK type."""
    for name in BOOLEANS:
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise InvalidRequest(f"{name}: expected a boolean", param=name)
    try:
        _drain(ADAPTERS[route].validate_python(body, strict=True), ())
    except _Invalid as invalid:
        raise _error(invalid.errors, invalid.prefix) from None
    except ValidationError as exc:
        raise _error(exc.errors(include_url=False, include_input=False), ()) from None


class _Invalid(Exception):
    def __init__(self, errors: list[ErrorDetails], prefix: tuple[str | int, ...]) -> None:
        super().__init__()
        self.errors = errors
        self.prefix = prefix


def _drain(value: Any, path: tuple[str | int, ...]) -> None:
    """pydantic validates an ``Iterable`` field lazily (the SDKs type ``messages``, ``tools`` and content
    parts so): read every one now, so a bad item is found here, with its path."""
    if type(value).__name__ == "ValidatorIterator":
        try:
            items = list(value)
        except ValidationError as exc:
            raise _Invalid(exc.errors(include_url=False, include_input=False), path) from None
        for index, item in enumerate(items):
            _drain(item, (*path, index))
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _drain(item, (*path, str(key)))
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _drain(item, (*path, index))


def _error(errors: list[ErrorDetails], prefix: tuple[str | int, ...]) -> InvalidRequest:
    """The most specific of pydantic's errors (the deepest path once union members are left out), as
    ``messages[0].role: Field required``; ``param`` is the top-level field."""
    located = [([*prefix, *(part for part in error["loc"] if not _member(part))], error) for error in errors]
    path, chosen = max(located, key=lambda pair: len(pair[0]))
    where = _path(path) or "the request body"
    message = f"{where}: {chosen['msg']}"[:SHOWN]
    return InvalidRequest(message, param=str(path[0]) if path else None)


def _member(part: str | int) -> bool:
    return isinstance(part, str) and bool(NOT_A_FIELD.match(part))


def _path(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text
