"""A request body as JSON, its nesting bounded before anything costly walks it.

Python's parser recurses per level (a body nested past its recursion limit raised RecursionError, a 500),
and what reads a body after it (the SDK types' validation, LiteLLM's translation and token counting) walks
it recursively too, at a cost that grows with the depth. The deepest bodies real clients send are their
tool schemas; MAX_DEPTH leaves five times their depth (docs/security.md has the figures).
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp_memproxy.errors import InvalidRequest

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
