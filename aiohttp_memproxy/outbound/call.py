"""The state of one gateway call in progress: one object in one ContextVar.

``llm.gateway`` starts every call into LiteLLM, and sets the call for exactly as long as LiteLLM runs on its
behalf: the call itself, and each step of its answer's stream (a Router may still fall back there). What is
read below LiteLLM, where nothing can be passed in (the clients LiteLLM builds, the transport, a Router's
attempt), reads it here; the request's outcome is one of its fields.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import httpx

from aiohttp_memproxy.usage.outcome import Outcome
from aiohttp_memproxy.usage.tokens import Tokens

if TYPE_CHECKING:
    from aiohttp_memproxy.config.settings import ModelConfig
    from aiohttp_memproxy.outbound.session import Exchange


@dataclass(eq=False)
class Call:
    transport: httpx.AsyncBaseTransport  # where the clients LiteLLM builds for itself send (llm.patches)
    group: ModelConfig  # the model group the client's model resolved to (its first deployment)
    outcome: Outcome
    # Wait out a 429/503 and send again (Retry-After, backoff)? Not when LiteLLM's Router has another
    # deployment or a fallback to go to: it moves on at once, and the throttled deployment's Retry-After
    # becomes its cooldown.
    backoff: bool = True
    # The attempt being sent asked its OpenAI-speaking upstream for a chat stream's usage that the client
    # did not ask for: the transport takes that usage chunk out of the answer's bytes and reads it here.
    take_usage: bool = False
    stream_usage: Tokens | None = None
    exchanges: list[Exchange] | None = None  # the upstream exchanges, where someone asked to see them
    secrets: frozenset[str] = frozenset()  # beyond the deployments', what an upstream's message must not show
    # Through LiteLLM's Router: the Router (its attempts are this call's only if it is this one), and how one
    # attempt's kwargs are made right for the deployment it picked.
    router: Any = None
    adapt: Callable[[ModelConfig, dict[str, Any]], None] | None = None
    tried: list[ModelConfig] = field(default_factory=list)  # deployments in the order they were tried
    relayed: bool = False  # something of the answer reached the client: no fallback from here on
    litellm_model: str = ""  # what the last deployment tried was called as (its usage is priced as that)

    @property
    def deployment(self) -> ModelConfig | None:
        """The deployment that answered (the last one tried)."""
        return self.tried[-1] if self.tried else None

    @property
    def answering(self) -> ModelConfig:
        """The deployment that answered, or the model group's where none is known yet."""
        return self.tried[-1] if self.tried else self.group

    @property
    def fallback(self) -> bool:
        """Whether the answer came from another model group than the one asked for."""
        return any(model.name != self.group.name for model in self.tried)


CALL: ContextVar[Call | None] = ContextVar("memproxy_call", default=None)


@contextmanager
def current(call: Call) -> Iterator[Call]:
    """``call`` is the call in progress while the block runs."""
    token = CALL.set(call)
    try:
        yield call
    finally:
        CALL.reset(token)
