"""LiteLLM's routing semantics through the gateway: several deployments per model, fallbacks, retries and
cooldowns, against fake upstreams that fail on purpose, with the official SDKs as clients."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from aiohttp_memproxy.routing import USER_ID_HEADER
from aiohttp_memproxy.settings import Settings
from tests.conftest import SM_KEY, UPSTREAM_KEY, AppClient, LogLines, base_config
from tests.fake_upstream import FakeUpstream, Scripted

MESSAGES = [{"role": "user", "content": "hi"}]
CLAUDE_CODE = {"User-Agent": "claude-cli/2.1.328 (external, sdk-cli)", "x-claude-code-session-id": "sess-7"}


Upstreams = Callable[[int], Any]


@pytest.fixture
def upstreams(aiohttp_server: Any) -> Callable[[int], Any]:
    """n fake upstreams on loopback: [(fake, base url)]."""

    async def start(count: int) -> list[tuple[FakeUpstream, str]]:
        started = []
        for _ in range(count):
            fake = FakeUpstream()
            server: TestServer = await aiohttp_server(fake.app())
            started.append((fake, str(server.make_url("")).rstrip("/")))
        return started

    return start


def anthropic_at(name: str, url: str, **info: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model_name": name,
        "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_base": url, "api_key": UPSTREAM_KEY},
    }
    if info.get("supermemory"):
        entry["litellm_params"]["extra_headers"] = {"x-supermemory-api-key": SM_KEY}
    if info:
        entry["model_info"] = info
    return entry


def openai_at(name: str, url: str, **info: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "model_name": name,
        "litellm_params": {"model": "openai/gpt-4o", "api_base": f"{url}/v1", "api_key": UPSTREAM_KEY},
    }
    if info:
        entry["model_info"] = info
    return entry


class Sdks:
    """The official SDKs pointed at the gateway, closed when the test ends."""

    def __init__(self) -> None:
        self.made: list[anthropic.AsyncAnthropic | openai.AsyncOpenAI] = []

    def claude(self, client: TestClient[web.Request, web.Application]) -> anthropic.AsyncAnthropic:
        sdk = anthropic.AsyncAnthropic(
            base_url=str(client.make_url("")), api_key="unused", max_retries=0, default_headers=CLAUDE_CODE
        )
        self.made.append(sdk)
        return sdk

    def gpt(self, client: TestClient[web.Request, web.Application]) -> openai.AsyncOpenAI:
        sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
        self.made.append(sdk)
        return sdk


@pytest.fixture
async def sdks() -> AsyncIterator[Sdks]:
    made = Sdks()
    yield made
    for sdk in made.made:
        await sdk.close()


def failing(status: int, count: int = 50, **headers: str) -> list[Scripted]:
    body = {"error": {"message": "broken on purpose", "type": "api_error"}}
    return [Scripted(status, body, dict(headers)) for _ in range(count)]


async def metric(client: TestClient[web.Request, web.Application], name: str) -> dict[str, float]:
    text = await (await client.get("/metrics")).text()
    found = {}
    for line in text.splitlines():
        if line.startswith(name + "{"):
            labels, value = line[len(name) :].rsplit(" ", 1)
            found[labels] = float(value)
    return found


async def test_a_broken_supermemory_is_skipped_for_the_direct_deployment(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstreams: Upstreams,
    log_lines: LogLines,
    sdks: Sdks,
) -> None:
    """The rollout plan's circuit breaker: Supermemory fails, Claude Code never notices, and after
    allowed_fails + 1 failures Supermemory is left alone for cooldown_time."""
    (memory, memory_url), (direct, direct_url) = await upstreams(2)
    memory.script = failing(500)
    settings = make_settings(
        base_config(
            model_list=[
                anthropic_at("claude-sonnet", memory_url, supermemory=True),
                anthropic_at("claude-direct", direct_url),
            ],
            router_settings={
                "fallbacks": [{"claude-sonnet": ["claude-direct"]}],
                "allowed_fails": 1,
                "cooldown_time": 30,
            },
        )
    )
    client = await app_client(settings)
    sdk = sdks.claude(client)
    for _ in range(5):
        message = await sdk.messages.create(model="claude-sonnet", max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]
        assert message.content[0].text == "Hello from upstream"  # type: ignore[union-attr]
    async with sdk.messages.stream(model="claude-sonnet", max_tokens=64, messages=MESSAGES) as stream:  # type: ignore[arg-type]
        assert await stream.get_final_text() == "Hello from upstream"

    assert len(memory.seen) == 2  # allowed_fails + 1, then the cooldown
    assert len(direct.seen) == 6
    assert [seen.headers.get(USER_ID_HEADER) for seen in memory.seen] == ["default-dev"] * 2
    assert [seen.headers.get("x-sm-conversation-id") for seen in memory.seen] == ["sess-7"] * 2
    assert all(USER_ID_HEADER not in {k.lower() for k in seen.headers} for seen in direct.seen)
    assert all("x-supermemory-api-key" not in {k.lower() for k in seen.headers} for seen in direct.seen)

    health = await (await client.get("/health")).json()
    [cooling] = health["cooldowns"]
    assert cooling["model"] == "claude-sonnet"
    assert cooling["deployment"] == "claude-sonnet/0"
    assert 25 < cooling["remaining_s"] <= 30
    assert await metric(client, "memproxy_fallbacks_total") == {'{model="claude-sonnet"}': 6.0}
    assert await metric(client, "memproxy_deployment_cooldowns_total") == {'{model="claude-sonnet"}': 1.0}
    lines = [line for line in log_lines.named("request") if line["route"] == "/v1/messages"]
    assert len(lines) == 6
    assert [line["deployment"] for line in lines[-6:]] == [f"anthropic/{direct_url[7:]}"] * 6
    assert all(line["fallback"] is True for line in lines[-6:])


async def test_load_spreads_over_deployments_and_memory_headers_go_only_to_supermemory(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstreams: Upstreams,
    log_lines: LogLines,
    sdks: Sdks,
) -> None:
    """Two deployments under one model_name (LiteLLM's load balancing): one served through Supermemory,
    one not. Wherever the Router sends a request, the memory user goes only to the Supermemory one."""
    (memory, memory_url), (plain, plain_url) = await upstreams(2)
    settings = make_settings(
        base_config(model_list=[openai_at("gpt", memory_url, supermemory=True), openai_at("gpt", plain_url)])
    )
    client = await app_client(settings)
    sdk = sdks.gpt(client)
    for index in range(30):
        if index % 2:
            completion = await sdk.chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
            assert completion.choices[0].message.content == "Hello from upstream"
        else:
            stream = await sdk.chat.completions.create(model="gpt", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
            assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices]) == (
                "Hello from upstream"
            )
    assert len(memory.seen) + len(plain.seen) == 30
    assert len(memory.seen) >= 5  # simple-shuffle: each gets about half
    assert len(plain.seen) >= 5
    assert all(seen.headers.get(USER_ID_HEADER) == "default-dev" for seen in memory.seen)
    assert all(USER_ID_HEADER not in seen.headers for seen in plain.seen)
    lines = [line for line in log_lines.named("request") if line["route"] == "/v1/chat/completions"]
    assert {line["deployment"] for line in lines} == {f"openai/{memory_url[7:]}", f"openai/{plain_url[7:]}"}
    assert not any(line["fallback"] for line in lines)
    assert await metric(client, "memproxy_fallbacks_total") == {}
    assert (await (await client.get("/health")).json())["cooldowns"] == []


@pytest.mark.parametrize("stream", [False, True])
async def test_a_refused_connection_falls_back_before_the_first_byte(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstreams: Upstreams,
    stream: bool,
    sdks: Sdks,
) -> None:
    [(backup, backup_url)] = await upstreams(1)
    settings = make_settings(
        base_config(
            model_list=[openai_at("gpt", "http://127.0.0.1:9"), openai_at("gpt-backup", backup_url)],
            router_settings={"fallbacks": [{"gpt": ["gpt-backup"]}]},
        )
    )
    client = await app_client(settings)
    sdk = sdks.gpt(client)
    for _ in range(3):
        if stream:
            chunks = await sdk.chat.completions.create(model="gpt", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
            text = "".join([c.choices[0].delta.content or "" async for c in chunks if c.choices])
        else:
            completion = await sdk.chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
            text = completion.choices[0].message.content or ""
        assert text == "Hello from upstream"
    assert len(backup.seen) == 3


async def test_a_timeout_falls_back(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Upstreams, sdks: Sdks
) -> None:
    """A deployment's own ``timeout`` (litellm_params) bounds the wait for its answer."""
    (slow, slow_url), (backup, backup_url) = await upstreams(2)
    slow.delay_s = 5
    model = openai_at("gpt", slow_url)
    model["litellm_params"]["timeout"] = 0.5
    settings = make_settings(
        base_config(
            model_list=[model, openai_at("gpt-backup", backup_url)],
            router_settings={"fallbacks": [{"gpt": ["gpt-backup"]}]},
        )
    )
    client = await app_client(settings)
    started = time.monotonic()
    completion = await sdks.gpt(client).chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Hello from upstream"
    assert time.monotonic() - started < 4  # not the slow upstream's 5 s
    assert len(slow.seen) == 1
    assert len(backup.seen) == 1


async def test_429_with_retry_after_cools_the_deployment_down_that_long(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Upstreams, sdks: Sdks
) -> None:
    """Retry-After longer than the transport may wait: the Router moves on at once, and leaves the
    throttled deployment alone for as long as the upstream asked."""
    (throttled, throttled_url), (other, other_url) = await upstreams(2)
    throttled.script = failing(429, **{"Retry-After": "120"})
    settings = make_settings(
        base_config(
            model_list=[openai_at("gpt", throttled_url), openai_at("gpt", other_url)],
            router_settings={"allowed_fails": 0, "num_retries": 1},
        )
    )
    client = await app_client(settings)
    sdk = sdks.gpt(client)
    for _ in range(8):
        completion = await sdk.chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "Hello from upstream"
    assert len(throttled.seen) <= 1  # allowed_fails + 1 at most; none if the shuffle never picked it
    assert len(other.seen) == 8
    if throttled.seen:
        [cooling] = (await (await client.get("/health")).json())["cooldowns"]
        assert cooling["deployment"] == "gpt/0"
        assert 110 < cooling["remaining_s"] <= 120  # the upstream's Retry-After, not cooldown_time's default


async def test_a_context_window_error_goes_to_the_context_window_fallback(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Upstreams, sdks: Sdks
) -> None:
    (small, small_url), (large, large_url) = await upstreams(2)
    small.script = [
        Scripted(
            400,
            {
                "error": {
                    "message": "This model's maximum context length is 8192 tokens. However, your messages "
                    "resulted in 9000 tokens.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            },
        )
    ]
    settings = make_settings(
        base_config(
            model_list=[openai_at("gpt-small", small_url), openai_at("gpt-large", large_url)],
            router_settings={"context_window_fallbacks": [{"gpt-small": ["gpt-large"]}]},
        )
    )
    client = await app_client(settings)
    completion = await sdks.gpt(client).chat.completions.create(model="gpt-small", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Hello from upstream"
    assert len(small.seen) == 1
    assert len(large.seen) == 1


async def test_a_stream_cut_after_its_first_byte_does_not_fall_back(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Upstreams, sdks: Sdks
) -> None:
    """The client already holds the start of one answer: it gets an error, never the rest of another."""
    (cut, cut_url), (backup, backup_url) = await upstreams(2)
    cut.cut_after = 1  # the role chunk only: LiteLLM's Router would still fall back here
    settings = make_settings(
        base_config(
            model_list=[openai_at("gpt", cut_url), openai_at("gpt-backup", backup_url)],
            router_settings={"fallbacks": [{"gpt": ["gpt-backup"]}]},
        )
    )
    client = await app_client(settings)
    response = await client.post(
        "/v1/chat/completions", json={"model": "gpt", "messages": MESSAGES, "stream": True}
    )
    text = await response.text()
    assert response.status == 200
    frames = [line[6:] for line in text.split("\n\n") if line.startswith("data: ")]
    assert json.loads(frames[0])["choices"][0]["delta"]["role"] == "assistant"
    assert json.loads(frames[-1])["error"]["code"] == "upstream_unreachable"
    assert "Hello" not in text
    assert backup.seen == []


async def test_responses_fall_back_too(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Upstreams, sdks: Sdks
) -> None:
    (broken, broken_url), (backup, backup_url) = await upstreams(2)
    broken.script = failing(500)
    settings = make_settings(
        base_config(
            model_list=[openai_at("codex", broken_url), anthropic_at("codex-backup", backup_url)],
            router_settings={"fallbacks": [{"codex": ["codex-backup"]}], "allowed_fails": 0},
        )
    )
    client = await app_client(settings)
    sdk = sdks.gpt(client)
    response = await sdk.responses.create(model="codex", input="hi")
    assert response.output_text == "Hello from upstream"
    stream = await sdk.responses.create(model="codex", input="hi", stream=True)
    events = [event async for event in stream]
    assert events[-1].type == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") == "Hello from upstream"
    assert len(broken.seen) == 1  # then cooling down: allowed_fails 0
    assert [seen.path for seen in backup.seen] == ["/v1/messages", "/v1/messages"]
