"""HTTP handlers: parse, one call into the owning module, render. No try/except here."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import time
from datetime import UTC, datetime
from importlib import metadata, resources
from typing import Any

import prometheus_client
import structlog
from aiohttp import web

from aiohttp_memproxy import __version__, json_body, ledger, schemas, sse, usage
from aiohttp_memproxy.errors import InvalidRequest, NotFound
from aiohttp_memproxy.keys import COOKIES, DIALECT, LEDGER, METRICS, RUNTIME, STARTED_AT, USAGE
from aiohttp_memproxy.llm import ANTHROPIC_CLIENT_HEADERS
from aiohttp_memproxy.llm_router import cooldown_rows
from aiohttp_memproxy.models import ResolvedModel
from aiohttp_memproxy.routing import RoutingDecision
from aiohttp_memproxy.settings import ModelConfig

# Served in every mode.
routes = web.RouteTableDef()
# The API served through LiteLLM (mode sdk); forward mode proxies these paths raw instead (forward.py).
sdk_routes = web.RouteTableDef()

ANTHROPIC_PAGE_DEFAULT, ANTHROPIC_PAGE_MAX = 20, 1000


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return web.json_response(
        {
            **_state(request),
            # For leak checks (make load): these must come back down when the traffic stops.
            "process": {"asyncio_tasks": len(asyncio.all_tasks()), "open_fds": _open_fds()},
        }
    )


def _state(request: web.Request) -> dict[str, Any]:
    """What /health and /ui show of the gateway: models, cooldowns, config, cookies (names, never values)."""
    settings, models = request[RUNTIME].settings, request[RUNTIME].models
    return {
        "status": "ok",
        "version": __version__,
        "uptime_s": round(time.monotonic() - request.app[STARTED_AT], 3),
        "models": {
            "available": [name for name, _ in models.listing()],
            "disabled": [{"name": m.name, "missing_env": list(m.missing_env)} for m in models.disabled],
        },
        "config": {
            "path": str(settings.source),
            "sha256": settings.digest,
            "loaded_at": _iso(settings.loaded_at),
        },
        # Deployments LiteLLM's Router skips for now (allowed_fails / cooldown_time), and until when.
        "cooldowns": [
            {**row, "until": _iso(row["until"])} for row in cooldown_rows(request[RUNTIME].llm.router)
        ],
        "cookies": {"count": len(request.app[COOKIES].jar), "names": request.app[COOKIES].names()},
    }


UI_DAYS = 14  # the charts' span
UI_LATEST = 100  # the table's rows
UI_PAGE = (resources.files("aiohttp_memproxy") / "ui.html").read_bytes()


@routes.get("/ui")
async def ui(request: web.Request) -> web.Response:
    """The status page: one self-contained file (no CDN, no build step). It holds no data: it asks
    /ui/data, with the key its form keeps in the tab's sessionStorage where a master key is set."""
    return web.Response(
        body=UI_PAGE,
        content_type="text/html",
        headers=UI_HEADERS,
    )


LEDGER_OFF = "the usage ledger is off (memproxy.usage_ledger: false)"


def _inline_hashes(page: bytes, tag: bytes) -> str:
    """CSP sources for the page's inline ``<tag>`` elements: the sha256 of each one's text."""
    found = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", page, re.DOTALL)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(text).digest()).decode()}'" for text in found)


# The page's own script and style only (by hash: an injected one would not run), requests to this origin
# only, never framed, no form posted elsewhere.
UI_CSP = (
    f"default-src 'none'; script-src {_inline_hashes(UI_PAGE, b'script')}; "
    f"style-src {_inline_hashes(UI_PAGE, b'style')}; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
UI_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": UI_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The ledger's latest requests: kept by no cache.
UI_DATA_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@routes.get("/ui/data")
async def ui_data(request: web.Request) -> web.Response:
    """The status page's data (same auth as the API): the gateway's state, and usage from the ledger: per
    day by client and by model over UI_DAYS, and the last UI_LATEST requests."""
    book = request.app.get(LEDGER)
    since = time.time() - UI_DAYS * 86400
    found: dict[str, object]
    if book is None:
        found = ledger.no_overview(LEDGER_OFF)
    else:
        await book.flush()  # what was just answered shows
        found = await asyncio.to_thread(ledger.overview, book.path, since, UI_LATEST)
    return web.json_response(
        {
            "state": _state(request),
            "usage": {
                "days": UI_DAYS,
                "by_client": found["by_client"],
                "by_model": found["by_model"],
                "error": found["error"],
            },
            "latest": found["latest"],
        },
        headers=UI_DATA_HEADERS,
    )


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return None


@routes.get("/health/liveliness")
@routes.get("/health/liveness")
async def liveliness(request: web.Request) -> web.Response:
    return web.json_response("I'm alive!")  # the LiteLLM proxy's exact answer


@routes.get("/health/readiness")
async def readiness(request: web.Request) -> web.Response:
    # LiteLLM-compatible shape; we have no database or cache to report.
    return web.json_response(
        {
            "status": "healthy",
            "db": "Not connected",
            "cache": None,
            "litellm_version": metadata.version("litellm"),
            "memproxy_version": __version__,
        }
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    book = request.app.get(LEDGER)
    if book is not None:
        await book.settle()  # the usage counters of every request so far, not of the last batch's
    body = prometheus_client.generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


@routes.get("/memory-routing/info")
async def memory_routing_info(request: web.Request) -> web.Response:
    return web.json_response(request[RUNTIME].router.routing_info(request.headers))


@sdk_routes.get("/v1/models")
@sdk_routes.get("/models")
async def list_models(request: web.Request) -> web.Response:
    listed = request[RUNTIME].models.listing()
    created = request[RUNTIME].settings.loaded_at
    if request[DIALECT] == "anthropic":
        return web.json_response(_anthropic_page(request, listed, created))
    return web.json_response(
        {
            "object": "list",
            "data": [
                {"id": name, "object": "model", "created": int(created), "owned_by": model.provider}
                for name, model in listed
            ],
        }
    )


def _anthropic_page(
    request: web.Request, listed: list[tuple[str, ModelConfig]], created: float
) -> dict[str, Any]:
    """Anthropic's ``GET /v1/models``: ``limit``, ``after_id`` and ``before_id`` paginate."""
    raw_limit = request.query.get("limit", str(ANTHROPIC_PAGE_DEFAULT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= ANTHROPIC_PAGE_MAX:
        raise InvalidRequest(f"limit: expected an integer from 1 to {ANTHROPIC_PAGE_MAX}", param="limit")
    limit = int(raw_limit)
    ids = [name for name, _ in listed]
    for param in ("after_id", "before_id"):
        value = request.query.get(param)
        if value is not None and value not in ids:
            raise InvalidRequest(f"{param}: no model with that id", param=param)
    if "before_id" in request.query:  # the page just before before_id; has_more looks further back
        stop = ids.index(request.query["before_id"])
        start = max(0, stop - limit)
        has_more = start > 0
    else:
        start = ids.index(request.query["after_id"]) + 1 if "after_id" in request.query else 0
        stop = min(len(listed), start + limit)
        has_more = stop < len(listed)
    page = listed[start:stop]
    return {
        "data": [
            {
                "type": "model",
                "id": name,
                "display_name": str(model.info.get("display_name") or name),
                "created_at": _iso(created),
            }
            for name, model in page
        ],
        "has_more": has_more,
        "first_id": page[0][0] if page else None,
        "last_id": page[-1][0] if page else None,
    }


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")


# A body larger than this is checked in a worker thread: parsing and validating a body of megabytes (Claude
# Code's long sessions) takes tens of milliseconds, up to seconds at the size limit, that the event loop and
# every stream on it would otherwise wait for. A smaller one costs less than the thread's hand-off.
INLINE_CHECK_BYTES = 256 * 1024


def checked_body(route: schemas.Route, raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object (nested no deeper than json_body.MAX_DEPTH), its required fields
    there, and the whole checked against the route's SDK type; InvalidRequest naming the field if not."""
    body = json_body.parse(raw)
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    _require(body, "model", str, "a non-empty string")
    if route == "responses":  # a string, or a list of input items
        _require(body, "input", (str, list), "a non-empty string or array")
    else:
        _require(body, "messages", list, "a non-empty array")
    schemas.validate(route, body)
    return body


def _require(body: dict[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> None:
    value = body.get(name)
    if value is None:
        raise InvalidRequest(f"{name} is required", param=name)
    if not isinstance(value, kind) or not value:
        raise InvalidRequest(f"{name} must be {what}", param=name)


@sdk_routes.post("/v1/chat/completions")
@sdk_routes.post("/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    body, resolved, user = await _model_request(request, "chat")
    llm, record = request[RUNTIME].llm, request.get(USAGE)
    streaming = body.get("stream") is True
    # A stream's usage comes as its last chunk only when asked for: asked for by llm, and that chunk kept
    # from a client that did not ask (the ledger needs the tokens; the client gets the stream it asked for).
    hide_usage = streaming and record is not None and not _asked_usage(body)
    result = await llm.chat(resolved, body, user, record, usage_for_ledger=hide_usage)
    if streaming:
        return await sse.openai_stream(request, llm.chunks(result, resolved.config.name, record, hide_usage))
    if record is not None:
        record.later = usage.read_later(usage.openai_chat, getattr(result, "usage", None))
        record.litellm_cost = _litellm_cost(result)
    return web.json_response(text=result.model_dump_json(exclude_none=True))


def _asked_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _litellm_cost(result: Any) -> float | None:
    """LiteLLM's own price of a whole chat answer: it sets one on every answer as it returns it
    (``response_cost`` in ``_hidden_params``, ``update_response_metadata``; LiteLLM 1.106.2), so the ledger
    need not ask its cost function again (~0.25 ms a request)."""
    hidden = getattr(result, "_hidden_params", None)
    cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
    return float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None


def _client_headers(request: web.Request) -> dict[str, str]:
    return {name: request.headers[name] for name in ANTHROPIC_CLIENT_HEADERS if name in request.headers}


async def _model_request(
    request: web.Request, route: schemas.Route
) -> tuple[dict[str, Any], ResolvedModel, RoutingDecision]:
    """The body (checked against the route's SDK type), the model it names, and its memory user (whose
    headers go only to a deployment served through Supermemory: llm decides, per deployment tried)."""
    raw = await request.read()  # a 413 beyond client_max_size (aiohttp)
    if len(raw) > INLINE_CHECK_BYTES:
        body = await asyncio.to_thread(checked_body, route, raw)
    else:
        body = checked_body(route, raw)
    resolved = request[RUNTIME].models.resolve(body["model"])
    router = request[RUNTIME].router
    decision = router.decide(request.headers)
    structlog.contextvars.bind_contextvars(model=resolved.config.name, user_id=decision.user_id)
    if route != "count_tokens" and LEDGER in request.app:  # a model request: a ledger row (middlewares)
        request[USAGE] = usage.Record(litellm_model=resolved.litellm_model, provider=resolved.config.provider)
    return body, resolved, decision


@sdk_routes.post("/v1/messages")
@sdk_routes.post("/messages")
async def messages(request: web.Request) -> web.StreamResponse:
    body, resolved, user = await _model_request(request, "messages")
    max_tokens = body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: expected a positive integer", param="max_tokens")
    llm, record = request[RUNTIME].llm, request.get(USAGE)
    result = await llm.messages(resolved, body, user, _client_headers(request), record)
    if body.get("stream") is True:
        return await sse.anthropic_stream(request, llm.events(result, resolved.config, record))
    if record is not None:
        record.later = usage.read_later(
            usage.anthropic, result.get("usage") if isinstance(result, dict) else None
        )
    return web.json_response(result)


@sdk_routes.post("/v1/messages/count_tokens")
@sdk_routes.post("/messages/count_tokens")
async def count_tokens(request: web.Request) -> web.Response:
    body, resolved, user = await _model_request(request, "count_tokens")
    counted = await request[RUNTIME].llm.count_tokens(resolved, body, user, _client_headers(request))
    return web.json_response(counted)


@sdk_routes.post("/v1/responses")
@sdk_routes.post("/responses")
async def responses(request: web.Request) -> web.StreamResponse:
    """The OpenAI Responses API (Codex CLI): native where the upstream has it, else bridged by LiteLLM."""
    body, resolved, user = await _model_request(request, "responses")
    llm, record = request[RUNTIME].llm, request.get(USAGE)
    result = await llm.responses(resolved, body, user, record)
    if body.get("stream") is True:
        return await sse.responses_stream(request, llm.response_events(result, resolved.config.name, record))
    if record is not None:
        record.later = usage.read_later(usage.responses, getattr(result, "usage", None))
    return web.json_response(text=result.model_dump_json(exclude_none=True))


@sdk_routes.get("/v1/responses/{response_id}")
@sdk_routes.delete("/v1/responses/{response_id}")
@sdk_routes.post("/v1/responses/{response_id}/cancel")
@sdk_routes.get("/v1/responses/{response_id}/input_items")
@sdk_routes.get("/responses/{response_id}")
@sdk_routes.delete("/responses/{response_id}")
@sdk_routes.post("/responses/{response_id}/cancel")
@sdk_routes.get("/responses/{response_id}/input_items")
async def stored_response(request: web.Request) -> web.Response:
    """Nothing is stored here: a response lives with the upstream that made it, if it stores at all."""
    raise NotFound(
        "this gateway stores no responses, so it cannot retrieve, delete or cancel one; send the "
        "conversation's items in `input` (as Codex does with store: false)",
        param="response_id",
        code="response_not_stored",
    )


@routes.get("/api/hello")  # HEAD too (aiohttp adds it to a GET)
async def hello(request: web.Request) -> web.Response:
    """Claude Code's start-up ping (``HEAD /api/hello``): an empty 200, no key needed."""
    return web.Response()


@routes.post("/api/event_logging/batch")
async def event_logging(request: web.Request) -> web.Response:
    """Claude Code's telemetry: accepted and dropped, so it does not 404."""
    await request.read()
    return web.json_response({"status": "ok"})
