"""Forward mode, the rollback path: every API request proxied raw to a LiteLLM proxy server (or any OpenAI- or
Anthropic-compatible base URL), through the same session, jar and challenge-aware retry.

The body and the answer pass untouched (streams unbuffered, content-encoding kept); the client's key is
replaced by ``memproxy.upstream_key``; Supermemory models (by the config's model resolution) get the memory
headers. Nothing here imports LiteLLM.
"""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from typing import Any
from urllib.parse import unquote_plus

import httpx
import structlog
from aiohttp import web

from aiohttp_memproxy import errors
from aiohttp_memproxy.keys import OUTCOME, RUNTIME, SETTINGS, TRANSPORT
from aiohttp_memproxy.outbound.transport import UPSTREAM_STATUS_HEADER, UpstreamRedirect
from aiohttp_memproxy.resolve.memory import memory_headers
from aiohttp_memproxy.server import stream
from aiohttp_memproxy.server.body import parse
from aiohttp_memproxy.server.middlewares import KEY_HEADERS

log = structlog.get_logger()

# Hop-by-hop headers (RFC 9110 7.6.1) and what the two connections compute for themselves.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "host",
        "content-length",
    }
)
CREDENTIALS = frozenset({"authorization", *KEY_HEADERS})
DOT_SEGMENTS = frozenset({".", ".."})
ENCODED_SEPARATOR = re.compile(r"%(2f|5c|2e)", re.IGNORECASE)
FORWARDED_PATHS = (
    "/v1/{tail:.*}",
    "/chat/completions",
    "/models",
    "/models/{tail:.+}",
    "/messages",
    "/messages/count_tokens",
    "/anthropic/{tail:.*}",  # the LiteLLM proxy's prefix for Anthropic clients: its own routes
    "/v1beta/{tail:.*}",  # Google's Gemini API, and the LiteLLM proxy's /gemini prefix for it
    "/gemini/{tail:.*}",
)

routes = web.RouteTableDef()


def _model_of(body: bytes) -> str | None:
    """The model a JSON body names; a body nested too deep is refused as on the SDK path."""
    try:
        parsed: Any = parse(body)
    except errors.InvalidRequest as exc:
        if exc.code == "json_too_deep":
            raise
        return None  # not JSON: not ours to judge
    model = parsed.get("model") if isinstance(parsed, dict) else None
    return model if isinstance(model, str) else None


def _upstream_headers(request: web.Request, body: bytes) -> dict[str, str]:
    runtime = request[RUNTIME]
    headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP | CREDENTIALS}
    key = request.app[SETTINGS].gateway.upstream_key
    if key:
        # Where the client put its key, ours goes (a Gemini client's ?key= as x-goog-api-key); else the
        # Bearer a LiteLLM proxy expects.
        sent = [name for name in CREDENTIALS if name in request.headers]
        if not sent and "key" in request.query:
            sent = ["x-goog-api-key"]
        sent = sent or ["authorization"]
        for name in sent:
            headers[name] = f"Bearer {key}" if name == "authorization" else key
    decision = runtime.memory.decide(request.headers)
    request[OUTCOME].user_id = decision.user_id
    structlog.contextvars.bind_contextvars(user_id=decision.user_id)
    model_name = _model_of(body) if body else None
    if model_name is not None:
        try:
            resolved = runtime.models.resolve(model_name)
        except errors.GatewayError:
            return headers  # not ours to judge: the upstream answers for unknown models
        request[OUTCOME].model = resolved.config.name
        structlog.contextvars.bind_contextvars(model=resolved.config.name)
        headers.update(memory_headers(resolved.config, decision))
    return headers


def _without_key(raw_path: str) -> str:
    path, _, query = raw_path.partition("?")
    if not query:
        return raw_path
    # By its decoded name, as the query is read for authentication (k%65y is key).
    kept = [pair for pair in query.split("&") if unquote_plus(pair.partition("=")[0]) != "key"]
    return f"{path}?{'&'.join(kept)}" if kept else path


def confined(raw_path: str) -> bool:
    """Whether a request's path, as the client sent it, stays under the prefix it is forwarded for: a path
    (not a whole URL), no dot segment, and no encoded ``/``, ``\\`` or ``.`` that the upstream (or httpx)
    could decode into one."""
    path = raw_path.partition("?")[0]
    if not path.startswith("/"):  # an absolute-form target (GET http://host/...) would name its own host
        return False
    if "\\" in path or ENCODED_SEPARATOR.search(path):
        return False
    return not any(segment in DOT_SEGMENTS for segment in path.split("/"))


async def forward(request: web.Request) -> web.StreamResponse:
    if not confined(request.raw_path):
        raise errors.InvalidRequest(
            "path: a '.' or '..' segment, or an encoded '/', '\\' or '.', is not forwarded", param="path"
        )
    body = await request.read()
    base = request.app[SETTINGS].gateway.upstream
    assert base is not None  # settings validation: forward mode has an upstream
    # As the client encoded it: decoding would turn an encoded '?' or '#' into the URL's own. A key in the
    # query (Google's ?key=) is the client's, never the upstream's: it goes, and ours rides in a header.
    url = httpx.URL(base + _without_key(request.raw_path))
    upstream_request = httpx.Request(
        request.method, url, headers=_upstream_headers(request, body), content=body
    )
    try:
        response = await request.app[TRANSPORT].handle_async_request(upstream_request)
    except UpstreamRedirect as exc:
        raise errors.UpstreamRedirected.of("forward mode", exc.status, exc.host) from None
    except httpx.TimeoutException:
        raise errors.UpstreamTimeout("the upstream timed out") from None
    except httpx.TransportError:
        raise errors.UpstreamUnreachable("the upstream could not be reached") from None
    # The upstream's Access-Control-* headers are dropped on the way out, as every answer's are
    # (admission.cors_headers): its CORS answer is for its own origin, never this gateway's.
    headers = {
        k: v for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP | {UPSTREAM_STATUS_HEADER}
    }
    answer = web.StreamResponse(status=response.status_code, headers=headers)
    try:
        await stream.pump(request, answer, _body(response), error_frame=None)
    finally:
        await response.aclose()  # however the loop ended, before it started included
    return answer


async def _body(response: httpx.Response) -> AsyncGenerator[bytes, None]:
    """The upstream's body as it comes; cut short after the headers went out, the client's is too."""
    try:
        async for chunk in response.aiter_raw():
            yield chunk
    except httpx.TransportError:
        raise errors.UpstreamUnreachable("the upstream broke off") from None


for _path in FORWARDED_PATHS:
    routes.route("*", _path)(forward)
