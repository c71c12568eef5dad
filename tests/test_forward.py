"""Forward mode: every API request proxied raw to an upstream through the same session, jar and retry."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict

from aiohttp_memproxy.config.settings import Settings
from tests.conftest import MASTER_KEY, MESSAGES, AppClient, LogLines, base_config, sse_frames
from tests.fake_upstream import FakeUpstream
from tests.test_cli import free_port, wait_ready
from tests.test_service import start

LITELLM_KEY = "sk-litellm-proxy-key-0123456789"


@pytest.fixture
def forward_settings(make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]) -> Settings:
    _, url = upstream
    doc = base_config(
        model_list=[
            {"model_name": "gpt-up", "litellm_params": {"model": "openai/gpt-up"}},
            {
                "model_name": "claude-memory",
                "litellm_params": {"model": "anthropic/claude-memory"},
                "model_info": {"supermemory": True},
            },
        ],
        general_settings={"master_key": MASTER_KEY},
        user_id_mappings={
            "header_patterns": [{"header": "user-agent", "pattern": "^claude-cli", "user_id": "claude-code"}]
        },
        memproxy={"mode": "forward", "upstream": url, "upstream_key": LITELLM_KEY, "retry_base_delay_s": 0},
    )
    return make_settings(doc)


async def test_plain_and_streaming_chat_pass_through_with_the_key_replaced(
    app_client: AppClient, forward_settings: Settings, upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    fake.gate = True
    client = await app_client(forward_settings)
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    body = {"model": "gpt-up", "messages": MESSAGES}
    response = await client.post("/v1/chat/completions", json=body, headers=auth)
    assert response.status == 200
    assert (await response.json())["choices"][0]["message"]["content"] == "Hello from upstream"
    streamed = await client.post("/v1/chat/completions", json={**body, "stream": True}, headers=auth)
    assert streamed.status == 200
    assert streamed.headers["Content-Type"].startswith("text/event-stream")
    assert sse_frames(await streamed.text())[-1] == "[DONE]"
    assert fake.challenges == 1  # answered by the same jar and retry as the SDK path
    assert fake.with_cookie == [False, True, True]
    for seen in fake.seen:
        assert seen.headers["Authorization"] == f"Bearer {LITELLM_KEY}"
        assert MASTER_KEY not in json.dumps(seen.headers)
        assert "x-sm-user-id" not in seen.headers
    assert fake.seen[-1].body == {**body, "stream": True}  # the body as the client sent it


async def test_messages_get_memory_headers_and_the_upstream_key(
    app_client: AppClient, forward_settings: Settings, upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    client = await app_client(forward_settings)
    headers = {"x-api-key": MASTER_KEY, "User-Agent": "claude-cli/2.1.3", "anthropic-version": "2023-06-01"}
    body = {"model": "claude-memory", "max_tokens": 5, "messages": MESSAGES, "stream": True}
    response = await client.post("/v1/messages?beta=true", json=body, headers=headers)
    assert response.status == 200
    assert b"message_stop" in await response.read()
    seen = fake.seen[-1]
    assert seen.path == "/v1/messages"
    assert seen.headers["x-api-key"] == LITELLM_KEY
    assert "Authorization" not in seen.headers
    assert seen.headers["x-sm-user-id"] == "claude-code"
    assert seen.headers["anthropic-version"] == "2023-06-01"


async def test_upstream_status_and_unreachable(
    app_client: AppClient, make_settings: Callable[..., Settings], forward_settings: Settings
) -> None:
    client = await app_client(forward_settings)
    missing = await client.get("/v1/nothing-here", headers={"x-api-key": MASTER_KEY})
    assert missing.status == 404  # the upstream's own answer, passed on
    refused = await client.post("/v1/chat/completions", json={}, headers={"x-api-key": "wrong"})
    assert refused.status == 401  # our auth still guards the forward path
    dead = make_settings(base_config(memproxy={"mode": "forward", "upstream": "http://127.0.0.1:9"}))
    dead_client = await app_client(dead)
    response = await dead_client.post("/v1/chat/completions", json={"model": "x", "messages": MESSAGES})
    assert response.status == 502
    assert (await response.json())["error"]["code"] == "upstream_unreachable"


def test_forward_mode_needs_an_upstream(make_settings: Callable[..., Settings]) -> None:
    from aiohttp_memproxy.config.settings import ConfigError

    with pytest.raises(ConfigError) as caught:
        make_settings(base_config(memproxy={"mode": "forward"}))
    assert caught.value.errors == (
        "memproxy: mode forward needs memproxy.upstream (or --upstream, or MEMPROXY_UPSTREAM)",
    )


@pytest.mark.subprocess
async def test_cli_rollback_switch_from_the_environment(
    child_env: dict[str, str],
    write_config: Callable[[dict[str, Any] | str], Path],
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
) -> None:
    fake, url = upstream
    port = free_port()
    env = {**child_env, "USE_SDK_PROXY": "false", "MEMPROXY_UPSTREAM": url}
    process = start(write_config(base_config()), port, tmp_path / "state", env)
    try:
        await wait_ready(port)
        chat = f"http://127.0.0.1:{port}/v1/chat/completions"
        async with (
            aiohttp.ClientSession() as session,
            session.post(chat, json={"model": "any", "messages": MESSAGES}) as r,
        ):
            assert r.status == 200
        assert fake.seen[-1].body["model"] == "any"  # went to the upstream raw, not through LiteLLM
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


@pytest.mark.parametrize("model_list", [[], None], ids=["empty", "absent"])
async def test_forward_mode_needs_no_model(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    log_lines: LogLines,
    model_list: list[Any] | None,
) -> None:
    """The rollback path proxies raw: a config with no model (as a LiteLLM proxy accepts) serves it."""
    fake, url = upstream
    doc: dict[str, Any] = {"memproxy": {"mode": "forward", "upstream": url}}
    if model_list is not None:
        doc["model_list"] = model_list
    client = await app_client(make_settings(doc))
    response = await client.post("/v1/chat/completions", json={"model": "any", "messages": MESSAGES})
    assert response.status == 200
    assert fake.seen[-1].body["model"] == "any"
    assert log_lines.named("model_list_empty") == []  # forward mode: nothing to warn about


async def test_sdk_mode_with_no_model_warns_and_serves(
    app_client: AppClient, make_settings: Callable[..., Settings], log_lines: LogLines
) -> None:
    client = await app_client(make_settings({"model_list": []}))
    assert [line["event"] for line in log_lines.named("model_list_empty")] == ["model_list_empty"]
    response = await client.post("/v1/chat/completions", json={"model": "any", "messages": MESSAGES})
    assert response.status == 404
    assert (await client.get("/health")).status == 200


class Recorder:
    """An upstream that answers every path, and says any origin may read it (as a LiteLLM proxy may)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def app(self) -> web.Application:
        async def answer(request: web.Request) -> web.Response:
            self.seen.append(request.raw_path)
            await request.read()
            headers = CIMultiDict(
                [
                    ("Access-Control-Allow-Origin", "*"),
                    ("Access-Control-Allow-Origin", "https://upstream.example"),
                    ("Access-Control-Allow-Credentials", "true"),
                    ("Vary", "Accept-Encoding"),
                ]
            )
            return web.json_response({"ok": True}, headers=headers)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", answer)
        return app


async def raw_post(port: int, path: str) -> tuple[int, bytes]:
    """A request line exactly as written: HTTP clients would resolve the dot segments before sending."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"model": "gpt-up", "messages": MESSAGES}).encode()
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {MASTER_KEY}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    answer = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, rest = answer.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), rest


@pytest.mark.parametrize(
    "path",
    [
        "/v1/../key/generate",
        "/v1/%2e%2e/key/generate",
        "/v1/%2E%2E/key/generate",
        "/v1/.%2e/key/generate",
        "/v1/./chat/completions",
        "/v1/chat%2f..%2fkey/generate",
        "/v1/chat%5c..%5ckey/generate",
        "/v1/chat\\..\\key/generate",
        "/v1/chat/completions/..",
        "http://127.0.0.1:9/v1/chat/completions",
        "m://x/v1/chat/completions",
    ],
)
async def test_forward_mode_stays_in_its_prefixes(
    make_settings: Callable[..., Settings], aiohttp_server: Any, app_client: AppClient, path: str
) -> None:
    recorder = Recorder()
    upstream = await aiohttp_server(recorder.app())
    settings = make_settings(
        base_config(
            general_settings={"master_key": MASTER_KEY},
            memproxy={"mode": "forward", "upstream": str(upstream.make_url("")), "upstream_key": LITELLM_KEY},
        )
    )
    client = await app_client(settings)
    assert client.port is not None
    status, body = await raw_post(client.port, path)
    assert status == 400, body
    assert json.loads(body)["error"]["param"] == "path"
    assert recorder.seen == []
    status, _ = await raw_post(client.port, "/v1/chat/completions?x=%3F")
    assert status == 200
    assert recorder.seen == ["/v1/chat/completions?x=%3F"]


async def test_the_upstreams_cors_answer_is_never_relayed(
    make_settings: Callable[..., Settings], aiohttp_server: Any, app_client: AppClient
) -> None:
    recorder = Recorder()
    upstream = await aiohttp_server(recorder.app())
    origin = "http://localhost:3000"
    settings = make_settings(
        base_config(
            memproxy={"mode": "forward", "upstream": str(upstream.make_url("")), "allowed_origins": [origin]}
        )
    )
    client = await app_client(settings)
    plain = await client.post("/v1/chat/completions", json={"model": "m", "messages": MESSAGES})
    assert plain.status == 200
    assert not [name for name in plain.headers if name.lower().startswith("access-control-")]
    listed = await client.post(
        "/v1/chat/completions", json={"model": "m", "messages": MESSAGES}, headers={"Origin": origin}
    )
    assert listed.headers.getall("Access-Control-Allow-Origin") == [origin]  # the gateway's own, for it
    assert "Access-Control-Allow-Credentials" not in listed.headers
    assert listed.headers.getall("Vary") == ["Accept-Encoding", "Origin"]


async def test_an_upstream_that_breaks_off_mid_body_leaves_the_client_a_truncated_body(
    app_client: AppClient, forward_settings: Settings, upstream: tuple[FakeUpstream, str], log_lines: LogLines
) -> None:
    """Raw bytes have no error frame: the client must see the body cut short, never a complete one."""
    fake, _ = upstream
    fake.cut_after = 2
    client = await app_client(forward_settings)
    body = {"model": "gpt-up", "messages": MESSAGES, "stream": True}
    response = await client.post(
        "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {MASTER_KEY}"}
    )
    assert response.status == 200
    with pytest.raises(aiohttp.ClientPayloadError):
        await response.read()
    assert log_lines.named("upstream_broke_off")


async def test_gemini_requests_are_forwarded_with_the_key_parameter_replaced(
    app_client: AppClient, forward_settings: Settings, upstream: tuple[FakeUpstream, str]
) -> None:
    """Google's API goes to the LiteLLM proxy too; the client's ?key= (the gateway's master key) never does:
    the upstream key rides in x-goog-api-key."""
    fake, _ = upstream
    client = await app_client(forward_settings)
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    for path, name in (
        ("/v1beta/models/gemini-up:generateContent", "key"),
        ("/gemini/v1beta/models/gemini-up:generateContent", "k%65y"),  # percent-encoded: still the key
    ):
        response = await client.post(f"{path}?{name}={MASTER_KEY}&x=1", json=body)
        assert response.status == 200, await response.text()
        seen = fake.seen[-1]
        assert seen.path == path
        assert seen.query == "x=1"
        assert seen.headers["x-goog-api-key"] == LITELLM_KEY
        assert MASTER_KEY not in json.dumps(seen.headers)
