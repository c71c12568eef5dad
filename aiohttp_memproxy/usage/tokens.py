"""A request's tokens, as each dialect's usage reads them (``dialects``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass
class Tokens:
    """A request's tokens; None where the answer did not say."""

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None
    cache_write: int | None = None
    reasoning: int | None = None

    def merge(self, other: Tokens) -> None:
        """What ``other`` says, over what this says (a stream's later usage is the fuller one)."""
        for name in TOKEN_FIELDS:
            value = getattr(other, name)
            if value is not None:
                setattr(self, name, value)

    @property
    def known(self) -> bool:
        return self.input is not None or self.output is not None


TOKEN_FIELDS = tuple(item.name for item in fields(Tokens))


def count(value: Any) -> int | None:
    """A token count as JSON gives it: a non-negative int (not a bool, not an int's subclass), else None."""
    return value if type(value) is int and value >= 0 else None


def dig(mapping: Any, *path: str) -> Any:
    """``mapping[path[0]][path[1]]...``, None where a step is not a mapping."""
    for key in path:
        if type(mapping) is not dict and not isinstance(mapping, Mapping):  # JSON's dict first: the fast test
            return None
        mapping = mapping.get(key)
    return mapping
