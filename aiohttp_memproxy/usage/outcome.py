"""What a request came to: one typed object per request, filled in as it goes (by the edge, the LLM call,
the transport, the stream writer) and read when it ends by the metrics and the ledger.

The log context (structlog) carries the same facts for log lines only: nothing reads data back from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp_memproxy.usage.tokens import Tokens


@dataclass(eq=False)
class Outcome:
    request_id: str = ""
    route: str = ""  # the route's canonical path
    model: str = ""  # the model group the request resolved to
    user_id: str = ""  # its memory user
    deployment: str = ""  # the deployment that answered, as a log line may show it (provider/host)
    fallback: bool = False  # the answer came from another model group than the one asked for
    attempts: int = 0  # requests that tried to leave the gateway: retries and the Router's hops included
    # A model request whose row the ledger keeps: its usage is read (and asked of an upstream that would
    # not report it otherwise) only then.
    metered: bool = False
    litellm_model: str = ""  # what LiteLLM prices the usage as
    provider: str = ""
    tokens: Tokens = field(default_factory=Tokens)
    litellm_cost: float | None = None  # LiteLLM's own price of a whole answer, where it gave one
    first_byte_s: float | None = None  # seconds after the request arrived
    # The answer's usage, read when the row is made (in the ledger's batch, off the request's path): merged
    # over ``tokens`` by ``settled``.
    later: Callable[[], Tokens] | None = None

    def settled(self) -> Tokens:
        if self.later is not None:
            self.tokens.merge(self.later())
            self.later = None
        return self.tokens


def read_later(parse: Callable[[Any], Tokens], found: Any) -> Callable[[], Tokens]:
    """``parse`` of an answer's usage, when asked: JSON, or LiteLLM's object dumped as JSON (faster than
    reading its fields one by one: pydantic looks some of them up the slow way)."""

    def read() -> Tokens:
        dump = getattr(found, "model_dump", None)
        return parse(dump() if callable(dump) else found)

    return read
