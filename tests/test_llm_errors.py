"""Errors say where they happened: what LiteLLM refused before anything left the gateway is a 400 naming the
parameter, in the client's dialect; never "the upstream rejected" or "could not be reached"."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import litellm
import pytest

from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.llm.errors import culprit
from tests.conftest import MESSAGES, UPSTREAM_KEY, AppClient, LogLines, base_config
from tests.fake_upstream import FakeUpstream
from tests.test_chat_errors import assert_openai_error
from tests.test_messages import assert_anthropic_error


def strict_settings(make_settings: Callable[..., Settings], url: str) -> Settings:
    """drop_params off, as a LiteLLM config may say: LiteLLM then refuses what a model cannot take."""
    return make_settings(
        base_config(
            model_list=[
                {
                    "model_name": "gpt-4o-up",
                    "litellm_params": {
                        "model": "openai/gpt-4o",
                        "api_base": f"{url}/v1",
                        "api_key": UPSTREAM_KEY,
                    },
                },
                {"model_name": "demo", "litellm_params": {"model": "openai/demo", "mock_response": "hi"}},
            ],
            litellm_settings={"drop_params": False},
        )
    )


async def test_a_parameter_the_model_cannot_take_is_a_400_naming_it(
    app_client: AppClient, make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    client = await app_client(strict_settings(make_settings, url))
    body = {
        "model": "gpt-4o-up",
        "messages": MESSAGES,
        "thinking": {"type": "enabled", "budget_tokens": 1024},
    }
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 400
    error = assert_openai_error(await response.json(), "invalid_request_error")
    assert error["param"] == "thinking"
    assert error["code"] == "unsupported_parameter"
    assert "parameter 'thinking' cannot be sent to this model" in error["message"]
    assert "nothing was sent upstream" in error["message"]
    assert "upstream rejected" not in error["message"]
    assert fake.seen == []


@pytest.mark.parametrize("model", ["gpt-4o-up", "demo"])
async def test_a_malformed_body_is_a_400_naming_the_field_not_a_502(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    model: str,
) -> None:
    """``messages: [1, 2]`` reached LiteLLM, which failed preparing it (a 502 "could not be reached", even for
    the demo model, which has no upstream): now the edge refuses it, naming the item."""
    fake, url = upstream
    client = await app_client(strict_settings(make_settings, url))
    response = await client.post("/v1/chat/completions", json={"model": model, "messages": [1, 2]})
    assert response.status == 400, await response.text()
    error = assert_openai_error(await response.json(), "invalid_request_error")
    assert error["param"] == "messages"
    assert error["message"] == "messages[0]: Input should be a valid dictionary"
    assert fake.seen == []


async def test_messages_malformed_is_an_anthropic_400(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    client = await app_client(gateway_settings())
    response = await client.post(
        "/v1/messages",
        json={"model": "gpt-up", "max_tokens": 10, "messages": [1, 2]},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert response.status == 400, await response.text()
    body = await response.json()
    assert_anthropic_error(body, "invalid_request_error")
    assert body["error"]["message"] == "messages[0]: Input should be a valid dictionary"
    assert fake.seen == []


def unsupported(names: list[str]) -> Exception:
    return litellm.UnsupportedParamsError(
        message=f"openai does not support parameters: {names!r}, for model=gpt-4o. To drop these, set ...",
        llm_provider="openai",
    )


@pytest.mark.parametrize(
    ("error", "sent", "expected"),
    [
        (unsupported(["thinking"]), ["model", "messages", "thinking"], "thinking"),
        (unsupported(["thinking", "context_management"]), ["context_management", "thinking"], "thinking"),
        # Only a name the client sent is ever echoed: LiteLLM's own words stay ours to read.
        (unsupported(["reasoning_effort"]), ["model", "messages", "thinking"], None),
        (ValueError("max_tokens must be an integer for model=gpt-4o"), ["model", "max_tokens"], "max_tokens"),
        (ValueError("'int' object has no attribute 'get'"), ["model", "messages"], None),
        (ValueError("bad value for model=x"), ["model"], None),  # "model" names every LiteLLM message
    ],
)
def test_culprit(error: Exception, sent: list[str], expected: str | None) -> None:
    assert culprit(error, sent) == expected


def test_culprit_never_echoes_a_hostile_key() -> None:
    hostile = "<script>" + "x" * 100
    error: Any = ValueError(f"unknown field {hostile}")
    assert culprit(error, [hostile]) is None


async def test_a_failure_of_the_gateway_before_sending_is_not_the_clients(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    monkeypatch: pytest.MonkeyPatch,
    log_lines: LogLines,
) -> None:
    """An anthropic/ model with no key anywhere: LiteLLM refuses before sending. Not a 400 (the request is
    fine), not "the upstream rejected" (nothing left): the gateway's own 500, and its log names the class."""
    fake, url = upstream
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    params = {"model": "anthropic/claude-x", "api_base": url}
    client = await app_client(
        make_settings(base_config(model_list=[{"model_name": "c", "litellm_params": params}]))
    )
    response = await client.post("/v1/chat/completions", json={"model": "c", "messages": MESSAGES})
    assert response.status == 500
    error = assert_openai_error(await response.json())
    assert error["code"] == "gateway_error"
    assert "nothing was sent upstream" in error["message"]
    assert fake.seen == []
    assert [line["error"] for line in log_lines.named("gateway_error")] == ["AuthenticationError"]
