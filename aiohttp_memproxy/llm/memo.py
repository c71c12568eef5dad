"""A bounded memo: what the gateway remembers of names a client chooses (a wildcard's model ids, a set of
Anthropic betas) stays bounded, the least recently used forgotten first."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Memo(Generic[K, V]):
    def __init__(self, size: int) -> None:
        self._size = size
        self._kept: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K, make: Callable[[K], V]) -> V:
        """The remembered value of ``key``, or ``make(key)``, remembered."""
        try:
            value = self._kept[key]
        except KeyError:
            value = self._kept[key] = make(key)
            if len(self._kept) > self._size:
                self._kept.popitem(last=False)
            return value
        self._kept.move_to_end(key)
        return value

    def values(self) -> list[V]:
        return list(self._kept.values())

    def __len__(self) -> int:
        return len(self._kept)
