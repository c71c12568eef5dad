from __future__ import annotations

import pytest

from aiohttp_memproxy.errors import ModelDisabled, ModelNotFound
from aiohttp_memproxy.models import ModelTable
from aiohttp_memproxy.settings import Alias, ModelConfig


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
