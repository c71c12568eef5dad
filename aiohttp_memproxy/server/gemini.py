"""Google's Gemini API (Gemini CLI, the google-genai SDKs): ``POST /v1beta/models/{model}:generateContent``,
``:streamGenerateContent`` (server-sent events, as ``alt=sse`` asks), ``:countTokens``, and ``GET
/v1beta/models`` (and one model); also under ``/gemini``, the LiteLLM proxy's prefix for Gemini clients."""

from __future__ import annotations

from aiohttp import web

from aiohttp_memproxy.dialects import gemini
from aiohttp_memproxy.errors import NotFound
from aiohttp_memproxy.keys import RUNTIME
from aiohttp_memproxy.server import model_request, stream

routes = web.RouteTableDef()
PREFIXES = ("", "/gemini")


async def call(request: web.Request) -> web.StreamResponse:
    """``{model}:{method}``: the model a client names (Google's ``models/`` prefix optional), the method."""
    name, _, method = request.match_info["target"].rpartition(":")
    if method not in gemini.METHODS or not name:
        raise NotFound(
            f"no method {method!r}: this gateway serves {', '.join(gemini.METHODS)}", code="method_not_found"
        )
    name = name.removeprefix("models/")
    runtime = request[RUNTIME]
    if method == "countTokens":
        asked = await model_request.read(request, "gemini_count", model=name)
        counted = await runtime.gateway.count_gemini_tokens(
            asked.resolved, asked.body, asked.decision, asked.outcome
        )
        return web.json_response(counted)
    asked = await model_request.read(request, "gemini", model=name)
    streaming = method == "streamGenerateContent"
    answer = await runtime.gateway.generate_content(
        asked.resolved, asked.body, asked.decision, asked.outcome, stream=streaming
    )
    if isinstance(answer, dict):
        return web.json_response(answer)
    return await stream.relay(request, answer, gemini.error_frame)


async def list_models(request: web.Request) -> web.Response:
    listed = request[RUNTIME].models.listing()
    return web.json_response({"models": [gemini.model_entry(name, model) for name, model in listed]})


async def get_model(request: web.Request) -> web.Response:
    name = request.match_info["name"].removeprefix("models/")
    model = request[RUNTIME].models.resolve(name).config
    return web.json_response(gemini.model_entry(name, model))


for _prefix in PREFIXES:
    routes.post(f"{_prefix}/v1beta/models/{{target:.+}}")(call)
    routes.get(f"{_prefix}/v1beta/models")(list_models)
    routes.get(f"{_prefix}/v1beta/models/{{name:.+}}")(get_model)
