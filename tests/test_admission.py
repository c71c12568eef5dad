"""Admission over HTTP: a foreign Host (DNS rebinding), a page of another origin and a body a page can send
are refused on every route before the key is checked or the body read; listed hosts and origins get in, listed
origins with CORS; nothing a legitimate client sends changes."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from aiohttp_memproxy.config.exposure import exposure_problems
from aiohttp_memproxy.config.settings import Settings
from tests.conftest import MASTER_KEY, MESSAGES, AppClient, base_config, models_at
from tests.fake_upstream import FakeUpstream

ANTHROPIC = {"anthropic-version": "2023-06-01"}
GET_ROUTES = [
    "/health",
    "/health/liveliness",
    "/health/readiness",
    "/metrics",
    "/memory-routing/info",
    "/ui",
    "/ui/data",
    "/v1/models",
    "/models",
    "/api/hello",
]
CHAT = {"model": "gpt-up", "messages": MESSAGES}
MESSAGES_BODY = {"model": "claude-up", "max_tokens": 16, "messages": MESSAGES}
MODEL_ROUTES: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/chat/completions", CHAT, "openai"),
    ("/chat/completions", CHAT, "openai"),
    ("/v1/messages", MESSAGES_BODY, "anthropic"),
    ("/messages", MESSAGES_BODY, "anthropic"),
    ("/v1/messages/count_tokens", {"model": "claude-up", "messages": MESSAGES}, "anthropic"),
    ("/messages/count_tokens", {"model": "claude-up", "messages": MESSAGES}, "anthropic"),
    ("/v1/responses", {"model": "gpt-up", "input": "hi"}, "openai"),
    ("/responses", {"model": "gpt-up", "input": "hi"}, "openai"),
]
Client = TestClient[web.Request, web.Application]


@pytest.fixture
def admission_settings(
    make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> Callable[..., Settings]:
    _, url = upstream

    def make(master_key: str | None = None, **memproxy: Any) -> Settings:
        sections: dict[str, Any] = {"model_list": models_at(url), "memproxy": {"max_body_mb": 1, **memproxy}}
        if master_key:
            sections["general_settings"] = {"master_key": master_key}
        return make_settings(base_config(**sections), {"TEST_UNSET_OFF": ""})

    return make


def error_of(body: dict[str, Any], dialect: str) -> tuple[str, str]:
    """(type, message) of an error in its dialect."""
    if dialect == "anthropic":
        assert body["type"] == "error"
        return body["error"]["type"], body["error"]["message"]
    return body["error"]["code"], body["error"]["message"]


def no_access_control(response: Any) -> None:
    assert not [name for name in response.headers if name.lower().startswith("access-control-")]


# -- Host --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "master-key"])
@pytest.mark.parametrize("host", ["attacker.example:8764", "attacker.example", "192.0.2.7:8764", "10.1.2.3"])
async def test_a_foreign_host_is_refused_on_every_route(
    app_client: AppClient,
    admission_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    keyed: bool,
    host: str,
) -> None:
    fake, _ = upstream
    client = await app_client(admission_settings(MASTER_KEY if keyed else None))
    auth = {"Authorization": f"Bearer {MASTER_KEY}"} if keyed else {}
    for path in GET_ROUTES:
        response = await client.get(path, headers={"Host": host, **auth})
        body = await response.json()
        assert response.status == 403, (path, body)
        assert body["error"]["code"] == "host_not_allowed"
        assert "memproxy.allowed_hosts" in body["error"]["message"]
        no_access_control(response)
    for path, request, dialect in MODEL_ROUTES:
        response = await client.post(path, json=request, headers={"Host": host, **auth, **ANTHROPIC})
        assert response.status == 403, path
        kind, message = error_of(await response.json(), dialect)
        assert kind in ("host_not_allowed", "permission_error")
        assert "memproxy.allowed_hosts" in message
    assert fake.seen == []


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        "LOCALHOST:8764",
        "127.0.0.1",
        "127.0.0.1:8764",
        "127.8.9.10:1234",
        "[::1]",
        "[::1]:8764",
        "0.0.0.0:8764",
        "[::]:8764",
        "[::ffff:127.0.0.1]:8764",
    ],
)
async def test_loopback_names_and_addresses_are_admitted(
    app_client: AppClient, admission_settings: Callable[..., Settings], host: str
) -> None:
    client = await app_client(admission_settings())
    response = await client.get("/v1/models", headers={"Host": host})
    assert response.status == 200, await response.text()


@pytest.mark.parametrize(
    "host", ["localhost.", "::1", "[::1", "localhost:http", "localhost:1234567", "127.0.0.1.attacker.example"]
)
async def test_a_malformed_or_lookalike_host_is_refused(
    app_client: AppClient, admission_settings: Callable[..., Settings], host: str
) -> None:
    client = await app_client(admission_settings())
    response = await client.get("/health", headers={"Host": host})
    assert response.status == 403


async def test_allowed_hosts_admit_a_reverse_proxys_name(
    app_client: AppClient, admission_settings: Callable[..., Settings]
) -> None:
    client = await app_client(admission_settings(allowed_hosts=["GW.Example.org", "lan-box:8764"]))
    assert (await client.get("/v1/models", headers={"Host": "gw.example.org"})).status == 200
    assert (await client.get("/v1/models", headers={"Host": "gw.example.org:443"})).status == 200
    assert (await client.get("/v1/models", headers={"Host": "lan-box:8764"})).status == 200
    assert (await client.get("/v1/models", headers={"Host": "lan-box:9999"})).status == 403
    assert (await client.get("/v1/models", headers={"Host": "other.example.org"})).status == 403


def test_a_wildcard_host_needs_a_non_loopback_bind_and_a_master_key(
    make_settings: Callable[..., Settings],
) -> None:
    def problems(host: str, key: str | None) -> list[str]:
        sections: dict[str, Any] = {"memproxy": {"host": host, "allowed_hosts": ["*"]}}
        if key:
            sections["general_settings"] = {"master_key": key}
        errors, _ = exposure_problems(make_settings(base_config(**sections)))
        return [error for error in errors if "allowed_hosts" in error]

    assert problems("127.0.0.1", None)
    assert problems("127.0.0.1", MASTER_KEY)
    assert problems("0.0.0.0", None)
    assert problems("0.0.0.0", MASTER_KEY) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("allowed_hosts", ["gw.example/x"]),
        ("allowed_hosts", ["http://gw.example"]),
        ("allowed_origins", ["gw.example"]),
        ("allowed_origins", ["*"]),
        ("allowed_origins", ["http://gw.example/path"]),
        ("allowed_origins", ["1http://gw.example"]),
        ("allowed_origins", ["://gw.example"]),
    ],
)
def test_allowed_hosts_and_origins_are_validated(
    make_settings: Callable[..., Settings], key: str, value: list[str]
) -> None:
    from aiohttp_memproxy.config.settings import ConfigError

    with pytest.raises(ConfigError) as raised:
        make_settings(base_config(memproxy={key: value}))
    assert any(error.startswith(f"memproxy.{key}") for error in raised.value.errors)


# -- Origin ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "master-key"])
@pytest.mark.parametrize("origin", ["https://attacker.example", "http://localhost:3000", "null"])
async def test_a_page_of_another_origin_is_refused_before_its_body_is_read(
    app_client: AppClient,
    admission_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    origin: str,
    keyed: bool,
) -> None:
    fake, _ = upstream
    client = await app_client(admission_settings(MASTER_KEY if keyed else None))
    auth = {"Authorization": f"Bearer {MASTER_KEY}"} if keyed else {}
    oversized = json.dumps({**CHAT, "padding": "x" * (2 * 1024 * 1024)})  # over max_body_mb: never read
    for path, request, dialect in MODEL_ROUTES:
        for body in (json.dumps(request), oversized):
            response = await client.post(
                path,
                data=io.BytesIO(body.encode()),
                headers={"Origin": origin, "Content-Type": "text/plain", **auth, **ANTHROPIC},
            )
            assert response.status == 403, (path, await response.text())
            kind, message = error_of(await response.json(), dialect)
            assert kind in ("origin_not_allowed", "permission_error")
            assert "memproxy.allowed_origins" in message
            no_access_control(response)
    for path in GET_ROUTES:
        response = await client.get(path, headers={"Origin": origin, **auth})
        assert response.status == 403, path
    assert fake.seen == []


async def test_a_no_cors_get_from_another_site_is_refused_and_a_navigation_is_not(
    app_client: AppClient, admission_settings: Callable[..., Settings]
) -> None:
    client = await app_client(admission_settings())
    for site in ("cross-site", "same-site"):
        image = {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}
        assert (await client.get("/v1/models", headers=image)).status == 403
        navigation = {"Sec-Fetch-Site": site, "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
        assert (await client.get("/ui", headers=navigation)).status == 200
    own = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors"}
    assert (await client.get("/ui/data", headers=own)).status == 200
    typed = {"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}
    assert (await client.get("/ui", headers=typed)).status == 200


async def test_the_gateways_own_page_may_call_it(
    app_client: AppClient, admission_settings: Callable[..., Settings]
) -> None:
    client = await app_client(admission_settings())
    host = f"{client.host}:{client.port}"
    for origin in (f"http://{host}", f"HTTP://{host.upper()}"):
        response = await client.get("/ui/data", headers={"Origin": origin, "Sec-Fetch-Site": "same-origin"})
        assert response.status == 200
        no_access_control(response)
    other_port = f"http://{client.host}:{client.port + 1}"
    assert (await client.get("/ui/data", headers={"Origin": other_port})).status == 403


async def test_a_listed_origin_gets_cors_and_its_preflight_is_answered(
    app_client: AppClient, admission_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    origin = "http://localhost:3000"
    client = await app_client(admission_settings(allowed_origins=[origin]))
    preflight = await client.options(
        "/v1/chat/completions",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os, bad header",
            "Access-Control-Request-Private-Network": "true",
        },
    )
    assert preflight.status == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == origin
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert preflight.headers["Access-Control-Allow-Headers"] == "authorization, content-type, x-stainless-os"
    assert preflight.headers["Access-Control-Allow-Private-Network"] == "true"
    assert preflight.headers["Vary"] == "Origin"

    answer = await client.post("/v1/chat/completions", json=CHAT, headers={"Origin": origin})
    assert answer.status == 200, await answer.text()
    assert answer.headers["Access-Control-Allow-Origin"] == origin
    assert "x-request-id" in answer.headers["Access-Control-Expose-Headers"]
    stream = await client.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers={"Origin": origin}
    )
    assert stream.headers["Access-Control-Allow-Origin"] == origin
    await stream.read()
    assert len(fake.seen) == 2

    refused = await client.options(
        "/v1/chat/completions",
        headers={"Origin": "http://localhost:4000", "Access-Control-Request-Method": "POST"},
    )
    assert refused.status == 403
    no_access_control(refused)


async def test_by_default_no_access_control_header_is_sent(
    app_client: AppClient, admission_settings: Callable[..., Settings]
) -> None:
    client = await app_client(admission_settings())
    for path in GET_ROUTES:
        no_access_control(await client.get(path))
    no_access_control(await client.post("/v1/chat/completions", json=CHAT))
    preflight = await client.options(
        "/v1/chat/completions", headers={"Access-Control-Request-Method": "POST"}
    )
    assert preflight.status == 405
    no_access_control(preflight)


# -- Content-Type ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "text/plain;charset=UTF-8",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
    ],
)
async def test_model_routes_take_only_json(
    app_client: AppClient,
    admission_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    content_type: str | None,
) -> None:
    fake, _ = upstream
    client = await app_client(admission_settings())
    for path, request, dialect in MODEL_ROUTES:
        headers = {**ANTHROPIC, **({"Content-Type": content_type} if content_type else {})}
        oversized = json.dumps({**request, "padding": "x" * (2 * 1024 * 1024)})
        for body in (json.dumps(request), oversized):
            response = await client.post(
                path,
                data=io.BytesIO(body.encode()),
                headers=headers,
                skip_auto_headers=() if content_type else ("Content-Type",),
            )
            assert response.status == 415, (path, content_type)
            kind, message = error_of(await response.json(), dialect)
            assert kind in ("unsupported_media_type", "invalid_request_error")
            assert "Content-Type: application/json" in message
            assert "curl -d needs -H" in message
    assert fake.seen == []


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/json; charset=utf-8", "Application/JSON"]
)
async def test_json_with_any_charset_is_served(
    app_client: AppClient, admission_settings: Callable[..., Settings], content_type: str
) -> None:
    client = await app_client(admission_settings())
    response = await client.post(
        "/v1/chat/completions", data=json.dumps(CHAT).encode(), headers={"Content-Type": content_type}
    )
    assert response.status == 200, await response.text()


# -- /ui -----------------------------------------------------------------------------------------------------


async def test_the_status_page_allows_only_its_own_script_and_style(
    app_client: AppClient, admission_settings: Callable[..., Settings]
) -> None:
    client = await app_client(admission_settings())
    page = await client.get("/ui")
    policy = page.headers["Content-Security-Policy"]
    assert "unsafe-inline" not in policy
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"].startswith("'sha256-")
    assert directives["style-src"].startswith("'sha256-")
    assert directives["frame-ancestors"] == "'none'"
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    data = await client.get("/ui/data")
    assert data.headers["Cache-Control"] == "no-store"


async def test_an_editors_web_view_and_a_default_port_can_be_listed(
    app_client: AppClient, admission_settings: Callable[..., Settings]
) -> None:
    webview = "vscode-webview://1a2b3c4d5e"
    client = await app_client(admission_settings(allowed_origins=[webview.upper(), "http://localhost:80"]))
    for origin in (webview, "http://localhost"):
        response = await client.get("/v1/models", headers={"Origin": origin})
        assert response.status == 200, origin
        assert response.headers["Access-Control-Allow-Origin"] == origin
