"""OpenAI's chat completions (PyCharm AI Assistant and every OpenAI client)."""

from __future__ import annotations

from aiohttp import web

from aiohttp_memproxy.dialects import openai_chat
from aiohttp_memproxy.keys import RUNTIME
from aiohttp_memproxy.server import model_request, stream

routes = web.RouteTableDef()


@routes.post("/v1/chat/completions")
@routes.post("/chat/completions")
async def chat_completions(request: web.Request) -> web.StreamResponse:
    asked = await model_request.read(request, "chat")
    answer = await request[RUNTIME].gateway.chat(asked.resolved, asked.body, asked.decision, asked.outcome)
    if isinstance(answer, str):
        return web.json_response(text=answer)
    return await stream.relay(request, openai_chat.frames(answer), openai_chat.error_frame, openai_chat.DONE)
