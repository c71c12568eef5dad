"""The upstream's own error message reaches the client, in the client's dialect, with the status and type as
before, and without a secret the gateway knows (a key the upstream echoes), a URL, or LiteLLM's words."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest

from aiohttp_memproxy.config.settings import ModelConfig, Settings
from aiohttp_memproxy.llm.upstream_message import MAX_LENGTH, said, secrets_of
from tests.conftest import SM_KEY, UPSTREAM_KEY, AppClient, base_config, models_at
from tests.fake_upstream import FakeUpstream, Scripted

TOO_LONG = "prompt is too long: 210000 tokens > 200000 maximum"
ANTHROPIC_400 = {"type": "error", "error": {"type": "invalid_request_error", "message": TOO_LONG}}
OPENAI_400 = {"error": {"message": TOO_LONG, "type": "invalid_request_error", "code": None}}
ECHOED = f"invalid x-api-key {UPSTREAM_KEY} (see https://upstream.example/keys?k={UPSTREAM_KEY})"
MESSAGES: Any = [{"role": "user", "content": "hi"}]


def shown(message: str) -> str:
    for forbidden in (UPSTREAM_KEY, SM_KEY, "https://", "litellm.", "Exception", "Traceback"):
        assert forbidden not in message, message
    return message


@pytest.fixture
def settings(make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]) -> Settings:
    _, url = upstream
    return make_settings(base_config(model_list=models_at(url), memproxy={"retry_base_delay_s": 0}))


@pytest.mark.parametrize(("model", "body"), [("gpt-up", OPENAI_400), ("claude-up", ANTHROPIC_400)])
async def test_chat_completions_pass_the_upstreams_message_on(
    app_client: AppClient,
    settings: Settings,
    upstream: tuple[FakeUpstream, str],
    model: str,
    body: dict[str, Any],
) -> None:
    fake, _ = upstream
    client = await app_client(settings)
    gpt = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)

    async def ask(stream: bool) -> None:
        answer = await gpt.chat.completions.create(model=model, messages=MESSAGES, stream=stream)
        if stream:
            async for _ in answer:  # type: ignore[union-attr]
                pass

    try:
        for stream in (False, True):
            fake.script = [Scripted(400, body)]
            with pytest.raises(openai.BadRequestError) as caught:
                await ask(stream)
            error = caught.value.body
            assert isinstance(error, dict)
            assert error["type"] == "invalid_request_error"
            assert TOO_LONG in shown(error["message"])
            assert error["message"].startswith(f"model {model!r}: ")  # where it happened, then the upstream
    finally:
        await gpt.close()


@pytest.mark.parametrize(("model", "body"), [("claude-up", ANTHROPIC_400), ("gpt-up", OPENAI_400)])
async def test_messages_pass_the_upstreams_message_on(
    app_client: AppClient,
    settings: Settings,
    upstream: tuple[FakeUpstream, str],
    model: str,
    body: dict[str, Any],
) -> None:
    """Claude Code tells its user to /compact when the message says the prompt is too long."""
    fake, _ = upstream
    client = await app_client(settings)
    claude = anthropic.AsyncAnthropic(base_url=str(client.make_url("")), api_key="unused", max_retries=0)
    try:
        fake.script = [Scripted(400, body)]
        with pytest.raises(anthropic.BadRequestError) as caught:
            await claude.messages.create(model=model, max_tokens=64, messages=MESSAGES)
        error = caught.value.body
        assert isinstance(error, dict)
        assert error["error"]["type"] == "invalid_request_error"
        assert TOO_LONG in shown(error["error"]["message"])
        fake.script = [Scripted(400, body)]
        with pytest.raises(anthropic.BadRequestError) as streamed:
            async with claude.messages.stream(model=model, max_tokens=64, messages=MESSAGES) as stream:
                await stream.get_final_message()
        assert TOO_LONG in shown(streamed.value.body["error"]["message"])  # type: ignore[index]
    finally:
        await claude.close()


@pytest.mark.parametrize(("model", "body"), [("gpt-up", OPENAI_400), ("claude-up", ANTHROPIC_400)])
async def test_responses_pass_the_upstreams_message_on(
    app_client: AppClient,
    settings: Settings,
    upstream: tuple[FakeUpstream, str],
    model: str,
    body: dict[str, Any],
) -> None:
    fake, _ = upstream
    client = await app_client(settings)
    gpt = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
    try:
        fake.script = [Scripted(400, body)]
        with pytest.raises(openai.BadRequestError) as caught:
            await gpt.responses.create(model=model, input="hi")
        error = caught.value.body
        assert isinstance(error, dict)
        assert TOO_LONG in shown(error["message"])
    finally:
        await gpt.close()


@pytest.mark.parametrize("model", ["gpt-up", "claude-up"])
async def test_a_key_the_upstream_echoes_never_reaches_the_client(
    app_client: AppClient, settings: Settings, upstream: tuple[FakeUpstream, str], model: str
) -> None:
    fake, _ = upstream
    client = await app_client(settings)
    gpt = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
    try:
        fake.script = [Scripted(401, {"error": {"message": ECHOED, "type": "authentication_error"}})]
        with pytest.raises(openai.AuthenticationError) as caught:
            await gpt.chat.completions.create(model=model, messages=MESSAGES)
        error = caught.value.body
        assert isinstance(error, dict)
        assert error["code"] == "upstream_authentication"
        message = shown(error["message"])
        assert "invalid x-api-key [redacted] (see [url])" in message
    finally:
        await gpt.close()


def test_the_message_is_bounded_and_every_known_secret_goes() -> None:
    """A Google-shaped body quoted in an exception's text; a query-string key of the api_base, a header
    value of the config, control characters and a message past the bound."""
    model = ModelConfig(
        name="g",
        params={
            "model": "gemini/g",
            "api_base": "https://gw.example/v1?token=query-secret-123",
            "extra_headers": {"x-tenant": "tenant-secret-456"},
            "vertex_credentials": "cred-secret-789",
        },
        info={},
        supermemory=False,
    )
    long = "x" * 2000
    text = (
        'GeminiException - {"error": {"code": 400, "status": "INVALID_ARGUMENT", "message": '
        '"bad: query-secret-123 tenant-secret-456 cred-secret-789\\n\\u0007' + long + '"}}'
    )
    found = said([RuntimeError(text)], secrets_of([model]))
    assert found is not None
    assert found.startswith("bad: [redacted] [redacted] [redacted] x")
    assert len(found) == MAX_LENGTH
    assert "\n" not in found
    assert "\x07" not in found
