from __future__ import annotations

from typing import Any

import pytest

from aiohttp_memproxy.config.schema import PatternRule, RoutingConfig
from aiohttp_memproxy.config.settings import ModelConfig
from aiohttp_memproxy.errors import InvalidRequest
from aiohttp_memproxy.resolve.memory import MemoryRouting, memory_headers

CONFIG = RoutingConfig(
    custom_header="x-memory-user-id",
    header_patterns=(
        PatternRule(header="user-agent", pattern="^claude-cli", user_id="claude-code"),
        PatternRule(header="user-agent", pattern="OpenAIClientImpl", user_id="pycharm-ai"),
        PatternRule(header="x-client", pattern="ide", user_id="ide-user"),
        PatternRule(header="user-agent", pattern="claude", user_id="any-claude"),
    ),
    default_user_id="default-dev",
)
ROUTER = MemoryRouting(CONFIG)


@pytest.mark.parametrize(
    ("headers", "user_id", "source"),
    [
        # the custom header beats every pattern
        ({"x-memory-user-id": "alice", "user-agent": "claude-cli/2.1.3"}, "alice", "custom"),
        # header names are case-insensitive
        ({"X-Memory-User-Id": "bob"}, "bob", "custom"),
        ({"USER-AGENT": "claude-cli/2.1.328 (external, sdk-cli)"}, "claude-code", "pattern"),
        # patterns are case-insensitive
        ({"user-agent": "CLAUDE-CLI/2"}, "claude-code", "pattern"),
        # first matching pattern in config order wins: both ^claude-cli and claude match
        ({"user-agent": "claude-cli/1"}, "claude-code", "pattern"),
        # unanchored search: OpenAIClientImpl is found mid-string
        ({"user-agent": "JetBrains OpenAIClientImpl/Java 1.0"}, "pycharm-ai", "pattern"),
        # anchored pattern does not match mid-string; the later unanchored one does
        ({"user-agent": "my-claude-cli"}, "any-claude", "pattern"),
        # a rule on another header
        ({"x-client": "my IDE"}, "ide-user", "pattern"),
        # nothing matches: default
        ({"user-agent": "curl/8"}, "default-dev", "default"),
        ({}, "default-dev", "default"),
    ],
)
def test_precedence(headers: dict[str, str], user_id: str, source: str) -> None:
    decision = ROUTER.decide(headers)
    assert decision.user_id == user_id
    assert decision.custom_header_present == (source == "custom")
    assert (decision.matched_pattern is not None) == (source == "pattern")
    assert decision.is_default == (source == "default")


def test_routing_info_shape() -> None:
    info = ROUTER.routing_info({"user-agent": "claude-cli/2.1.3"})
    assert info == {
        "user_id": "claude-code",
        "matched_pattern": {
            "header": "user-agent",
            "value": "claude-cli/2.1.3",
            "pattern": "^claude-cli",
            "user_id": "claude-code",
        },
        "custom_header_present": False,
        "is_default": False,
    }
    assert ROUTER.routing_info({}) == {
        "user_id": "default-dev",
        "matched_pattern": None,
        "custom_header_present": False,
        "is_default": True,
    }


def test_routing_info_never_shows_a_credential() -> None:
    router = MemoryRouting(
        RoutingConfig(header_patterns=(PatternRule(header="x-api-key", pattern="^sk-", user_id="keyed"),))
    )
    info = router.routing_info({"x-api-key": "sk-secret-value"})
    assert info["user_id"] == "keyed"
    assert info["matched_pattern"]["value"] == "[redacted]"


@pytest.mark.parametrize("value", ["", "  ", "has space", "x" * 129, "semi;colon", "ünïcode"])
def test_invalid_custom_user_id_is_refused(value: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        ROUTER.decide({"x-memory-user-id": value, "user-agent": "claude-cli/2"})
    assert caught.value.status == 400
    assert "x-memory-user-id" in caught.value.message
    assert value.strip() == "" or value not in caught.value.message


def model(supermemory: bool) -> ModelConfig:
    return ModelConfig(name="m", params={"model": "anthropic/x"}, info={}, supermemory=supermemory)


def test_memory_headers_only_for_supermemory_models() -> None:
    decision = ROUTER.decide({"user-agent": "claude-cli/2", "x-claude-code-session-id": "abc-123"})
    assert memory_headers(model(True), decision) == {
        "x-sm-user-id": "claude-code",
        "x-sm-conversation-id": "abc-123",
    }
    assert memory_headers(model(False), decision) == {}


def test_conversation_header_from_client_wins_over_claude_session() -> None:
    headers: dict[str, Any] = {"x-sm-conversation-id": "conv-1", "x-claude-code-session-id": "sess-1"}
    decision = ROUTER.decide(headers)
    assert memory_headers(model(True), decision)["x-sm-conversation-id"] == "conv-1"
    assert "x-sm-conversation-id" not in memory_headers(model(True), ROUTER.decide({}))


def test_codex_session_is_the_conversation() -> None:
    decision = ROUTER.decide(
        {"user-agent": "codex_exec/0.169.0 (Debian 12; x86_64) dumb", "session_id": "0199-ab"}
    )
    assert memory_headers(model(True), decision)["x-sm-conversation-id"] == "0199-ab"
