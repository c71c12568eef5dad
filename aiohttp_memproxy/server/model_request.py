"""What every model route does first: the body checked, the model it names resolved, its memory user
decided, and the request's outcome told all three."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import structlog
from aiohttp import web

from aiohttp_memproxy.keys import LEDGER, OUTCOME, RUNTIME
from aiohttp_memproxy.resolve.memory import MemoryDecision
from aiohttp_memproxy.resolve.models import ResolvedModel
from aiohttp_memproxy.server import schemas
from aiohttp_memproxy.server.body import INLINE_CHECK_BYTES, checked_body, checked_gemini_body
from aiohttp_memproxy.usage.outcome import Outcome

GeminiRoute = Literal["gemini", "gemini_count"]
# The client's own Anthropic headers: forwarded byte for byte to an Anthropic upstream.
ANTHROPIC_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")


@dataclass(frozen=True)
class ModelRequest:
    body: dict[str, Any]
    resolved: ResolvedModel
    # Whose memory: its headers go only to a deployment served through Supermemory (the gateway decides,
    # per deployment tried).
    decision: MemoryDecision
    outcome: Outcome


async def read(
    request: web.Request, route: schemas.Route | GeminiRoute, model: str | None = None
) -> ModelRequest:
    """``model``: the model a route names in its path (Gemini's), else the body's."""
    raw = await request.read()  # a 413 beyond client_max_size (aiohttp)
    check: Callable[[Any, bytes], dict[str, Any]] = checked_gemini_body if model is not None else checked_body
    if len(raw) > INLINE_CHECK_BYTES:
        body = await asyncio.to_thread(check, route, raw)
    else:
        body = check(route, raw)
    runtime = request[RUNTIME]
    resolved = runtime.models.resolve(model if model is not None else body["model"])
    decision = runtime.memory.decide(request.headers)
    structlog.contextvars.bind_contextvars(model=resolved.config.name, user_id=decision.user_id)
    outcome = request[OUTCOME]
    outcome.model, outcome.user_id = resolved.config.name, decision.user_id
    if route not in ("count_tokens", "gemini_count") and LEDGER in request.app:  # a model request: a row
        outcome.metered = True
        outcome.litellm_model, outcome.provider = resolved.litellm_model, resolved.config.provider
    return ModelRequest(body, resolved, decision, outcome)


def client_headers(request: web.Request) -> dict[str, str]:
    return {name: request.headers[name] for name in ANTHROPIC_CLIENT_HEADERS if name in request.headers}
