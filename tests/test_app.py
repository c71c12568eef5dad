"""The app over HTTP: health, model lists, memory routing info, auth in both dialects, request ids, logs."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from importlib import metadata
from typing import Any

import anthropic
import openai
import pytest

from aiohttp_memproxy import __version__
from aiohttp_memproxy.config.settings import Settings
from tests.conftest import MASTER_KEY, AppClient, LogLines, base_config

ANTHROPIC = {"anthropic-version": "2023-06-01"}
UPSTREAM_KEY = "sk-upstream-secret-value-0123456789"
ROUTING = {
    "header_patterns": [{"header": "user-agent", "pattern": "^claude-cli", "user_id": "claude-code"}],
    "default_user_id": "nobody",
}


def config_with_models(**sections: Any) -> dict[str, Any]:
    return base_config(
        model_list=[
            {"model_name": "demo", "litellm_params": {"model": "openai/demo", "mock_response": "hi"}},
            {
                "model_name": "claude-sonnet-4-5",
                "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_key": "os.environ/TEST_AK"},
                "model_info": {"display_name": "Claude Sonnet 4.5"},
            },
            {
                "model_name": "off",
                "litellm_params": {"model": "openai/off", "api_key": "os.environ/TEST_UNSET_KEY"},
            },
        ],
        router_settings={
            "model_group_alias": {
                "claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
                "hidden-one": {"model": "demo", "hidden": True},
                "off-alias": "off",
            }
        },
        user_id_mappings=ROUTING,
        **sections,
    )


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(config_with_models(), {"TEST_AK": UPSTREAM_KEY})


@pytest.fixture
def keyed_settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(
        config_with_models(general_settings={"master_key": MASTER_KEY}), {"TEST_AK": UPSTREAM_KEY}
    )


async def test_health(app_client: AppClient, settings: Settings) -> None:
    client = await app_client(settings)
    response = await client.get("/health")
    assert response.status == 200
    body = await response.json()
    assert body["status"] == "ok"
    assert body["version"] == __version__
    assert body["uptime_s"] >= 0
    assert body["models"]["available"] == ["demo", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"]
    assert body["models"]["disabled"] == [{"name": "off", "missing_env": ["TEST_UNSET_KEY"]}]
    assert body["cookies"] == {"count": 0, "names": []}
    assert body["config"]["sha256"] == settings.digest
    # Which LiteLLM and price map answer: the one bundled with the installed release, never fetched.
    assert body["litellm"]["litellm_version"] == metadata.version("litellm")
    assert body["litellm"]["price_map"] == "bundled"
    assert body["litellm"]["models_known"] > 1000
    # For make load's leak check: this process's own tasks and descriptors (Linux has /proc).
    assert body["process"]["asyncio_tasks"] >= 1
    assert body["process"]["open_fds"] >= 3  # stdin, stdout, stderr at least


async def test_liteLLM_compatible_health_probes(app_client: AppClient, settings: Settings) -> None:
    client = await app_client(settings)
    live = await client.get("/health/liveliness")
    assert (live.status, await live.json()) == (200, "I'm alive!")
    ready = await client.get("/health/readiness")
    body = await ready.json()
    assert ready.status == 200
    assert body["status"] == "healthy"
    assert body["litellm_version"]


async def test_models_openai_shape(app_client: AppClient, settings: Settings) -> None:
    client = await app_client(settings)
    for path in ("/v1/models", "/models"):
        response = await client.get(path)
        assert response.status == 200
        body = await response.json()
        assert body["object"] == "list"
        assert [m["id"] for m in body["data"]] == ["demo", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"]
        first = body["data"][0]
        assert set(first) == {"id", "object", "created", "owned_by"}
        assert first["object"] == "model"
        assert isinstance(first["created"], int)
        assert first["owned_by"] == "openai"


async def test_models_anthropic_shape_and_pages(app_client: AppClient, settings: Settings) -> None:
    client = await app_client(settings)
    response = await client.get("/v1/models", headers=ANTHROPIC)
    body = await response.json()
    assert response.status == 200
    assert [m["id"] for m in body["data"]] == ["demo", "claude-sonnet-4-5", "claude-sonnet-4-5-20250929"]
    assert body["data"][1] == {
        "type": "model",
        "id": "claude-sonnet-4-5",
        "display_name": "Claude Sonnet 4.5",
        "created_at": body["data"][1]["created_at"],
    }
    assert body["data"][1]["created_at"].endswith("Z")
    assert (body["has_more"], body["first_id"], body["last_id"]) == (
        False,
        "demo",
        "claude-sonnet-4-5-20250929",
    )

    page = await (await client.get("/v1/models?limit=1", headers=ANTHROPIC)).json()
    assert ([m["id"] for m in page["data"]], page["has_more"]) == (["demo"], True)
    page = await (await client.get("/v1/models?limit=1&after_id=demo", headers=ANTHROPIC)).json()
    assert ([m["id"] for m in page["data"]], page["has_more"]) == (["claude-sonnet-4-5"], True)
    page = await (
        await client.get("/v1/models?limit=1&before_id=claude-sonnet-4-5", headers=ANTHROPIC)
    ).json()
    assert ([m["id"] for m in page["data"]], page["has_more"]) == (["demo"], False)

    bad = await client.get("/v1/models?limit=0", headers=ANTHROPIC)
    assert bad.status == 400
    assert (await bad.json())["error"]["type"] == "invalid_request_error"


async def test_one_model_by_id_with_the_official_sdks(app_client: AppClient, settings: Settings) -> None:
    """``client.models.retrieve`` of both SDKs: the model in their shape, an alias as asked, and a 404 in
    their dialect for an id the gateway does not have."""
    client = await app_client(settings)
    base = str(client.make_url(""))
    gpt = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    claude = anthropic.AsyncAnthropic(base_url=base, api_key="unused", max_retries=0)
    try:
        model = await gpt.models.retrieve("demo")
        assert (model.id, model.object, model.owned_by) == ("demo", "model", "openai")
        alias = await gpt.models.retrieve("claude-sonnet-4-5-20250929")
        assert (alias.id, alias.owned_by) == ("claude-sonnet-4-5-20250929", "anthropic")
        with pytest.raises(openai.NotFoundError) as missing:
            await gpt.models.retrieve("nope")
        assert missing.value.body["code"] == "model_not_found"  # type: ignore[index]
        info = await claude.models.retrieve("claude-sonnet-4-5")
        assert (info.id, info.display_name, info.type) == ("claude-sonnet-4-5", "Claude Sonnet 4.5", "model")
        with pytest.raises(anthropic.NotFoundError) as gone:
            await claude.models.retrieve("nope")
        assert gone.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    finally:
        await gpt.close()
        await claude.close()
    # Through the LiteLLM proxy's /anthropic prefix, Anthropic's shape without anthropic-version.
    prefixed = await (await client.get("/anthropic/v1/models/claude-sonnet-4-5")).json()
    assert prefixed["type"] == "model"
    assert (await client.get("/models/demo")).status == 200


async def test_memory_routing_info(app_client: AppClient, keyed_settings: Settings) -> None:
    client = await app_client(keyed_settings)
    # no key needed, and the key a client sends is never shown
    response = await client.get(
        "/memory-routing/info", headers={"User-Agent": "claude-cli/2.1.328 (external, sdk-cli)"}
    )
    assert response.status == 200
    body = await response.json()
    assert body["user_id"] == "claude-code"
    assert body["matched_pattern"]["pattern"] == "^claude-cli"
    assert body["is_default"] is False
    custom = await (await client.get("/memory-routing/info", headers={"x-memory-user-id": "alice"})).json()
    assert (custom["user_id"], custom["custom_header_present"]) == ("alice", True)
    default = await (await client.get("/memory-routing/info")).json()
    assert (default["user_id"], default["is_default"]) == ("nobody", True)


async def test_invalid_custom_user_id_is_400(app_client: AppClient, settings: Settings) -> None:
    client = await app_client(settings)
    response = await client.get("/memory-routing/info", headers={"x-memory-user-id": "bad id; drop"})
    assert response.status == 400
    error = (await response.json())["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "x-memory-user-id"
    assert "invalid user id" in error["message"]
    assert "drop" not in error["message"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Authorization": f"Bearer {MASTER_KEY}"},
        {"authorization": f"bearer {MASTER_KEY}"},
        {"x-api-key": MASTER_KEY},
        {"x-litellm-api-key": MASTER_KEY},
        {"api-key": MASTER_KEY},
        {"x-api-key": "wrong", "Authorization": f"Bearer {MASTER_KEY}"},
    ],
)
async def test_auth_accepts_each_header(
    app_client: AppClient, keyed_settings: Settings, headers: dict[str, str]
) -> None:
    client = await app_client(keyed_settings)
    for path, extra in (("/v1/models", {}), ("/models", {}), ("/v1/models", ANTHROPIC)):
        response = await client.get(path, headers={**headers, **extra})
        assert response.status == 200, path


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer sk-wrong-key-of-the-wrong-kind"}, "invalid API key"),
        ({"x-api-key": MASTER_KEY + "x"}, "invalid API key"),
        ({"Authorization": MASTER_KEY}, "missing API key"),  # no Bearer scheme
        ({"Authorization": "Basic " + MASTER_KEY}, "missing API key"),
    ],
)
async def test_auth_refusal_in_both_dialects(
    app_client: AppClient, keyed_settings: Settings, headers: dict[str, str], message: str
) -> None:
    client = await app_client(keyed_settings)
    openai = await client.get("/v1/models", headers=headers)
    assert openai.status == 401
    body = await openai.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "authentication_error"
    assert message in body["error"]["message"]

    for method, path, extra in (
        ("POST", "/v1/messages?beta=true", {}),
        ("POST", "/v1/messages/count_tokens", {}),
        ("GET", "/v1/models", ANTHROPIC),
    ):
        response = await client.request(method, path, headers={**headers, **extra}, json={})
        assert response.status == 401, path
        body = await response.json()
        assert body == {
            "type": "error",
            "error": {"type": "authentication_error", "message": body["error"]["message"]},
        }
        assert message in body["error"]["message"]
        assert MASTER_KEY not in str(body)


async def test_public_paths_need_no_key_and_show_none(
    app_client: AppClient, keyed_settings: Settings
) -> None:
    client = await app_client(keyed_settings)
    for path in ("/health", "/health/liveliness", "/health/readiness", "/memory-routing/info"):
        response = await client.get(path)
        assert response.status == 200, path
        text = await response.text()
        assert MASTER_KEY not in text
        assert UPSTREAM_KEY not in text


async def test_on_a_non_loopback_address_only_the_probes_are_public(
    app_client: AppClient, keyed_settings: Settings
) -> None:
    """Bound beyond loopback, /health's details, /metrics and the routing info need the master key; the
    LiteLLM-style probes and Claude Code's ping stay public."""
    settings = replace(keyed_settings, gateway=keyed_settings.gateway.model_copy(update={"host": "0.0.0.0"}))
    client = await app_client(settings)
    for path in ("/health/liveliness", "/health/liveness", "/health/readiness", "/api/hello"):
        assert (await client.get(path)).status == 200, path
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    for path in ("/health", "/metrics", "/memory-routing/info"):
        refused = await client.get(path)
        assert refused.status == 401, path
        assert (await refused.json())["error"]["type"] == "authentication_error"
        assert (await client.get(path, headers=auth)).status == 200, path


async def test_claude_codes_start_up_ping(app_client: AppClient, keyed_settings: Settings) -> None:
    """``HEAD /api/hello`` on start: an empty 200 without a key, so its logs and ours stay clean."""
    client = await app_client(keyed_settings)
    for method in ("HEAD", "GET"):
        response = await client.request(method, "/api/hello", headers={"User-Agent": "claude-cli/2.1.328"})
        assert response.status == 200, method
        assert await response.read() == b""


async def test_no_master_key_means_open_on_loopback(app_client: AppClient, settings: Settings) -> None:
    client = await app_client(settings)
    assert (await client.get("/v1/models")).status == 200


async def test_request_id_echoed_or_generated(app_client: AppClient, settings: Settings) -> None:
    client = await app_client(settings)
    honoured = await client.get("/health", headers={"x-request-id": "req-abc.123"})
    assert honoured.headers["x-request-id"] == "req-abc.123"
    generated = await client.get("/health")
    assert len(generated.headers["x-request-id"]) == 32
    unsafe = await client.get("/health", headers={"x-request-id": "bad id\twith tab"})
    assert unsafe.headers["x-request-id"] != "bad id\twith tab"
    error = await client.get("/v1/nope", headers={"x-request-id": "on-error"})
    assert (error.status, error.headers["x-request-id"]) == (404, "on-error")


async def test_unknown_route_and_method_in_dialect(app_client: AppClient, settings: Settings) -> None:
    client = await app_client(settings)
    missing = await client.get("/v1/nope")
    assert missing.status == 404
    error = (await missing.json())["error"]
    assert error["message"] == "no route for GET /v1/nope"
    assert error["code"] is None  # as OpenAI's own 404 for a route it does not have
    wrong_method = await client.post("/v1/models", json={})
    assert wrong_method.status == 405
    assert "GET" in wrong_method.headers["Allow"]
    assert (await wrong_method.json())["error"]["type"] == "invalid_request_error"


async def test_canonical_log_line(
    app_client: AppClient, keyed_settings: Settings, log_lines: LogLines
) -> None:
    client = await app_client(keyed_settings)
    await client.get("/v1/models", headers={"x-request-id": "r-1", "x-api-key": MASTER_KEY})
    await client.get("/v1/models", headers={"x-request-id": "r-2", "x-api-key": "nope"})
    lines = log_lines.named("request")
    assert [(line["request_id"], line["route"], line["status"]) for line in lines] == [
        ("r-1", "/v1/models", 200),
        ("r-2", "/v1/models", 401),
    ]
    assert lines[1]["error_code"] == "invalid_api_key"
    assert all(isinstance(line["ms"], float) for line in lines)
    assert MASTER_KEY not in log_lines.text
