"""OpenAI's Responses API (Codex CLI): native where the upstream has it, else bridged by LiteLLM. Nothing is
stored here."""

from __future__ import annotations

from aiohttp import web

from aiohttp_memproxy.dialects import responses
from aiohttp_memproxy.errors import NotFound
from aiohttp_memproxy.keys import RUNTIME
from aiohttp_memproxy.server import model_request, stream

routes = web.RouteTableDef()


@routes.post("/v1/responses")
@routes.post("/responses")
async def create(request: web.Request) -> web.StreamResponse:
    asked = await model_request.read(request, "responses")
    answer = await request[RUNTIME].gateway.responses(
        asked.resolved, asked.body, asked.decision, asked.outcome
    )
    if isinstance(answer, str):
        return web.json_response(text=answer)
    return await stream.relay(request, answer, responses.error_frame)


@routes.get("/v1/responses/{response_id}")
@routes.delete("/v1/responses/{response_id}")
@routes.post("/v1/responses/{response_id}/cancel")
@routes.get("/v1/responses/{response_id}/input_items")
@routes.get("/responses/{response_id}")
@routes.delete("/responses/{response_id}")
@routes.post("/responses/{response_id}/cancel")
@routes.get("/responses/{response_id}/input_items")
async def stored_response(request: web.Request) -> web.Response:
    """Nothing is stored here: a response lives with the upstream that made it, if it stores at all."""
    raise NotFound(
        "this gateway stores no responses, so it cannot retrieve, delete or cancel one; send the "
        "conversation's items in `input` (as Codex does with store: false)",
        param="response_id",
        code="response_not_stored",
    )
