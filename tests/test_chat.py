"""/v1/chat/completions through LiteLLM for real, against a fake upstream on loopback."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

import openai
import pytest
import yaml

from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.keys import RUNTIMES
from tests.conftest import (
    FAMILIES,
    MESSAGES,
    SM_KEY,
    UPSTREAM_KEY,
    AppClient,
    LogLines,
    base_config,
    post,
    sse_frames,
)
from tests.fake_upstream import CLEARANCE, FakeUpstream


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", FAMILIES)
async def test_cookie_gate_per_family(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    model: str,
    stream: bool,
) -> None:
    fake, _ = upstream
    fake.gate = True
    client = await app_client(gateway_settings())
    for _ in range(3):
        response = await post(client, {"model": model, "messages": MESSAGES, "stream": stream})
        text = await response.text()
        assert response.status == 200, text
        if stream:
            frames = sse_frames(text)
            assert frames[-1] == "[DONE]"
            content = "".join(
                (json.loads(f)["choices"][0]["delta"].get("content") or "")
                for f in frames[:-1]
                if json.loads(f)["choices"]
            )
        else:
            content = json.loads(text)["choices"][0]["message"]["content"]
        assert content == "Hello from upstream"
    # One challenge, answered at once; every request after it carried the cookie.
    assert fake.challenges == 1
    assert fake.with_cookie == [False, True, True, True]
    health = await (await client.get("/health")).json()
    assert health["cookies"]["count"] == 2
    assert health["cookies"]["names"] == ["__cf_bm", CLEARANCE]
    assert "token-1" not in json.dumps(health)


async def test_jar_persists_across_restart(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
) -> None:
    fake, _ = upstream
    fake.gate = True
    settings = gateway_settings()
    client = await app_client(settings)
    assert (await post(client, {"model": "gpt-up", "messages": MESSAGES})).status == 200
    await client.close()  # runs the cleanup contexts: the jar is saved
    jar_file = settings.gateway.state_dir / "cookies.json"  # type: ignore[operator]
    assert stat.S_IMODE(os.stat(jar_file).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(jar_file.parent).st_mode) == 0o700
    assert CLEARANCE in json.loads(jar_file.read_text()).popitem()[1]

    again = await app_client(settings)
    assert (await post(again, {"model": "claude-up", "messages": MESSAGES})).status == 200
    assert fake.challenges == 1  # no new challenge after the restart
    assert fake.with_cookie == [False, True, True]


async def test_corrupt_jar_is_moved_aside(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    log_lines: LogLines,
) -> None:
    settings = gateway_settings()
    state = settings.gateway.state_dir
    assert state is not None
    state.mkdir(parents=True, exist_ok=True)
    (state / "cookies.json").write_bytes(b"\x80not json, not a pickle")
    client = await app_client(settings)
    assert (await post(client, {"model": "gpt-up", "messages": MESSAGES})).status == 200
    moved = list(state.glob("cookies.json.corrupt-*"))
    assert len(moved) == 1
    assert [line["moved_to"] for line in log_lines.named("cookie_jar_corrupt")] == [str(moved[0])]


async def test_openai_sdk_as_client(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    fake.gate = True
    client = await app_client(gateway_settings())
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
    async with sdk:
        reply = await sdk.chat.completions.create(model="gpt-up", messages=MESSAGES)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == "Hello from upstream"
        pieces = []
        usage = None
        stream = await sdk.chat.completions.create(
            model="claude-up",
            messages=MESSAGES,
            stream=True,
            stream_options={"include_usage": True},  # type: ignore[arg-type]
        )
        async for chunk in stream:
            if chunk.choices:
                pieces.append(chunk.choices[0].delta.content or "")
            if chunk.usage:
                usage = chunk.usage
        assert "".join(pieces) == "Hello from upstream"
        assert usage is not None
        assert usage.total_tokens == 12  # 5 input + 4 read from the prompt cache + 3 output
        models = await sdk.models.list()
        assert "gpt-up" in [m.id for m in models.data]
    assert fake.challenges == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_memory_headers_only_to_supermemory_models(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    stream: bool,
) -> None:
    fake, _ = upstream
    client = await app_client(gateway_settings())
    cases = [
        ("claude-memory", {"User-Agent": "claude-cli/2.1.3"}, "claude-code"),
        ("gpt-memory", {"x-memory-user-id": "alice", "User-Agent": "claude-cli/2.1.3"}, "alice"),
        ("claude-memory", {"User-Agent": "curl/8"}, "default-dev"),
        ("claude-up", {"User-Agent": "claude-cli/2.1.3"}, None),
        ("gpt-up", {"x-memory-user-id": "alice"}, None),
    ]
    for model, headers, user_id in cases:
        response = await post(
            client, {"model": model, "messages": MESSAGES, "stream": stream}, headers=headers
        )
        assert response.status == 200, await response.text()
        seen = {k.lower(): v for k, v in fake.seen[-1].headers.items()}
        assert seen.get("x-sm-user-id") == user_id, model
        if model == "claude-memory":
            assert seen["x-supermemory-api-key"] == SM_KEY
        if user_id is None:
            assert "x-supermemory-api-key" not in seen
            assert "x-memory-user-id" not in seen


async def test_params_pass_through_and_config_cannot_be_overridden(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    client = await app_client(gateway_settings())
    tools = [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    ]
    body = {
        "model": "gpt-4o-up",
        "messages": MESSAGES,
        "temperature": 0.3,
        "max_tokens": 7,
        "stop": ["x"],
        "user": "u1",
        "tools": tools,
        "tool_choice": "auto",
        "response_format": {"type": "json_object"},
        "api_base": "http://127.0.0.1:1/steal",
        "api_key": "client-key",
    }
    response = await post(client, body)
    assert response.status == 200, await response.text()
    sent = fake.seen[-1]
    for key in ("temperature", "max_tokens", "stop", "user", "tools", "tool_choice", "response_format"):
        assert sent.body[key] == body[key], key
    assert sent.body["model"] == "gpt-4o"
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEY}"


async def test_drop_params_is_honoured(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    client = await app_client(gateway_settings())
    # LiteLLM knows `user` only for OpenAI's own catalog models; with drop_params it is dropped elsewhere.
    response = await post(client, {"model": "gpt-up", "messages": MESSAGES, "user": "u1", "seed": 3})
    assert response.status == 200, await response.text()
    assert "user" not in fake.seen[-1].body
    assert fake.seen[-1].body["seed"] == 3


async def test_demo_model_answers_without_upstream(
    app_client: AppClient, make_settings: Callable[..., Settings]
) -> None:
    client = await app_client(make_settings())
    body = await (await post(client, {"model": "demo", "messages": MESSAGES})).json()
    assert body["choices"][0]["message"]["content"] == "hi"
    streamed = await (await post(client, {"model": "demo", "messages": MESSAGES, "stream": True})).text()
    assert sse_frames(streamed)[-1] == "[DONE]"


async def test_jar_saved_soon_after_a_change_while_running(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    fake.gate = True
    settings = gateway_settings()
    client = await app_client(settings)
    assert (await post(client, {"model": "claude-up", "messages": MESSAGES})).status == 200
    jar_file = settings.gateway.state_dir / "cookies.json"  # type: ignore[operator]
    for _ in range(100):  # debounced: saved about a second after the Set-Cookie, not at shutdown only
        if jar_file.exists():
            break
        await asyncio.sleep(0.1)
    assert CLEARANCE in jar_file.read_text()
    assert (await client.get("/health")).status == 200  # still serving: not the shutdown save


async def test_reload_lets_requests_in_flight_finish_on_the_old_config(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    fake.chunk_delay_s = 0.2
    settings = gateway_settings()
    client = await app_client(settings)
    app = client.server.app
    assert app is not None
    response = await post(client, {"model": "gpt-up", "messages": MESSAGES, "stream": True})
    assert response.status == 200
    await response.content.readline()
    old = app[RUNTIMES].current
    settings.source.write_text(yaml.safe_dump(base_config()))  # gpt-up is gone from the file
    assert app[RUNTIMES].reload(app)
    rest = (await response.text()).split("\n\n")
    assert "data: [DONE]" in rest  # finished on the config it started with
    assert (await post(client, {"model": "gpt-up", "messages": MESSAGES})).status == 404
    for _ in range(100):  # the old clients are closed once the old config's last request is done
        if old.gateway.closed:
            break
        await asyncio.sleep(0.05)
    assert old.gateway.closed
    assert not app[RUNTIMES].current.gateway.closed
