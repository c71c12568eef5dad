"""Anthropic's Messages API and its token count (Claude Code)."""

from __future__ import annotations

from aiohttp import web

from aiohttp_memproxy.dialects import anthropic
from aiohttp_memproxy.errors import InvalidRequest
from aiohttp_memproxy.keys import RUNTIME
from aiohttp_memproxy.server import model_request, stream

routes = web.RouteTableDef()


@routes.post("/v1/messages")
@routes.post("/messages")
@routes.post("/anthropic/v1/messages")  # the LiteLLM proxy's prefix for Anthropic clients
async def messages(request: web.Request) -> web.StreamResponse:
    asked = await model_request.read(request, "messages")
    max_tokens = asked.body.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequest("max_tokens: expected a positive integer", param="max_tokens")
    headers = model_request.client_headers(request)
    answer = await request[RUNTIME].gateway.messages(
        asked.resolved, asked.body, asked.decision, headers, asked.outcome
    )
    if isinstance(answer, dict):
        return web.json_response(answer)
    return await stream.relay(request, answer, anthropic.error_frame)


@routes.post("/v1/messages/count_tokens")
@routes.post("/messages/count_tokens")
@routes.post("/anthropic/v1/messages/count_tokens")
async def count_tokens(request: web.Request) -> web.Response:
    asked = await model_request.read(request, "count_tokens")
    headers = model_request.client_headers(request)
    counted = await request[RUNTIME].gateway.count_tokens(
        asked.resolved, asked.body, asked.decision, headers, asked.outcome
    )
    return web.json_response(counted)
