"""LiteLLM's routing semantics through the gateway: several deployments per model, fallbacks, retries and
cooldowns, against fake upstreams that fail on purpose, with the official SDKs as clients."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import litellm
import openai
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient
from litellm.router_rust.invoke import endpoints

from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.keys import RUNTIMES
from aiohttp_memproxy.llm import patches
from aiohttp_memproxy.llm import router as llm_router
from aiohttp_memproxy.resolve.memory import USER_ID_HEADER
from tests.conftest import SM_KEY, UPSTREAM_KEY, AppClient, LogLines, base_config
from tests.fake_upstream import Scripted

MESSAGES = [{"role": "user", "content": "hi"}]
CLAUDE_CODE = {"User-Agent": "claude-cli/2.1.328 (external, sdk-cli)", "x-claude-code-session-id": "sess-7"}


Upstreams = Callable[[int], Any]


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


def owned_by(callback: Any, router: Any) -> bool:
    """A bound method of the gateway's Router: of LiteLLM's Router it holds, or of that Router's core."""
    owner = getattr(callback, "__self__", None)
    return owner is not None and (owner is router.litellm or owner is router.litellm._core)


def weighted(entry: dict[str, Any], weight: int) -> dict[str, Any]:
    """simple-shuffle picks by litellm_params.weight: a heavy deployment is tried first, near certainly."""
    entry["litellm_params"]["weight"] = weight
    return entry


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
            model_list=[weighted(openai_at("gpt", throttled_url), 1000), openai_at("gpt", other_url)],
            router_settings={"allowed_fails": 0, "num_retries": 1},
        )
    )
    client = await app_client(settings)
    sdk = sdks.gpt(client)
    for _ in range(8):
        completion = await sdk.chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "Hello from upstream"
    assert len(throttled.seen) == 1  # picked first (its weight): allowed_fails + 1, then cooling down
    assert len(other.seen) == 8
    [cooling] = (await (await client.get("/health")).json())["cooldowns"]
    assert cooling["deployment"] == "gpt/0"
    assert 110 < cooling["remaining_s"] <= 120  # the upstream's Retry-After, not cooldown_time's default


CONTEXT_WINDOW = {
    "message": "This model's maximum context length is 8192 tokens. However, your messages resulted in 9000 "
    "tokens.",
    "type": "invalid_request_error",
    "param": "messages",
    "code": "context_length_exceeded",
}
CONTENT_POLICY = {
    "message": "Your request was rejected as a result of our safety system.",
    "type": "invalid_request_error",
    "param": None,
    "code": "content_policy_violation",
}


@pytest.mark.parametrize(
    ("error", "key"),
    [(CONTEXT_WINDOW, "context_window_fallbacks"), (CONTENT_POLICY, "content_policy_fallbacks")],
)
async def test_a_context_window_or_content_policy_error_goes_to_its_own_fallback(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstreams: Upstreams,
    sdks: Sdks,
    error: dict[str, Any],
    key: str,
) -> None:
    """Each kind of fallback list answers its own kind of error; the generic list is not consulted."""
    (small, small_url), (large, large_url), (other, other_url) = await upstreams(3)
    small.script = [Scripted(400, {"error": error})]
    settings = make_settings(
        base_config(
            model_list=[
                openai_at("gpt-small", small_url),
                openai_at("gpt-large", large_url),
                openai_at("gpt-other", other_url),
            ],
            router_settings={
                key: [{"gpt-small": ["gpt-large"]}],
                "fallbacks": [{"gpt-small": ["gpt-other"]}],
            },
        )
    )
    client = await app_client(settings)
    completion = await sdks.gpt(client).chat.completions.create(model="gpt-small", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Hello from upstream"
    assert len(small.seen) == 1
    assert len(large.seen) == 1
    assert other.seen == []


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


async def test_retry_policy_retries_the_same_deployment(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Upstreams, sdks: Sdks
) -> None:
    [(flaky, flaky_url)] = await upstreams(1)
    flaky.script = failing(500, count=2)
    settings = make_settings(
        base_config(
            model_list=[openai_at("gpt", flaky_url)],
            router_settings={"retry_policy": {"InternalServerErrorRetries": 2}, "retry_after": 0},
        )
    )
    client = await app_client(settings)
    completion = await sdks.gpt(client).chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Hello from upstream"
    assert len(flaky.seen) == 3


async def test_no_retry_past_the_policy(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Upstreams, sdks: Sdks
) -> None:
    [(broken, broken_url)] = await upstreams(1)
    broken.script = failing(500)
    settings = make_settings(
        base_config(
            model_list=[openai_at("gpt", broken_url)],
            router_settings={"retry_policy": {"InternalServerErrorRetries": 1}},
        )
    )
    client = await app_client(settings)
    with pytest.raises(openai.InternalServerError) as caught:
        await sdks.gpt(client).chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
    assert caught.value.status_code == 500
    assert len(broken.seen) == 2  # the first try and one retry


async def test_messages_fall_back_to_an_openai_deployment_translated_for_it(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Upstreams, sdks: Sdks
) -> None:
    """A fallback hop is adapted to its own deployment: Claude Code's Anthropic-only fields stay with
    Anthropic, and an OpenAI-compatible model LiteLLM does not know gets chat completions."""
    (broken, broken_url), (backup, backup_url) = await upstreams(2)
    broken.script = failing(529)
    local = openai_at("local", backup_url)
    local["litellm_params"]["model"] = "openai/local-coder"
    settings = make_settings(
        base_config(
            model_list=[anthropic_at("claude-sonnet", broken_url), local],
            router_settings={"fallbacks": [{"claude-sonnet": ["local"]}]},
        )
    )
    client = await app_client(settings)
    message = await sdks.claude(client).messages.create(
        model="claude-sonnet",
        max_tokens=2048,
        messages=MESSAGES,  # type: ignore[arg-type]
        thinking={"type": "enabled", "budget_tokens": 1024},
        metadata={"user_id": '{"device_id": "d", "session_id": "s"}'},
    )
    assert message.content[-1].text == "Hello from upstream"  # type: ignore[union-attr]
    assert broken.seen[0].body["thinking"] == {"type": "enabled", "budget_tokens": 1024}
    assert broken.seen[0].body["metadata"] == {"user_id": '{"device_id": "d", "session_id": "s"}'}
    [seen] = backup.seen
    assert seen.path == "/v1/chat/completions"
    assert "user" not in seen.body
    assert "reasoning_effort" not in seen.body


async def test_a_reload_swaps_the_routing_table(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Upstreams, sdks: Sdks
) -> None:
    (broken, broken_url), (backup, backup_url) = await upstreams(2)
    broken.script = failing(500)
    models = [openai_at("gpt", broken_url), openai_at("gpt-backup", backup_url)]
    settings = make_settings(
        base_config(model_list=models, router_settings={"fallbacks": [{"gpt": ["gpt-backup"]}]})
    )
    client = await app_client(settings)
    app = client.server.app
    assert app is not None
    sdk = sdks.gpt(client)
    assert (await sdk.chat.completions.create(model="gpt", messages=MESSAGES)).choices  # type: ignore[arg-type]
    old = app[RUNTIMES].current
    # The Router's bookkeeping runs for its own calls only, not in LiteLLM's global lists (every call's).
    assert not any(
        owned_by(callback, old.gateway.router)
        for name in llm_router.CALLBACK_LISTS
        for callback in getattr(litellm, name)
    )
    assert vars(endpoints)["compact_to_fit"] is patches._adapted_attempt

    settings.source.write_text(yaml.safe_dump(base_config(model_list=models)))  # no fallback any more
    assert app[RUNTIMES].reload(app)
    with pytest.raises(openai.InternalServerError):
        await sdk.chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
    assert len(backup.seen) == 1
    for _ in range(100):  # the old Router leaves LiteLLM's callbacks once its last request is done
        if old.gateway.closed:
            break
        await asyncio.sleep(0.05)
    assert old.gateway.closed
    for name in llm_router.CALLBACK_LISTS:
        assert not any(owned_by(callback, old.gateway.router) for callback in getattr(litellm, name))
    # Two single deployments, no routing key: direct calls.
    assert app[RUNTIMES].current.gateway.router is None


async def test_a_throttled_deployment_is_not_waited_for_when_another_can_answer(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Upstreams, sdks: Sdks
) -> None:
    """A Retry-After the transport would wait out alone (2 s): with another deployment to go to, the
    Router moves on at once, and the throttled one cools down for those 2 s."""
    (throttled, throttled_url), (other, other_url) = await upstreams(2)
    throttled.script = failing(429, **{"Retry-After": "2"})
    settings = make_settings(
        base_config(
            model_list=[weighted(openai_at("gpt", throttled_url), 1000), openai_at("gpt", other_url)],
            router_settings={"num_retries": 1, "allowed_fails": 0},
        )
    )
    client = await app_client(settings)
    sdk = sdks.gpt(client)
    started = time.monotonic()
    for _ in range(6):
        completion = await sdk.chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
        assert completion.choices[0].message.content == "Hello from upstream"
    assert time.monotonic() - started < 1.5
    assert len(throttled.seen) == 1  # picked first (its weight), then cooling down
    assert "weight" not in throttled.seen[0].body  # a routing key, never sent upstream
    assert len(other.seen) == 6


@pytest.mark.parametrize("allowed_fails", [0, 3])
async def test_a_group_whose_deployments_all_cool_down_answers_503_with_retry_after(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstreams: Upstreams,
    sdks: Sdks,
    allowed_fails: int,
) -> None:
    """allowed_fails as written, 3 included (LiteLLM takes its default for "unset", and would never cool a
    group of one deployment down); then the gateway's own 503, never "the upstream"."""
    [(broken, broken_url)] = await upstreams(1)
    broken.script = failing(500)
    settings = make_settings(
        base_config(
            model_list=[openai_at("gpt", broken_url)],
            router_settings={"allowed_fails": allowed_fails, "cooldown_time": 30},
        )
    )
    client = await app_client(settings)
    sdk = sdks.gpt(client)
    for _ in range(allowed_fails + 1):
        with pytest.raises(openai.InternalServerError) as upstream_failed:
            await sdk.chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
        assert upstream_failed.value.code == "upstream_error"
    with pytest.raises(openai.APIStatusError) as cooling:
        await sdk.chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
    assert cooling.value.status_code == 503
    assert cooling.value.code == "model_cooling_down"
    assert "upstream" not in cooling.value.message
    assert 25 <= int(cooling.value.response.headers["Retry-After"]) <= 30
    assert len(broken.seen) == allowed_fails + 1
    response = await client.post(
        "/v1/messages",
        json={"model": "gpt", "max_tokens": 16, "messages": MESSAGES},
        headers={"anthropic-version": "2023-06-01"},
    )
    assert response.status == 503
    assert (await response.json())["error"]["type"] == "overloaded_error"


@pytest.mark.parametrize("strategy", ["least-busy", "usage-based-routing-v2", "latency-based-routing"])
async def test_a_reload_hands_the_routing_strategy_to_the_new_router(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstreams: Upstreams,
    sdks: Sdks,
    strategy: str,
) -> None:
    """LiteLLM registers a strategy's selector in its global callbacks only if none equal to it is there,
    and never removes it: the new Router's must be the one registered, the old one's gone."""
    [(fake, url)] = await upstreams(1)
    doc = base_config(
        model_list=[openai_at("gpt", url), openai_at("gpt", url)],
        router_settings={"routing_strategy": strategy},
    )
    settings = make_settings(doc)
    client = await app_client(settings)
    app = client.server.app
    assert app is not None
    old = app[RUNTIMES].current.gateway.router
    assert old is not None
    [old_selector] = old._selectors()
    assert any(callback is old_selector for callback in litellm.callbacks)
    assert app[RUNTIMES].reload(app)
    new = app[RUNTIMES].current.gateway.router
    assert new is not None
    [new_selector] = new._selectors()
    assert any(callback is new_selector for callback in litellm.callbacks)
    for _ in range(100):  # the old Router is discarded once its last request is done (here: at once)
        if old._discarded:
            break
        await asyncio.sleep(0.05)
    assert not any(callback is old_selector for callback in litellm.callbacks)
    completion = await sdks.gpt(client).chat.completions.create(model="gpt", messages=MESSAGES)  # type: ignore[arg-type]
    assert completion.choices[0].message.content == "Hello from upstream"
    assert len(fake.seen) == 1


async def test_the_price_map_stays_small_for_a_load_balanced_unknown_model(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Upstreams
) -> None:
    """Registered twice (two deployments), or by LiteLLM's Router, an unknown model's entry would become
    LiteLLM's ~165-field generalized one, which LiteLLM scans after every call of it (~1.6 ms)."""
    [(_, url)] = await upstreams(1)
    local = [openai_at("local", url), openai_at("local", url)]
    for entry in local:
        entry["litellm_params"]["model"] = "openai/local-coder-unknown"
    await app_client(make_settings(base_config(model_list=local)))
    entry = litellm.model_cost["openai/local-coder-unknown"]
    assert set(entry) == {"litellm_provider", "mode", "memproxy_assumed"}
    assert not any(key.startswith("local/") for key in litellm.model_cost)  # the Router's per-id entries
