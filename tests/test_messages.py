"""/v1/messages for Claude Code: the anthropic SDK as the client, LiteLLM for real, a fake upstream."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from aiohttp_memproxy import logs
from aiohttp_memproxy.config.settings import Settings
from tests.conftest import SM_KEY, UPSTREAM_KEY, AppClient, LogLines
from tests.fake_upstream import CLEARANCE, SIGNATURE, TOOL_INPUT, FakeUpstream, Scripted

BETAS = "claude-code-20250219,interleaved-thinking-2025-05-14,fine-grained-tool-streaming-2025-05-14"
CLAUDE_CODE_HEADERS = {
    "User-Agent": "claude-cli/2.1.328 (external, sdk-cli)",
    "anthropic-version": "2023-06-01",
    "anthropic-beta": BETAS,
    "x-claude-code-session-id": "sess-42",
}
TOOLS: list[dict[str, Any]] = [
    {
        "name": "get_weather",
        "description": "Weather for a city",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    }
]
THINKING = {"type": "enabled", "budget_tokens": 1024}
MESSAGES = [{"role": "user", "content": "Weather in Paris?"}]


def sdk(client: TestClient[web.Request, web.Application], **headers: str) -> anthropic.AsyncAnthropic:
    return anthropic.AsyncAnthropic(
        base_url=str(client.make_url("")),
        api_key="unused",
        max_retries=0,
        default_headers={"anthropic-version": "2023-06-01", "anthropic-beta": BETAS, **headers},
    )


def events_of(text: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in lines:
            found.append((lines["event"], json.loads(lines["data"])))
    return found


def assert_anthropic_error(body: dict[str, Any], error_type: str) -> None:
    assert body == {"type": "error", "error": {"type": error_type, "message": body["error"]["message"]}}
    for secret in (UPSTREAM_KEY, SM_KEY, "http://", "Traceback", "litellm."):
        assert secret not in body["error"]["message"]


async def test_sdk_plain_and_streaming_with_tools_and_thinking_through_the_gate(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    fake.gate = True
    client = await app_client(gateway_settings())
    async with sdk(client) as claude:
        message = await claude.messages.create(
            model="claude-up",
            max_tokens=2048,
            messages=MESSAGES,
            tools=TOOLS,
            thinking=THINKING,  # type: ignore[arg-type]
        )
        assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
        assert message.content[0].signature == SIGNATURE  # type: ignore[union-attr]
        assert message.content[2].input == TOOL_INPUT  # type: ignore[union-attr]
        assert message.stop_reason == "tool_use"

        async with claude.messages.stream(
            model="claude-up",
            max_tokens=2048,
            messages=MESSAGES,
            tools=TOOLS,
            thinking=THINKING,  # type: ignore[arg-type]
        ) as stream:
            final = await stream.get_final_message()
        assert [block.type for block in final.content] == ["thinking", "text", "tool_use"]
        assert final.content[0].signature == SIGNATURE  # type: ignore[union-attr]
        assert final.content[1].text == "Hello from upstream"  # type: ignore[union-attr]
        assert final.content[2].input == TOOL_INPUT  # type: ignore[union-attr]
        assert final.usage.output_tokens == 3

        counted = await claude.messages.count_tokens(model="claude-up", messages=MESSAGES)  # type: ignore[arg-type]
        assert counted.input_tokens >= 40
    # One challenge, answered before the client saw anything; every later request carried the cookie.
    assert fake.challenges == 1
    assert fake.with_cookie == [False, True, True, True]
    for seen in fake.seen:
        assert seen.headers["anthropic-version"] == "2023-06-01"
        assert seen.headers["anthropic-beta"] == BETAS  # byte-exact, order kept
        assert seen.headers["x-api-key"] == UPSTREAM_KEY
    assert [seen.path for seen in fake.seen[1:]] == [
        "/v1/messages",
        "/v1/messages",
        "/v1/messages/count_tokens",
    ]


async def test_stream_is_relayed_byte_for_byte(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    _, url = upstream
    client = await app_client(gateway_settings())
    body = {
        "model": "claude-up",
        "max_tokens": 100,
        "messages": MESSAGES,
        "stream": True,
        "tools": TOOLS,
        "thinking": THINKING,
    }
    proxied = await client.post("/v1/messages", json=body, headers=CLAUDE_CODE_HEADERS)
    assert proxied.status == 200
    assert proxied.headers["Content-Type"] == "text/event-stream"
    via_proxy = await proxied.read()
    # The same request straight to the upstream, model name as the proxy sends it.
    async with client.session.post(f"{url}/v1/messages", json={**body, "model": "claude-up"}) as direct:
        assert await direct.read() == via_proxy


async def test_claude_code_shaped_request_round_trips(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    client = await app_client(gateway_settings())
    body = {
        "model": "claude-memory",
        "max_tokens": 32000,
        "system": [
            {"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}},
            {"type": "text", "text": "Project context " * 2000},
        ],
        "messages": [
            {
                "role": "user",
                "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}],
            }
        ],
        "tools": TOOLS,
        "metadata": {"user_id": "user_abc_account__session_sess-42"},
    }
    for stream in (False, True):
        response = await client.post(
            "/v1/messages?beta=true", json={**body, "stream": stream}, headers=CLAUDE_CODE_HEADERS
        )
        assert response.status == 200, await response.text()
        if stream:
            names = [name for name, _ in events_of(await response.text())]
            assert names[0] == "message_start"
            assert names[-1] == "message_stop"
        else:
            assert (await response.json())["content"][-1]["type"] == "tool_use"
        sent = fake.seen[-1]
        assert sent.headers["x-sm-user-id"] == "claude-code"
        assert sent.headers["x-sm-conversation-id"] == "sess-42"
        assert sent.headers["x-supermemory-api-key"] == SM_KEY
        assert sent.headers["anthropic-beta"] == BETAS
        assert sent.body["system"][0]["cache_control"] == {"type": "ephemeral"}
        assert sent.body["messages"][0]["content"][0]["cache_control"] == {"type": "ephemeral"}
        assert sent.body["metadata"] == body["metadata"]
    # ANTHROPIC_CUSTOM_HEADERS="x-memory-user-id: alice" overrides the User-Agent pattern.
    response = await client.post(
        "/v1/messages?beta=true", json=body, headers={**CLAUDE_CODE_HEADERS, "x-memory-user-id": "alice"}
    )
    assert response.status == 200
    assert fake.seen[-1].headers["x-sm-user-id"] == "alice"
    # A non-Supermemory model never gets a user id.
    response = await client.post(
        "/v1/messages", json={**body, "model": "claude-up"}, headers=CLAUDE_CODE_HEADERS
    )
    assert response.status == 200
    assert "x-sm-user-id" not in fake.seen[-1].headers
    assert "x-supermemory-api-key" not in fake.seen[-1].headers


@pytest.mark.parametrize("model", ["gpt-up", "vllm-up"])
async def test_translation_to_openai_upstream_with_tools(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    model: str,
) -> None:
    fake, _ = upstream
    fake.gate = True
    client = await app_client(gateway_settings())
    async with sdk(client) as claude:
        message = await claude.messages.create(model=model, max_tokens=100, messages=MESSAGES, tools=TOOLS)  # type: ignore[arg-type]
        tool_use = [block for block in message.content if block.type == "tool_use"]
        assert tool_use[0].name == "get_weather"  # type: ignore[union-attr]
        assert tool_use[0].input == TOOL_INPUT  # type: ignore[union-attr]
        async with claude.messages.stream(
            model=model, max_tokens=100, messages=MESSAGES, tools=TOOLS
        ) as stream:  # type: ignore[arg-type]
            final = await stream.get_final_message()
    assert final.stop_reason == "tool_use"
    texts = [block.text for block in final.content if block.type == "text"]  # type: ignore[union-attr]
    assert "".join(texts) == "Hello from upstream"
    tool_use = [block for block in final.content if block.type == "tool_use"]
    assert tool_use[0].name == "get_weather"  # type: ignore[union-attr]
    assert tool_use[0].input == TOOL_INPUT  # type: ignore[union-attr]
    assert fake.seen[-1].path == "/v1/chat/completions"
    assert "anthropic-beta" not in fake.seen[-1].headers  # Anthropic headers stay with Anthropic upstreams
    assert fake.challenges == 1
    assert fake.with_cookie[1:] == [True, True]


async def test_well_formed_event_sequence_from_translation(
    app_client: AppClient, gateway_settings: Callable[..., Settings]
) -> None:
    client = await app_client(gateway_settings())
    body = {"model": "gpt-up", "max_tokens": 100, "messages": MESSAGES, "tools": TOOLS, "stream": True}
    response = await client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    events = events_of(await response.text())
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    open_blocks: set[int] = set()
    for name, data in events:
        if name == "content_block_start":
            open_blocks.add(data["index"])
        elif name == "content_block_delta":
            assert data["index"] in open_blocks
        elif name == "content_block_stop":
            open_blocks.remove(data["index"])
    assert not open_blocks
    assert any(d.get("content_block", {}).get("type") == "tool_use" for _, d in events)
    assert events[-2][1]["usage"]["output_tokens"] == 3


async def test_count_tokens_locally_for_other_upstreams(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    client = await app_client(gateway_settings())
    response = await client.post("/v1/messages/count_tokens", json={"model": "gpt-up", "messages": MESSAGES})
    assert response.status == 200
    assert (await response.json())["input_tokens"] > 0
    assert fake.seen == []  # counted here, not upstream


COUNTED_TOOL: dict[str, Any] = {
    "name": "get_weather",
    "description": "The current weather of a city, with its temperature and the sky. " * 4,
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "the city's name"}},
        "required": ["city"],
    },
}
COUNTED_SYSTEM = "You are a careful coding agent; answer briefly and cite the files you read. " * 4


async def test_count_tokens_here_counts_what_the_model_will_see(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    """Counted for a non-Anthropic model: a tool or a system prompt (string or blocks) raises the count by
    about its size; tool calls and their results count; nothing is sent upstream."""
    fake, _ = upstream
    client = await app_client(gateway_settings())
    async with sdk(client) as claude:

        async def count(**extra: Any) -> int:
            base: dict[str, Any] = {"model": "gpt-up", "messages": MESSAGES}
            counted = await claude.messages.count_tokens(**{**base, **extra})
            return counted.input_tokens

        plain = await count()
        tools = await count(tools=[COUNTED_TOOL])
        system = await count(system=COUNTED_SYSTEM)
        blocks = await count(system=[{"type": "text", "text": COUNTED_SYSTEM}])
        conversation = await count(
            messages=[
                {"role": "user", "content": "Weather in Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Let me look."},
                        {"type": "tool_use", "id": "t1", "name": "get_weather", "input": {"city": "Paris"}},
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t1", "content": "sunny, 20 C. " * 20}
                    ],
                },
            ],
            tools=[COUNTED_TOOL],
        )
    # ~4 characters a token: each addition counts about its size, never nothing.
    assert tools - plain >= len(json.dumps(COUNTED_TOOL)) // 8
    assert system - plain >= len(COUNTED_SYSTEM) // 8
    assert blocks == system  # a system prompt counts the same as a string or as blocks
    assert conversation - tools >= len("sunny, 20 C. " * 20) // 8
    assert fake.seen == []  # counted here


async def test_the_litellm_proxy_anthropic_prefix_serves_messages_and_count_tokens(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    """Users who followed LiteLLM's docs set ANTHROPIC_BASE_URL=<proxy>/anthropic: the same routes."""
    fake, _ = upstream
    fake.gate = True
    client = await app_client(gateway_settings())
    claude = anthropic.AsyncAnthropic(
        base_url=str(client.make_url("/anthropic")), api_key="unused", max_retries=0
    )
    try:
        message = await claude.messages.create(model="claude-up", max_tokens=64, messages=MESSAGES)
        assert message.content[0].text == "Hello from upstream"  # type: ignore[union-attr]
        async with claude.messages.stream(model="claude-up", max_tokens=64, messages=MESSAGES) as stream:
            assert (await stream.get_final_message()).content[0].text == "Hello from upstream"  # type: ignore[union-attr]
        counted = await claude.messages.count_tokens(model="claude-up", messages=MESSAGES)
        assert counted.input_tokens > 0
        with pytest.raises(anthropic.BadRequestError):  # errors in Anthropic's shape there too
            await claude.messages.create(model="claude-up", max_tokens=0, messages=MESSAGES)
    finally:
        await claude.close()
    assert {seen.path for seen in fake.seen} == {"/v1/messages", "/v1/messages/count_tokens"}


async def test_event_logging_batch(app_client: AppClient, gateway_settings: Callable[..., Settings]) -> None:
    client = await app_client(gateway_settings())
    response = await client.post("/api/event_logging/batch", json={"events": [{"name": "x"}]})
    assert (response.status, await response.json()) == (200, {"status": "ok"})


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        (b"{bad", 400, "invalid_request_error"),
        (json.dumps({"model": "claude-up", "messages": MESSAGES}).encode(), 400, "invalid_request_error"),
        (
            json.dumps({"model": "nope", "max_tokens": 5, "messages": MESSAGES}).encode(),
            404,
            "not_found_error",
        ),
        (
            json.dumps({"model": "off", "max_tokens": 5, "messages": MESSAGES}).encode(),
            503,
            "overloaded_error",
        ),
        (
            json.dumps(
                {"model": "claude-up", "max_tokens": 5, "messages": MESSAGES, "x": "a" * 2**20}
            ).encode(),
            413,
            "request_too_large",
        ),
    ],
)
async def test_request_errors_in_anthropic_shape(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    body: bytes,
    status: int,
    error_type: str,
) -> None:
    client = await app_client(gateway_settings())
    response = await client.post(
        "/v1/messages", data=io.BytesIO(body), headers={"Content-Type": "application/json"}
    )
    assert response.status == status
    assert_anthropic_error(await response.json(), error_type)


@pytest.mark.parametrize(
    ("scripted", "status", "error_type"),
    [
        (
            Scripted(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "bad"}}),
            400,
            "invalid_request_error",
        ),
        (
            Scripted(401, {"type": "error", "error": {"type": "authentication_error", "message": "key"}}),
            401,
            "authentication_error",
        ),
        (
            Scripted(403, {"type": "error", "error": {"type": "permission_error", "message": "no"}}),
            403,
            "permission_error",
        ),
        (
            Scripted(
                429,
                {"type": "error", "error": {"type": "rate_limit_error", "message": "slow"}},
                {"Retry-After": "120"},
            ),
            429,
            "rate_limit_error",
        ),
        (
            Scripted(500, {"type": "error", "error": {"type": "api_error", "message": "boom"}}),
            500,
            "api_error",
        ),
        (Scripted(502, "<html>bad gateway</html>"), 502, "api_error"),
        (
            Scripted(529, {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}),
            503,
            "overloaded_error",
        ),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_upstream_errors_before_headers(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    scripted: Scripted,
    status: int,
    error_type: str,
    stream: bool,
) -> None:
    fake, _ = upstream
    fake.script = [scripted] * 3
    client = await app_client(gateway_settings())
    body = {"model": "claude-up", "max_tokens": 5, "messages": MESSAGES, "stream": stream}
    response = await client.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status == status, await response.text()
    assert_anthropic_error(await response.json(), error_type)
    if status == 429:
        assert response.headers["Retry-After"] == "120"


async def test_unreachable_and_timeout(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    fake.delay_s = 2
    client = await app_client(gateway_settings(read_timeout_s=0.2))
    body = {"model": "claude-up", "max_tokens": 5, "messages": MESSAGES}
    response = await client.post("/v1/messages", json=body)
    assert response.status == 504
    assert_anthropic_error(await response.json(), "api_error")
    response = await client.post("/v1/messages", json={**body, "model": "nowhere"})
    assert response.status == 502
    assert_anthropic_error(await response.json(), "api_error")


@pytest.mark.parametrize("model", ["claude-up", "gpt-up"])
async def test_error_after_headers_is_an_error_event(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    model: str,
) -> None:
    fake, _ = upstream
    fake.cut_after = 3
    client = await app_client(gateway_settings())
    body = {"model": model, "max_tokens": 5, "messages": MESSAGES, "stream": True}
    response = await client.post("/v1/messages", json=body)
    assert response.status == 200
    events = events_of(await response.text())
    assert events[-1][0] == "error"
    assert_anthropic_error(events[-1][1], "api_error")
    assert "message_stop" not in [name for name, _ in events]
    assert CLEARANCE not in json.dumps(events)


async def test_demo_model_speaks_messages_too(
    app_client: AppClient, make_settings: Callable[..., Settings]
) -> None:
    client = await app_client(make_settings())
    async with sdk(client) as claude:
        message = await claude.messages.create(model="demo", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
        assert message.content[0].text == "hi"  # type: ignore[union-attr]
        async with claude.messages.stream(model="demo", max_tokens=10, messages=MESSAGES) as stream:  # type: ignore[arg-type]
            final = await stream.get_final_message()
        assert final.content[0].text == "hi"  # type: ignore[union-attr]
        assert final.stop_reason == "end_turn"


async def test_claude_code_dated_ids_resolve(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    client = await app_client(gateway_settings())
    body = {"model": "claude-up-20250929", "max_tokens": 5, "messages": MESSAGES}
    response = await client.post("/v1/messages?beta=true", json=body, headers=CLAUDE_CODE_HEADERS)
    assert response.status == 200
    assert fake.seen[-1].body["model"] == "claude-up"


async def test_models_no_price_map_knows_log_no_errors(
    app_client: AppClient, gateway_settings: Callable[..., Settings], log_lines: LogLines
) -> None:
    """The fake's models are in no LiteLLM price map. LiteLLM's own bookkeeping after each call must not log
    an error for that (it did, with a traceback, after every Messages stream) nor write outside our format."""
    client = await app_client(gateway_settings())
    for stream in (False, True):
        for path, model in (("/v1/messages", "claude-up"), ("/v1/chat/completions", "vllm-up")):
            body = {"model": model, "max_tokens": 64, "messages": MESSAGES, "stream": stream}
            response = await client.post(path, json=body, headers={"anthropic-version": "2023-06-01"})
            assert response.status == 200
            await response.read()
    await asyncio.sleep(1)  # LiteLLM logs a finished stream from its background worker
    assert len(log_lines.named("request")) == 4
    assert [line for line in log_lines.events if line.get("level") in ("error", "critical")] == []
    assert "Traceback" not in log_lines.text
    for name in logs.QUIET_LOGGERS:  # LiteLLM's own plain-text handlers are gone: one format, once
        assert logging.getLogger(name).handlers == []
