from __future__ import annotations

from collections.abc import Callable

import pytest

from aiohttp_memproxy.config.settings import Alias, ModelConfig, Settings
from aiohttp_memproxy.errors import InvalidRequest, ModelDisabled, ModelNotFound
from aiohttp_memproxy.resolve.models import ModelTable
from tests.conftest import MESSAGES, UPSTREAM_KEY, AppClient, base_config
from tests.fake_upstream import FakeUpstream


def model(name: str, litellm_model: str, *missing: str) -> ModelConfig:
    return ModelConfig(
        name=name, params={"model": litellm_model}, info={}, supermemory=False, missing_env=missing
    )


TABLE = ModelTable(
    [
        model("demo", "openai/demo"),
        model("claude-sonnet-4-5", "anthropic/claude-sonnet-4-5-20250929"),
        model("gpt-4o", "openai/gpt-4o", "OPENAI_API_KEY"),
        model("claude-*", "anthropic/claude-*"),
        model("claude-opus-*", "anthropic/opus-special-*"),
        model("*", "openai/*"),
    ],
    {
        "claude-haiku-4-5-20251001": Alias("claude-haiku-4-5"),  # resolved through the wildcard
        "sonnet": Alias("claude-sonnet-4-5"),
        "secret-alias": Alias("demo", hidden=True),
        "gpt": Alias("gpt-4o"),
    },
)


@pytest.mark.parametrize(
    ("requested", "config_name", "litellm_model"),
    [
        ("demo", "demo", "openai/demo"),
        ("sonnet", "claude-sonnet-4-5", "anthropic/claude-sonnet-4-5-20250929"),
        # a dated id with no alias of its own: the date is stripped, then the exact name matches
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5", "anthropic/claude-sonnet-4-5-20250929"),
        # an alias whose target only a wildcard serves
        ("claude-haiku-4-5-20251001", "claude-*", "anthropic/claude-haiku-4-5"),
        # the most specific wildcard wins, and the capture fills the litellm model
        ("claude-opus-4-1", "claude-opus-*", "anthropic/opus-special-4-1"),
        ("claude-3-haiku", "claude-*", "anthropic/claude-3-haiku"),
        ("llama-3", "*", "openai/llama-3"),
    ],
)
def test_resolution(requested: str, config_name: str, litellm_model: str) -> None:
    resolved = TABLE.resolve(requested)
    assert (resolved.requested, resolved.config.name, resolved.litellm_model) == (
        requested,
        config_name,
        litellm_model,
    )


def test_unknown_model_is_404() -> None:
    table = ModelTable([model("demo", "openai/demo")], {})
    with pytest.raises(ModelNotFound) as caught:
        table.resolve("gpt-5")
    assert caught.value.status == 404
    assert caught.value.param == "model"
    assert "'gpt-5'" in caught.value.message


@pytest.mark.parametrize("name", ["gpt-4o", "gpt"])
def test_disabled_model_is_503_naming_the_variable(name: str) -> None:
    with pytest.raises(ModelDisabled) as caught:
        TABLE.resolve(name)
    assert caught.value.status == 503
    assert "OPENAI_API_KEY" in caught.value.message


def test_listing_has_enabled_models_and_visible_aliases() -> None:
    assert [name for name, _ in TABLE.listing()] == [
        "demo",
        "claude-sonnet-4-5",
        "claude-haiku-4-5-20251001",
        "sonnet",
    ]
    assert [m.name for m in TABLE.disabled] == ["gpt-4o"]


@pytest.mark.parametrize(
    "requested",
    [
        "claude-../../../evil/path?q=1#",
        "claude-x/../../admin",
        "../..",
        "claude-x?key=1",
        "claude-x#frag",
        "claude-x%2F..",
        "claude-x\\y",
        "claude-x y",
        "claude-x\ty",
        "claude-x\x00",
        "../../v1/models",
    ],
)
def test_a_model_id_that_would_steer_a_url_is_refused_before_a_wildcard_takes_it(requested: str) -> None:
    with pytest.raises(InvalidRequest) as raised:
        TABLE.resolve(requested)
    assert raised.value.param == "model"
    assert raised.value.code == "invalid_model_id"
    assert requested not in raised.value.message


@pytest.mark.parametrize(
    ("requested", "litellm_model"),
    [
        ("meta-llama/llama-3.3-70b-instruct", "openai/meta-llama/llama-3.3-70b-instruct"),
        ("accounts/fireworks/models/llama-v3p1-8b", "openai/accounts/fireworks/models/llama-v3p1-8b"),
        ("claude-3.5..sonnet", "anthropic/claude-3.5..sonnet"),
        ("claude-opus-4-1", "anthropic/opus-special-4-1"),
    ],
)
def test_slashes_and_dots_inside_a_segment_stay_allowed(requested: str, litellm_model: str) -> None:
    assert TABLE.resolve(requested).litellm_model == litellm_model


async def test_a_wildcard_model_id_cannot_steer_the_upstream_url(
    app_client: AppClient, make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    entry = {
        "model_name": "gemwild-*",
        "litellm_params": {"model": "gemini/*", "api_base": f"{url}/v1beta", "api_key": UPSTREAM_KEY},
    }
    client = await app_client(make_settings(base_config(model_list=[entry])))
    evil = "gemwild-../../../evil/path?q=1#"
    chat = await client.post("/v1/chat/completions", json={"model": evil, "messages": MESSAGES})
    assert chat.status == 400
    assert (await chat.json())["error"]["code"] == "invalid_model_id"
    messages = await client.post(
        "/v1/messages",
        json={"model": evil, "max_tokens": 8, "messages": MESSAGES},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert messages.status == 400
    assert (await messages.json())["error"]["type"] == "invalid_request_error"
    assert fake.seen == []
    fine = await client.post(
        "/v1/chat/completions", json={"model": "gemwild-2.5-flash", "messages": MESSAGES}
    )
    assert fine.status == 200, await fine.text()
    assert [seen.path for seen in fake.seen] == ["/v1beta/models/2.5-flash:generateContent"]
