"""Request context and the canonical log line, error rendering in the route's dialect, and auth.

Order in ``create_app``: ``request_context`` (outermost: sees the final status), ``render_errors``,
``admission.admit`` (Host, Origin, Content-Type: before the key and the body), ``authenticate``. Unknown
exceptions are not caught: aiohttp logs them and answers 500.
"""

from __future__ import annotations

import asyncio
import hmac
import re
import time
import uuid

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler

from aiohttp_memproxy.dialects import Dialect, anthropic, gemini, openai_chat
from aiohttp_memproxy.errors import AuthenticationFailed, GatewayError
from aiohttp_memproxy.keys import (
    DIALECT,
    METRICS,
    OUTCOME,
    REQUEST_ID,
    REQUEST_STARTED,
    RUNTIME,
    RUNTIMES,
    SETTINGS,
)
from aiohttp_memproxy.outbound.egress import is_loopback
from aiohttp_memproxy.usage import ledger
from aiohttp_memproxy.usage.outcome import Outcome

log = structlog.get_logger()

REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
ANTHROPIC_PREFIXES = ("/v1/messages", "/messages", "/api/event_logging", "/anthropic/")
MODEL_LIST_PATHS = ("/v1/models", "/models")
GEMINI_PREFIXES = ("/v1beta/", "/gemini/")
# Reachable without the master key wherever the gateway listens: probes, and Claude Code's start-up ping.
# /ui is the status page's shell (no data: /ui/data, which needs the key, has it).
PUBLIC_PATHS = frozenset({"/health/liveliness", "/health/liveness", "/health/readiness", "/api/hello", "/ui"})
# Reachable without the key only on a loopback address: they show no secret, but they do show the config's
# path, variable names, cookie names, memory users and traffic, which are nobody else's business.
LOOPBACK_PUBLIC_PATHS = frozenset({"/health", "/memory-routing/info", "/metrics"})
KEY_HEADERS = ("x-api-key", "x-litellm-api-key", "api-key", "x-goog-api-key")
CLIENT_CLOSED = 499  # nginx's convention for "the client went away", used in the log line only


def dialect_of(request: web.Request) -> Dialect:
    """Anthropic for the Messages API, and for the model list when the caller speaks Anthropic."""
    path = request.path
    if path.startswith(GEMINI_PREFIXES):
        return "gemini"
    if path.startswith(ANTHROPIC_PREFIXES):
        return "anthropic"
    if path.startswith(MODEL_LIST_PATHS) and "anthropic-version" in request.headers:
        return "anthropic"
    return "openai"


def error_response(error: GatewayError, dialect: Dialect) -> web.Response:
    match dialect:
        case "anthropic":
            body = anthropic.error_body(error)
        case "gemini":
            body = gemini.error_body(error)
        case _:
            body = openai_chat.error_body(error)
    return web.json_response(body, status=error.status, headers=error.headers)


@web.middleware
async def request_context(request: web.Request, handler: Handler) -> web.StreamResponse:
    incoming = request.headers.get(REQUEST_ID_HEADER, "")
    request_id = incoming if REQUEST_ID_RE.fullmatch(incoming) else uuid.uuid4().hex
    request[REQUEST_ID] = request_id
    request[DIALECT] = dialect_of(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, method=request.method, route=route)
    outcome = request[OUTCOME] = Outcome(request_id=request_id, route=route)
    started = request[REQUEST_STARTED] = time.perf_counter()
    metrics = request.app[METRICS]
    metrics.in_flight.inc()
    runtimes = request.app[RUNTIMES]
    runtime = request[RUNTIME] = runtimes.acquire()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = CLIENT_CLOSED
        raise
    finally:
        elapsed = time.perf_counter() - started
        runtimes.release(runtime)
        metrics.in_flight.dec()
        metrics.requests.labels(route, outcome.model, str(status)).inc()
        if outcome.fallback:
            metrics.fallbacks.labels(outcome.model).inc()
        ledger.record_request(request, status, elapsed)
        metrics.latency.labels(route).observe(elapsed)
        log.info("request", status=status, ms=round(elapsed * 1000, 1))


async def echo_request_id(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, streams and aiohttp's own included, carries the request id."""
    request_id = request.get(REQUEST_ID)
    if request_id is not None:
        response.headers[REQUEST_ID_HEADER] = request_id


def _http_error(request: web.Request, exc: web.HTTPException) -> GatewayError:
    if exc.status == web.HTTPNotFound.status_code:
        message = f"no route for {request.method} {request.path}"
    elif exc.status == web.HTTPMethodNotAllowed.status_code:
        message = f"method {request.method} is not allowed on {request.path}"
    elif exc.status == web.HTTPRequestEntityTooLarge.status_code:
        limit = request.app[SETTINGS].gateway.max_body_mb
        message = f"request body is larger than this gateway's limit of {limit:g} MiB (memproxy.max_body_mb)"
    else:
        message = exc.reason
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return GatewayError(message, status=exc.status, headers=headers)


@web.middleware
async def render_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        error = exc
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = _http_error(request, exc)
    structlog.contextvars.bind_contextvars(error_code=error.code)
    return error_response(error, request[DIALECT])


def presented_keys(request: web.Request) -> list[str]:
    keys = [request.headers[name] for name in KEY_HEADERS if name in request.headers]
    if request[DIALECT] == "gemini" and "key" in request.query:  # Google's ?key=, on its routes only
        keys.append(request.query["key"])
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        keys.append(token.strip())
    return keys


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    master_key = request[RUNTIME].settings.master_key
    if master_key is None or request.path in PUBLIC_PATHS:
        return await handler(request)
    if request.path in LOOPBACK_PUBLIC_PATHS and is_loopback(request.app[SETTINGS].gateway.host):
        return await handler(request)
    presented = presented_keys(request)
    if not presented:
        raise AuthenticationFailed(
            "missing API key: send the gateway's master key as 'Authorization: Bearer <key>' or 'x-api-key' "
            "(Gemini clients: 'x-goog-api-key')"
        )
    expected = master_key.encode()
    accepted = False
    for key in presented:  # no early exit: every presented key costs the same comparison
        accepted |= hmac.compare_digest(key.encode(), expected)
    if not accepted:
        raise AuthenticationFailed("invalid API key")
    return await handler(request)
