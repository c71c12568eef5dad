"""Claude Code to any model: its real first request (tests/claude_code.py), its own model id aliased to a
non-Anthropic model as claude-code-router users do, plain and streaming, through the cookie gate. What the
target cannot take is dropped or mapped, never a failure."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from aiohttp_memproxy.config.settings import Settings
from tests import claude_code
from tests.conftest import UPSTREAM_KEY, AppClient, base_config
from tests.fake_upstream import FakeUpstream
from tests.test_messages import events_of

CLAUDE_ID = "claude-sonnet-4-5-20250929"


# (litellm_params model, api_base suffix, upstream path plain, upstream path stream)
TARGETS: dict[str, tuple[str, str, str, str]] = {
    # An OpenAI reasoning model: LiteLLM maps thinking to reasoning effort on the Responses API.
    "openai-reasoning": ("openai/gpt-5", "/v1", "/v1/responses", "/v1/responses"),
    # An OpenAI-compatible server LiteLLM does not know: chat completions, which every such server speaks.
    "openai-compatible-unknown": (
        "openai/local-coder-32b",
        "/v1",
        "/v1/chat/completions",
        "/v1/chat/completions",
    ),
    "gemini": (
        "gemini/gemini-2.5-pro",
        "/v1beta",
        "/v1beta/models/gemini-2.5-pro:generateContent",
        "/v1beta/models/gemini-2.5-pro:streamGenerateContent",
    ),
    "responses-only": ("openai/gpt-5-codex", "/v1", "/v1/responses", "/v1/responses"),
}


def aliased_settings(make_settings: Callable[..., Settings], url: str, target: str) -> Settings:
    model, base, _, _ = TARGETS[target]
    return make_settings(
        base_config(
            model_list=[
                {
                    "model_name": "target",
                    "litellm_params": {"model": model, "api_base": url + base, "api_key": UPSTREAM_KEY},
                }
            ],
            router_settings={"model_group_alias": {CLAUDE_ID: "target"}},
            memproxy={"retry_base_delay_s": 0},
        )
    )


def streamed_text(events: list[tuple[str, dict[str, Any]]]) -> str:
    names = [name for name, _ in events]
    assert names[0] == "message_start", names
    assert names[-1] == "message_stop", names
    assert "error" not in names, events
    return "".join(
        data["delta"].get("text", "")
        for name, data in events
        if name == "content_block_delta" and data["delta"]["type"] == "text_delta"
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("target", list(TARGETS))
async def test_claude_code_first_request_to_any_model(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    target: str,
    stream: bool,
) -> None:
    fake, url = upstream
    fake.gate = True
    client = await app_client(aliased_settings(make_settings, url, target))
    for _ in range(2):
        response = await client.post(
            claude_code.PATH, json=claude_code.first_request(CLAUDE_ID, stream), headers=claude_code.HEADERS
        )
        body = await response.text()
        assert response.status == 200, body
        if stream:
            assert response.headers["Content-Type"].startswith("text/event-stream")
            assert streamed_text(events_of(body)) == "Hello from upstream"
        else:
            message = json.loads(body)
            assert message["type"] == "message"
            assert message["role"] == "assistant"
            text = "".join(block["text"] for block in message["content"] if block["type"] == "text")
            assert text == "Hello from upstream"

    _, _, plain_path, stream_path = TARGETS[target]
    assert {seen.path for seen in fake.seen} == {stream_path if stream else plain_path}
    assert fake.challenges == 1
    assert fake.with_cookie == [False, True, True]
    sent = fake.seen[-1].body
    # Anthropic's own fields never reach another provider as such.
    for field in ("thinking", "context_management", "metadata", "anthropic_version"):
        assert field not in sent, field
    assert "anthropic-beta" not in fake.seen[-1].headers
    assert claude_code.HEADERS["x-claude-code-session-id"] not in json.dumps(sent)  # metadata.user_id stayed
    if target in ("openai-reasoning", "responses-only"):
        assert sent["reasoning"]["effort"] == "high"  # thinking, mapped (budget 31999)
    if target == "openai-compatible-unknown":
        assert "reasoning_effort" not in sent
        assert len(sent["tools"]) == len(claude_code.TOOL_NAMES)
    if target == "gemini":
        assert sent["generationConfig"]["thinkingConfig"]["includeThoughts"] is True
        assert len(sent["tools"][0]["function_declarations"]) == len(claude_code.TOOL_NAMES)
        assert "$schema" not in json.dumps(sent["tools"])  # Gemini refuses JSON-schema keys it lacks


async def test_unknown_openai_model_declared_reasoning_keeps_thinking(
    app_client: AppClient, make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    """model_info.supports_reasoning: true is the user's word that an unknown model reasons: thinking goes
    through as LiteLLM sends it for OpenAI reasoning models."""
    fake, url = upstream
    doc = base_config(
        model_list=[
            {
                "model_name": "target",
                "litellm_params": {"model": "openai/local-reasoner", "api_base": f"{url}/v1", "api_key": "k"},
                "model_info": {"supports_reasoning": True},
            }
        ]
    )
    client = await app_client(make_settings(doc))
    response = await client.post(
        claude_code.PATH, json=claude_code.first_request("target", False), headers=claude_code.HEADERS
    )
    assert response.status == 200, await response.text()
    assert fake.seen[-1].path == "/v1/responses"
    assert fake.seen[-1].body["reasoning"]["effort"] == "high"
