"""Deep JSON is a 400 in the route's dialect before anything costly reads it; the deepest real bodies pass;
bodies of megabytes are checked as small ones are."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.server import body as json_body
from aiohttp_memproxy.server.body import INLINE_CHECK_BYTES
from tests.claude_code import first_request
from tests.conftest import MESSAGES, UPSTREAM_KEY, AppClient, base_config, models_at
from tests.fake_upstream import FakeUpstream

ANTHROPIC = {"anthropic-version": "2023-06-01"}
LIMIT = json_body.MAX_DEPTH


def nested(levels: int) -> Any:
    """``levels`` of alternating objects and arrays around a string."""
    value: Any = "leaf"
    for index in range(levels):
        value = {"x": value} if index % 2 else [value]
    return value


def with_depth(body: dict[str, Any], key: str, total: int) -> dict[str, Any]:
    """``body`` with ``key`` set so that the whole body nests exactly ``total`` levels."""
    return {**body, key: {"nested": nested(total - 2)}}


ROUTES: list[tuple[str, dict[str, Any], str, str]] = [
    ("/v1/chat/completions", {"model": "gpt-up", "messages": MESSAGES}, "metadata", "openai"),
    ("/v1/messages", {"model": "claude-up", "max_tokens": 8, "messages": MESSAGES}, "metadata", "anthropic"),
    ("/v1/messages/count_tokens", {"model": "claude-up", "messages": MESSAGES}, "metadata", "anthropic"),
    ("/v1/responses", {"model": "gpt-up", "input": "hi"}, "metadata", "openai"),
]


@pytest.fixture
async def gateway(
    app_client: AppClient, make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> Any:
    _, url = upstream
    settings = make_settings(base_config(model_list=models_at(url), memproxy={"max_body_mb": 32}))
    return await app_client(settings)


@pytest.mark.parametrize(("path", "body", "key", "dialect"), ROUTES, ids=[route[0] for route in ROUTES])
async def test_a_body_nested_past_the_bound_is_refused_in_the_routes_dialect(
    gateway: Any, upstream: tuple[FakeUpstream, str], path: str, body: dict[str, Any], key: str, dialect: str
) -> None:
    fake, _ = upstream
    for raw in (
        json.dumps(with_depth(body, key, LIMIT + 1)),
        json.dumps(with_depth(body, key, 500)),
        json.dumps(body)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}",  # past the parser's own
    ):
        response = await gateway.post(
            path, data=raw, headers={"Content-Type": "application/json", **ANTHROPIC}
        )
        assert response.status == 400, await response.text()
        error = await response.json()
        if dialect == "anthropic":
            assert error["error"]["type"] == "invalid_request_error"
        else:
            assert error["error"]["code"] == "json_too_deep"
        assert f"deeper than {LIMIT} levels" in error["error"]["message"]
    assert fake.seen == []


async def test_a_body_nested_to_the_bound_is_served(gateway: Any) -> None:
    body = {
        "model": "gpt-up",
        "messages": MESSAGES,
        "tools": [{"type": "function", "function": {"name": "t", "parameters": {}}}],
    }
    # body > tools[] > {} > function{} > parameters{} > properties{} > ... to exactly LIMIT levels
    schema: Any = {"type": "string"}
    for _ in range(LIMIT - 6):
        schema = {"x": schema}
    body["tools"][0]["function"]["parameters"] = {"type": "object", "properties": schema}
    assert not json_body.deeper_than(body, LIMIT)
    assert json_body.deeper_than(body, LIMIT - 1)
    response = await gateway.post("/v1/chat/completions", json=body)
    assert response.status == 200, await response.text()


async def test_claude_codes_real_shape_passes(gateway: Any) -> None:
    body = first_request("claude-up", stream=False)
    assert not json_body.deeper_than(body, 10)  # its tool schemas: about as deep as real ones
    response = await gateway.post("/v1/messages", json=body, headers=ANTHROPIC)
    assert response.status == 200, await response.text()


async def test_a_body_of_megabytes_is_checked_as_a_small_one(gateway: Any) -> None:
    """Past INLINE_CHECK_BYTES the checks run in a worker thread: the same answers, the same 400s."""
    padding = "x" * (INLINE_CHECK_BYTES + 1024)
    big = {"model": "gpt-up", "messages": [{"role": "user", "content": padding}]}
    response = await gateway.post("/v1/chat/completions", data=io.BytesIO(json.dumps(big).encode()),
                                  headers={"Content-Type": "application/json"})  # fmt: skip
    assert response.status == 200, await response.text()
    for bad, field in (
        ({**big, "temperature": "hot"}, "temperature"),
        ({**big, "messages": [{"role": "user", "content": padding}, {"content": "no role"}]}, "messages"),
        (with_depth(big, "metadata", LIMIT + 1), None),
    ):
        response = await gateway.post(
            "/v1/chat/completions",
            data=io.BytesIO(json.dumps(bad).encode()),
            headers={"Content-Type": "application/json"},
        )
        assert response.status == 400
        assert (await response.json())["error"]["param"] == field


async def test_forward_mode_refuses_deep_json_too(
    app_client: AppClient, make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    client = await app_client(
        make_settings(
            base_config(memproxy={"mode": "forward", "upstream": url, "upstream_key": UPSTREAM_KEY})
        )
    )
    body = with_depth({"model": "gpt-up", "messages": MESSAGES}, "metadata", LIMIT + 1)
    response = await client.post("/v1/chat/completions", json=body)
    assert response.status == 400
    assert (await response.json())["error"]["code"] == "json_too_deep"
    cut = json.dumps({"model": "gpt-up"})[:-1] + ', "deep": ' + "[" * 50_000 + "]" * 50_000 + "}"
    response = await client.post(
        "/v1/chat/completions", data=cut, headers={"Content-Type": "application/json"}
    )
    assert response.status == 400
    assert fake.seen == []


@pytest.mark.parametrize(
    ("value", "limit", "deeper"),
    [
        ("text", 0, False),
        ({}, 1, False),
        ({}, 0, True),
        ([[]], 1, True),
        ([[]], 2, False),
        ({"a": [1, {"b": []}]}, 3, True),
        ({"a": [1, {"b": []}]}, 4, False),
        (nested(LIMIT), LIMIT, False),
        (nested(LIMIT + 1), LIMIT, True),
    ],
)
def test_deeper_than_counts_objects_and_arrays(value: Any, limit: int, deeper: bool) -> None:
    assert json_body.deeper_than(value, limit) is deeper
