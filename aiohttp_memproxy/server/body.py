"""A model request's body: JSON, its nesting bounded before anything costly walks it, its required fields
there, and the whole checked against the route's SDK type.

Python's parser recurses per level (a body nested past its recursion limit raised RecursionError, a 500),
and what reads a body after it (the SDK types' validation, LiteLLM's translation and token counting) walks
it recursively too, at a cost that grows with the depth. The deepest bodies real clients send are their
tool schemas; MAX_DEPTH leaves five times their depth (docs/security.md has the figures).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp_memproxy.errors import InvalidRequest
from aiohttp_memproxy.server import schemas

MAX_DEPTH = 64
TOO_DEEP = (
    f"the request body nests objects and arrays deeper than {MAX_DEPTH} levels, which this gateway refuses"
)


def deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests dicts and lists more than ``limit`` levels deep (the body itself is level 1),
    level by level, with no recursion; it stops at the first level past the limit."""
    level = [value] if isinstance(value, dict | list) else []
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            below.extend(item.values() if isinstance(item, dict) else item)
        level = [item for item in below if isinstance(item, dict | list)]
    return False


def parse(raw: bytes) -> Any:
    """The body's JSON value; InvalidRequest if it is not JSON or nests deeper than MAX_DEPTH."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise InvalidRequest(TOO_DEEP, code="json_too_deep") from None
    except ValueError:
        raise InvalidRequest("the request body is not valid JSON") from None
    if deeper_than(value, MAX_DEPTH):
        raise InvalidRequest(TOO_DEEP, code="json_too_deep")
    return value


# A body larger than this is checked in a worker thread: parsing and validating a body of megabytes (Claude
# Code's long sessions) takes tens of milliseconds, up to seconds at the size limit, that the event loop and
# every stream on it would otherwise wait for. A smaller one costs less than the thread's hand-off.
INLINE_CHECK_BYTES = 256 * 1024


def checked_body(route: schemas.Route, raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object (nested no deeper than MAX_DEPTH), its required fields
    there, and the whole checked against the route's SDK type; InvalidRequest naming the field if not."""
    body = parse(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    _require(body, "model", str, "a non-empty string")
    if route == "responses":  # a string, or a list of input items
        _require(body, "input", (str, list), "a non-empty string or array")
    else:
        _require(body, "messages", list, "a non-empty array")
    schemas.validate(route, body)
    return body


def checked_gemini_body(route: str, raw: bytes) -> dict[str, Any]:
    """A Gemini request: a JSON object whose ``contents`` is a non-empty array of objects, and whose other
    fields have their JSON kinds; for countTokens without ``contents``, the ``generateContentRequest`` it
    wraps, which is what is then counted. The model is the path's."""
    body = parse(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    checked = body
    if (
        route == "gemini_count"
        and "contents" not in body
        and isinstance(body.get("generateContentRequest"), dict)
    ):
        checked = body["generateContentRequest"]
    _require(checked, "contents", list, "a non-empty array")
    for index, content in enumerate(checked["contents"]):
        if not isinstance(content, dict):
            raise InvalidRequest(f"contents[{index}] must be an object", param=f"contents[{index}]")
    for name, kind, what in GEMINI_FIELDS:
        if name in checked and not isinstance(checked[name], kind):
            raise InvalidRequest(f"{name} must be {what}", param=name)
    return checked


# Gemini request fields and their JSON kinds (Google's REST reference).
GEMINI_FIELDS: tuple[tuple[str, type | tuple[type, ...], str], ...] = (
    ("generationConfig", dict, "an object"),
    ("systemInstruction", (dict, str), "an object"),
    ("tools", list, "an array"),
    ("toolConfig", dict, "an object"),
    ("safetySettings", list, "an array"),
    ("cachedContent", str, "a string"),
)


def _require(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> None:
    value = body.get(name)
    if value is None:
        raise InvalidRequest(f"{name} is required", param=name)
    if not isinstance(value, kind) or not value:
        raise InvalidRequest(f"{name} must be {what}", param=name)
