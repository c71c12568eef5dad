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
# Where clients send items newer or looser than the SDK's types (Messages content blocks and tools, Responses
# input items and tools). OpenAI chat's content parts and tools are a small closed set: checked whole.
OPEN_ROUTES = frozenset({"messages", "count_tokens", "responses"})
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
SHOWN = 200  # a message quotes none of the client's values, and is capped anyway


def validate(route: Route, body: dict[str, Any]) -> None:
    """InvalidRequest naming the first field of ``body`` that does not fit the route's SDK type.

    Inside an item of a list the APIs keep open (an input item, a content block, a tool, a system block) whose
    ``type`` is a string, the SDK's idea of that type is not the last word: clients send shapes newer or
    looser than the locked SDK knows (Codex sends items without ids, reasoning with ``content: null``), and
    the upstream judges them. The item must still be an object; everything around it is checked."""
    for name in BOOLEANS:
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise InvalidRequest(f"{name}: expected a boolean", param=name)
    try:
        _drain(ADAPTERS[route].validate_python(body, strict=True), ())
    except _Invalid as invalid:
        _raise_unless_open(route, body, invalid.errors, invalid.prefix)
    except ValidationError as exc:
        _raise_unless_open(route, body, exc.errors(include_url=False, include_input=False), ())


def _raise_unless_open(
    route: Route, body: dict[str, Any], errors: list[ErrorDetails], prefix: tuple[str | int, ...]
) -> None:
    """Raise for the errors left once those inside an open item are set aside, and with them what the other
    members of a union said about the item's container (``input`` "should be a valid string")."""
    paths = [_located(error, prefix) for error in errors]
    tolerated = [path for path in paths if route in OPEN_ROUTES and _in_open_item(body, path)]
    kept = [
        error
        for error, path in zip(errors, paths, strict=True)
        if path not in tolerated and not any(other[: len(path)] == path for other in tolerated)
    ]
    if kept:
        raise _error(kept, prefix) from None


def _located(error: ErrorDetails, prefix: tuple[str | int, ...]) -> list[str | int]:
    return [*prefix, *(part for part in error["loc"] if not _member(part))]


def _in_open_item(body: dict[str, Any], path: list[str | int]) -> bool:
    """Whether ``path`` lies inside a typed item of an open list: input[i].*, tools[i].*, system[i].*,
    messages[i].content[j].*."""
    match path:
        case ["input" | "tools" | "system" as field, int(index), _, *_]:
            item = _item(body.get(field), index)
        case ["messages", int(index), "content", int(block), _, *_]:
            message = _item(body.get("messages"), index)
            item = _item(message.get("content") if isinstance(message, dict) else None, block)
        case _:
            return False
    return isinstance(item, dict) and isinstance(item.get("type"), str)


def _item(items: Any, index: int) -> Any:
    return items[index] if isinstance(items, list) and 0 <= index < len(items) else None


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
    located = [(_located(error, prefix), error) for error in errors]
    path, chosen = max(located, key=lambda pair: len(pair[0]))
    where = _path(path) or "the request body"
    message = f"{where}: {chosen['msg']}"[:SHOWN]
    return InvalidRequest(message, param=str(path[0]) if path else None)


def _member(part: str | int) -> bool:
    return isinstance(part, str) and bool(NOT_A_FIELD.match(part))


def _path(parts: list[str | int]) -> str:
    """The field's path; a key that is not a plain name (a client's own, in a free-form object such as
    ``metadata``) shows as ``*``, so no client text is echoed."""
    text = ""
    for part in parts:
        name = part if isinstance(part, int) or FIELD_NAME.fullmatch(part) else "*"
        text += f"[{name}]" if isinstance(name, int) else (f".{name}" if text else str(name))
    return text
