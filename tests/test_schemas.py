"""Bad input at the edge: every route checks its body against the official SDK's request type and answers a
400 in the client's dialect that names the field, before LiteLLM or any upstream sees it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from aiohttp_memproxy.config.settings import Settings
from tests import claude_code
from tests.conftest import AppClient
from tests.fake_upstream import FakeUpstream
from tests.test_chat_errors import assert_openai_error
from tests.test_messages import assert_anthropic_error

USER = [{"role": "user", "content": "hi"}]
CHAT = {"model": "gpt-up", "messages": USER}
MESSAGES = {"model": "claude-up", "max_tokens": 10, "messages": USER}
RESPONSES = {"model": "gpt-up", "input": "hi"}
PATHS = {
    "chat": "/v1/chat/completions",
    "messages": "/v1/messages",
    "count_tokens": "/v1/messages/count_tokens",
    "responses": "/v1/responses",
}

CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # (route, body, param, message)
    ("chat", {**CHAT, "messages": [1, 2]}, "messages", "messages[0]: Input should be a valid dictionary"),
    ("chat", {**CHAT, "messages": [{"content": "hi"}]}, "messages", "messages[0].role: Field required"),
    ("chat", {**CHAT, "max_tokens": "many"}, "max_tokens", "max_tokens: Input should be a valid integer"),
    ("chat", {**CHAT, "n": "two"}, "n", "n: Input should be a valid integer"),
    ("chat", {**CHAT, "stop": [1, 2]}, "stop", "stop[0]: Input should be a valid string"),
    ("chat", {**CHAT, "metadata": 3}, "metadata", "metadata: Input should be a valid dictionary"),
    ("chat", {**CHAT, "stream": "yes"}, "stream", "stream: expected a boolean"),
    ("chat", {**CHAT, "temperature": "hot"}, "temperature", "temperature: Input should be a valid number"),
    (
        "chat",
        {**CHAT, "messages": [{"role": "user", "content": [{"type": "weird"}]}]},
        "messages",
        "messages[0].content[0].",
    ),
    ("chat", {**CHAT, "tools": "none"}, "tools", "tools[0]: Input should be a valid dictionary"),
    ("messages", {**MESSAGES, "metadata": "x"}, "metadata", "metadata: Input should be a valid dictionary"),
    (
        "messages",
        {**MESSAGES, "messages": [3]},
        "messages",
        "messages[0]: Input should be a valid dictionary",
    ),
    (
        "messages",
        {**MESSAGES, "messages": [{"content": "hi"}]},
        "messages",
        "messages[0].role: Field required",
    ),
    ("messages", {**MESSAGES, "stream": 1}, "stream", "stream: expected a boolean"),
    ("messages", {**MESSAGES, "tools": [1]}, "tools", "tools[0]: Input should be a valid dictionary"),
    (
        "messages",
        {**MESSAGES, "tool_choice": {"type": 7}},
        "tool_choice",
        "tool_choice.type: Input should be",
    ),
    (
        "messages",
        {**MESSAGES, "thinking": {"type": "enabled", "budget_tokens": "lots"}},
        "thinking",
        "thinking.budget_tokens: Input should be a valid integer",
    ),
    ("messages", {**MESSAGES, "stop_sequences": [1]}, "stop_sequences", "stop_sequences[0]: Input should be"),
    ("count_tokens", {"model": "claude-up", "messages": [5]}, "messages", "messages[0]: Input should be"),
    (
        "count_tokens",
        {"model": "gpt-up", "messages": [{"role": "user"}]},
        "messages",
        "messages[0].content: Field required",
    ),
    ("responses", {**RESPONSES, "max_output_tokens": "x"}, "max_output_tokens", "max_output_tokens: Input"),
    ("responses", {**RESPONSES, "input": [7]}, "input", "input[0]: Input should be"),
    ("responses", {**RESPONSES, "store": "no"}, "store", "store: Input should be a valid boolean"),
]


@pytest.mark.parametrize(("route", "body", "param", "message"), CASES)
async def test_bad_input_is_a_400_naming_the_field(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    route: str,
    body: dict[str, Any],
    param: str,
    message: str,
) -> None:
    fake, _ = upstream
    client = await app_client(gateway_settings())
    response = await client.post(PATHS[route], json=body, headers={"anthropic-version": "2023-06-01"})
    assert response.status == 400, await response.text()
    if route in ("messages", "count_tokens"):
        error = (await response.json())["error"]
        assert_anthropic_error(await response.json(), "invalid_request_error")
    else:
        error = assert_openai_error(await response.json(), "invalid_request_error")
        assert error["param"] == param
    assert error["message"].startswith(message), error["message"]
    assert fake.seen == []  # refused at the edge: nothing reached LiteLLM, let alone the upstream


async def test_the_real_clients_shapes_pass(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    """What Claude Code and the SDKs really send is accepted (LiteLLM's extensions and newer fields too)."""
    client = await app_client(gateway_settings())
    first = claude_code.first_request("claude-up", stream=False)
    response = await client.post(claude_code.PATH, json=first, headers=claude_code.HEADERS)
    assert response.status == 200, await response.text()
    chat = {**CHAT, "thinking": {"type": "enabled", "budget_tokens": 1024}, "top_k": 5, "some_new_field": 1}
    assert (await client.post(PATHS["chat"], json=chat)).status == 200
    # Codex's second turn: items as it serializes them (no ids, reasoning with content null, an image
    # without detail), newer or looser than the SDK's types; the upstream judges those.
    turn_two = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
        {"type": "reasoning", "summary": [], "content": None, "encrypted_content": "gAAAA"},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Hello"}]},
        {"type": "function_call", "name": "exec_command", "arguments": "{}", "call_id": "call_1"},
        {"type": "function_call_output", "call_id": "call_1", "output": "ok"},
        {"type": "message", "role": "user", "content": [{"type": "input_image", "image_url": "data:x"}]},
        {"type": "local_shell_call", "call_id": "c2", "status": "completed", "action": {"type": "exec"}},
    ]
    codex = {
        **RESPONSES,
        "input": turn_two,
        "tools": [{"type": "web_search"}, {"type": "custom", "name": "x"}],
    }
    response = await client.post(PATHS["responses"], json=codex)
    assert response.status == 200, await response.text()
    # A content block newer than the locked SDK passes to the upstream, which judges it.
    block = {**MESSAGES, "messages": [{"role": "user", "content": [{"type": "brand_new_block", "x": 1}]}]}
    response = await client.post(PATHS["messages"], json=block, headers={"anthropic-version": "2023-06-01"})
    assert response.status == 200, await response.text()


async def test_an_error_never_echoes_the_clients_own_keys(
    app_client: AppClient, gateway_settings: Callable[..., Settings]
) -> None:
    client = await app_client(gateway_settings())
    response = await client.post(PATHS["chat"], json={**CHAT, "metadata": {"<script>alert(1)</script>": 5}})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["message"].startswith("metadata.*: Input should be a valid string")
    assert "script" not in error["message"]
