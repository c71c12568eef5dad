"""A local upstream speaking each provider's dialect (OpenAI chat and Responses, Anthropic, Gemini, Ollama,
Bedrock Converse, Cohere v2), JSON and streams, able to gate on cookies like Cloudflare, delay, fail on
script, and cut a stream short. Used by the tests (on aiohttp_server) and the benchmarks."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests import fake_dialects

CLEARANCE = "cf_clearance"
CHALLENGE_PAGE = (
    "<html><title>Error 1200</title><body>error code: 1200 - rate limited by Cloudflare</body></html>"
)
REPLY = ["Hello", " from", " upstream"]
# Opaque to everyone but the upstream: must reach the client byte for byte (+, /, = and all).
SIGNATURE = "EqQBCkYIBRgCIkB+x/9Zq3==sig/na+ture=="
TOOL_INPUT = {"city": "Paris", "unit": "celsius"}


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    cookies: dict[str, str]
    body: dict[str, Any]
    at: float
    query: str = ""


@dataclass
class Scripted:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeUpstream:
    gate: bool = False
    script: list[Scripted] = field(default_factory=list)
    cut_after: int | None = None  # chunks sent before a stream is cut short
    chunk_delay_s: float = 0.0
    delay_s: float = 0.0  # before answering at all
    seen: list[Seen] = field(default_factory=list)
    challenges: int = 0
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    on_request: Callable[[web.Request], None] | None = None
    reply: list[str] = field(default_factory=lambda: list(REPLY))  # the text, one SSE chunk per piece
    record: bool = True  # benchmarks turn it off: 10,000 recorded requests are memory the proxy did not use
    call_tools: bool = True  # answer a request with tools by calling the first one (off: text only)
    chaos: float = 0.0  # make load: this share of requests is challenged (1/2), throttled (1/4) or cut (1/4)
    rng: random.Random = field(default_factory=lambda: random.Random(7))  # noqa: S311  # a test double's dice

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/chat/completions", self.chat)
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        app.router.add_post("/v1/responses", self.responses)
        app.router.add_post("/api/chat", self.ollama)
        app.router.add_post("/v2/chat", self.cohere)
        app.router.add_post("/model/{model_id}/{operation}", self.bedrock)
        app.router.add_post("/{prefix:.*}models/{action}", self.gemini)
        # azure/ (/openai/deployments/{name}/...), groq/ (/openai/v1), openrouter/ (/api/v1), databricks/ ...
        app.router.add_post("/{prefix:.*}chat/completions", self.chat)
        return app

    @property
    def with_cookie(self) -> list[bool]:
        return [CLEARANCE in seen.cookies for seen in self.seen]

    async def _intercept(self, request: web.Request) -> tuple[dict[str, Any], web.Response | None]:
        body = await request.json()
        if self.record:
            seen = Seen(
                request.path,
                dict(request.headers),
                dict(request.cookies),
                body,
                time.monotonic(),
                request.query_string,
            )
            self.seen.append(seen)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        roll = self.rng.random()
        if roll < self.chaos / 4:
            throttled = web.json_response({"error": {"message": "slow down"}}, status=429)
            throttled.headers["Retry-After"] = "1"
            return body, throttled
        if (self.gate and CLEARANCE not in request.cookies) or roll < self.chaos * 3 / 4:
            self.challenges += 1
            response = web.Response(status=503, text=CHALLENGE_PAGE, content_type="text/html")
            response.headers["Server"] = "cloudflare"
            response.set_cookie(CLEARANCE, f"token-{self.challenges}", path="/", max_age=3600, httponly=True)
            response.set_cookie("__cf_bm", "bm", path="/", max_age=1800)
            return body, response
        if self.script:
            step = self.script.pop(0)
            if isinstance(step.body, str):
                return body, web.Response(status=step.status, text=step.body, headers=step.headers)
            return body, web.json_response(step.body, status=step.status, headers=step.headers)
        return body, None

    async def _sse(
        self, request: web.Request, events: list[bytes], content_type: str = "text/event-stream"
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type, "Cache-Control": "no-cache"})
        await response.prepare(request)
        cut_after = 2 if self.rng.random() < self.chaos / 4 else self.cut_after
        try:
            for index, event in enumerate(events):
                if cut_after is not None and index >= cut_after:
                    # Abort the connection mid-body: a truncated chunked response.
                    assert request.transport is not None
                    request.transport.close()
                    return response
                await response.write(event)
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
        except (ConnectionResetError, asyncio.CancelledError):
            self.cancelled.set()
            raise
        await response.write_eof()
        return response

    def _pieces(self, body: dict[str, Any]) -> list[str]:
        """The answer's text: the reply, or, where the request asks for JSON of a schema, that JSON."""
        schema = fake_dialects.asked_schema(body)
        return self.reply if schema is None else [json.dumps(fake_dialects.schema_example(schema))]

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._intercept(request)
        if early is not None:
            return early
        pieces = self._pieces(body)
        model, created = body.get("model", "m"), int(time.time())
        # A tool is called once: after its result comes back (the last message), the answer is text.
        answered = bool(body.get("messages")) and body["messages"][-1].get("role") == "tool"
        tool = (
            body["tools"][0]["function"]["name"]
            if body.get("tools") and self.call_tools and not answered
            else None
        )
        if not body.get("stream") and tool:
            call = {
                "id": "call_1",
                "type": "function",
                "function": {"name": tool, "arguments": json.dumps(TOOL_INPUT)},
            }
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            # Text, then the call: as the stream below, and as real models often answer.
                            "message": {
                                "role": "assistant",
                                "content": "".join(pieces),
                                "tool_calls": [call],
                            },
                            "finish_reason": "tool_calls",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                }
            )
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "".join(pieces)},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
                    "service_tier": "default",  # groq/'s parser reads it
                }
            )

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            payload = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                **extra,
            }
            return b"data: " + json.dumps(payload).encode() + b"\n\n"

        events = [chunk({"role": "assistant", "content": ""})]
        events += [chunk({"content": piece}) for piece in pieces]
        if tool:
            arguments = json.dumps(TOOL_INPUT)
            start = {
                "index": 0,
                "id": "call_1",
                "type": "function",
                "function": {"name": tool, "arguments": ""},
            }
            events.append(chunk({"tool_calls": [start]}))
            for piece in (arguments[:10], arguments[10:]):
                events.append(chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}))
        events.append(chunk({}, "tool_calls" if tool else "stop"))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
            events.append(
                b"data: "
                + json.dumps(
                    {
                        "id": "chatcmpl-fake",
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": model,
                        "choices": [],
                        "usage": usage,
                    }
                ).encode()
                + b"\n\n"
            )
        events.append(b"data: [DONE]\n\n")
        return await self._sse(request, events)

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._intercept(request)
        if early is not None:
            return early
        return web.json_response({"input_tokens": 40 + len(json.dumps(body["messages"])) % 7})

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._intercept(request)
        if early is not None:
            return early
        pieces = self._pieces(body)
        model = body.get("model", "claude")
        thinking = bool(body.get("thinking"))
        last = body["messages"][-1].get("content") if body.get("messages") else None
        answered = isinstance(last, list) and any(block.get("type") == "tool_result" for block in last)
        tool = body["tools"][0]["name"] if body.get("tools") and self.call_tools and not answered else None
        tool_input: Any = TOOL_INPUT
        choice = body.get("tool_choice") or {}
        if choice.get("type") == "tool":  # a forced tool is called, as a model does (LiteLLM's JSON mode)
            tool = choice["name"]
            schema = next((t["input_schema"] for t in body.get("tools") or () if t.get("name") == tool), {})
            tool_input = fake_dialects.schema_example(schema)
        usage = {
            "input_tokens": 5,
            "output_tokens": 3,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 4,
        }
        content: list[dict[str, Any]] = []
        if thinking:
            content.append({"type": "thinking", "thinking": "Let me think.", "signature": SIGNATURE})
        content.append({"type": "text", "text": "".join(pieces)})
        if tool:
            content.append({"type": "tool_use", "id": "toolu_1", "name": tool, "input": tool_input})
        stop_reason = "tool_use" if tool else "end_turn"
        if not body.get("stream"):
            return web.json_response(
                {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": stop_reason,
                    "stop_sequence": None,
                    "usage": usage,
                }
            )

        def event(name: str, data: dict[str, Any]) -> bytes:
            return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

        def delta(index: int, payload: dict[str, Any]) -> bytes:
            return event("content_block_delta", {"index": index, "delta": payload})

        start = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 1},
        }
        events = [event("message_start", {"message": start})]
        index = 0
        if thinking:
            events += [
                event(
                    "content_block_start",
                    {"index": index, "content_block": {"type": "thinking", "thinking": ""}},
                ),
                delta(index, {"type": "thinking_delta", "thinking": "Let me think."}),
                delta(index, {"type": "signature_delta", "signature": SIGNATURE}),
                event("content_block_stop", {"index": index}),
            ]
            index += 1
        events.append(
            event("content_block_start", {"index": index, "content_block": {"type": "text", "text": ""}})
        )
        events += [delta(index, {"type": "text_delta", "text": piece}) for piece in pieces]
        events.append(event("content_block_stop", {"index": index}))
        if tool:
            index += 1
            block = {"type": "tool_use", "id": "toolu_1", "name": tool, "input": {}}
            arguments = json.dumps(tool_input)
            events += [
                event("content_block_start", {"index": index, "content_block": block}),
                delta(index, {"type": "input_json_delta", "partial_json": arguments[:10]}),
                delta(index, {"type": "input_json_delta", "partial_json": arguments[10:]}),
                event("content_block_stop", {"index": index}),
            ]
        events += [
            event(
                "message_delta",
                {"delta": {"stop_reason": stop_reason, "stop_sequence": None}, "usage": {"output_tokens": 3}},
            ),
            event("message_stop", {}),
        ]
        return await self._sse(request, events)

    async def responses(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._intercept(request)
        if early is not None:
            return early
        pieces = self._pieces(body)
        model = body.get("model", "m")
        # A tool is called once: after its output comes back (the last input item), the answer is text.
        items = body.get("input") if isinstance(body.get("input"), list) else []
        answered = bool(items) and items[-1].get("type") == "function_call_output"
        tools = [tool for tool in body.get("tools") or [] if tool.get("type") == "function"]
        call = (
            (tools[0]["name"], json.dumps(TOOL_INPUT)) if tools and self.call_tools and not answered else None
        )
        if not body.get("stream"):
            return web.json_response(fake_dialects.response_object(model, "".join(pieces), call=call))
        return await self._sse(request, fake_dialects.response_events(model, pieces, call))

    async def gemini(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._intercept(request)
        if early is not None:
            return early
        pieces = self._pieces(body)
        # A function is called once: after its response comes back (the last content), the answer is text.
        last = (body.get("contents") or [{}])[-1].get("parts") or []
        answered = any("functionResponse" in part for part in last)
        declared = [d for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()]
        call = (declared[0]["name"], TOOL_INPUT) if declared and self.call_tools and not answered else None
        if request.match_info["action"].endswith(":generateContent"):
            return web.json_response(fake_dialects.gemini_chunk("".join(pieces), "STOP", call=call))
        return await self._sse(request, fake_dialects.gemini_events(pieces, call))

    async def ollama(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._intercept(request)
        if early is not None:
            return early
        model = body.get("model", "m")
        if body.get("stream") is False:
            return web.json_response(fake_dialects.ollama_done(model, "".join(self.reply)))
        return await self._sse(request, fake_dialects.ollama_lines(model, self.reply), "application/x-ndjson")

    async def bedrock(self, request: web.Request) -> web.StreamResponse:
        _, early = await self._intercept(request)
        if early is not None:
            return early
        if request.match_info["operation"] == "converse":
            return web.json_response(fake_dialects.converse_body("".join(self.reply)))
        frames = fake_dialects.converse_frames(self.reply)
        return await self._sse(request, frames, "application/vnd.amazon.eventstream")

    async def cohere(self, request: web.Request) -> web.StreamResponse:
        body, early = await self._intercept(request)
        if early is not None:
            return early
        if not body.get("stream"):
            return web.json_response(fake_dialects.cohere_body("".join(self.reply)))
        return await self._sse(request, fake_dialects.cohere_lines(self.reply), "application/x-ndjson")


def main(argv: list[str] | None = None) -> None:
    """``python -m tests.fake_upstream --port N``: the fake upstream as its own process (benchmarks, load)."""
    import argparse

    parser = argparse.ArgumentParser(prog="fake_upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--chunks", type=int, default=20, help="text chunks per streamed answer")
    parser.add_argument(
        "--gate", action="store_true", help="answer 503 + Set-Cookie until cf_clearance is sent"
    )
    parser.add_argument(
        "--chaos", type=float, default=0.0, help="share of requests challenged, throttled or cut"
    )
    args = parser.parse_args(argv)
    reply = [f"tok{i} " for i in range(args.chunks)]
    fake = FakeUpstream(gate=args.gate, reply=reply, record=False, chaos=args.chaos)
    web.run_app(fake.app(), host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
