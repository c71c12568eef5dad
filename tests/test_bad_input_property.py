"""Property: whatever a client sends, on any model route, the gateway answers in that route's dialect, never a
500, a 5xx only when the upstream really saw the request, and no secret, traceback or foreign exception text.

Hypothesis drives real HTTP (a sync client, so hypothesis stays sync) at the real app and the fake upstream,
which run on an event loop of their own in a thread, LiteLLM for real between them."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aiohttp_memproxy.app import create_app
from aiohttp_memproxy.config.settings import Settings
from tests.conftest import SM_KEY, UPSTREAM_KEY, base_config, models_at
from tests.fake_upstream import FakeUpstream

ANTHROPIC_ROUTES = ("/v1/messages", "/v1/messages/count_tokens")
ROUTES = ("/v1/chat/completions", *ANTHROPIC_ROUTES, "/v1/responses")
# What no response may carry: the keys, a traceback, LiteLLM's or pydantic's own words.
NEVER = (
    UPSTREAM_KEY,
    SM_KEY,
    "Traceback",
    "litellm",
    "LiteLLM",
    "errors.pydantic.dev",
    "object has no attribute",
)


@dataclass
class Served:
    base: str
    fake: FakeUpstream


@pytest.fixture
def served(make_settings: Callable[..., Settings]) -> Iterator[Served]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    runners: list[web.AppRunner] = []
    fake = FakeUpstream()

    async def start() -> str:
        # Port 0 and the address bound: no window in which another process could take a port picked before.
        upstream = web.AppRunner(fake.app())
        await upstream.setup()
        await web.TCPSite(upstream, "127.0.0.1", 0).start()
        runners.append(upstream)
        up_port = upstream.addresses[0][1]
        doc = base_config(
            model_list=models_at(f"http://127.0.0.1:{up_port}"),
            litellm_settings={"drop_params": True},
            memproxy={"retry_base_delay_s": 0, "max_body_mb": 1},
        )
        gateway = web.AppRunner(create_app(make_settings(doc)))
        await gateway.setup()
        await web.TCPSite(gateway, "127.0.0.1", 0).start()
        runners.append(gateway)
        return f"http://127.0.0.1:{gateway.addresses[0][1]}"

    try:
        yield Served(asyncio.run_coroutine_threadsafe(start(), loop).result(60), fake)
    finally:
        for runner in reversed(runners):
            asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(60)
        # As pytest-aiohttp does with a test's loop: what LiteLLM started on it (its logging worker) is
        # cancelled and finished before the loop closes, not left to the garbage collector.
        asyncio.run_coroutine_threadsafe(_finish_tasks(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


async def _finish_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.get_running_loop().shutdown_asyncgens()


scalars = (
    st.none()
    | st.booleans()
    | st.integers(-5, 10**9)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=12,
)
# Mostly well-formed bodies with a few fields (any of them, at any depth) replaced by anything at all: what a
# mistyped or hostile client sends, and what reaches deepest into LiteLLM and the upstream.
part = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image", "tool_result", "weird"])},
    optional={"text": st.text(max_size=8)},
)
content = st.text(min_size=1, max_size=20) | st.lists(part | anything, min_size=1, max_size=2) | anything
message = (
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool", "developer", "x"]),
            "content": content,
        }
    )
    | anything
)
messages = st.lists(message, min_size=1, max_size=3) | anything
models = st.sampled_from(["gpt-up", "claude-up", "vllm-up", "claude-memory", "demo"])
tool = st.fixed_dictionaries(
    {"name": st.text(min_size=1, max_size=8) | anything, "input_schema": anything, "parameters": anything},
    optional={"type": st.sampled_from(["function", "custom", "x"]) | anything, "function": anything},
)
common = {
    "stream": st.booleans() | anything,
    "metadata": st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=2) | anything,
    "temperature": st.floats(0, 2) | anything,
    "tools": st.lists(tool | anything, max_size=2) | anything,
    "tool_choice": st.sampled_from(["auto", "none"]) | anything,
}
BODIES = {
    "/v1/chat/completions": st.fixed_dictionaries(
        {"model": models, "messages": messages},
        optional={**common, "max_tokens": st.integers(1, 50) | anything, "stop": anything, "n": anything},
    ),
    "/v1/messages": st.fixed_dictionaries(
        {"model": models, "messages": messages, "max_tokens": st.integers(1, 50) | anything},
        optional={
            **common,
            "system": st.text(max_size=20) | anything,
            "thinking": st.fixed_dictionaries({"type": st.just("enabled"), "budget_tokens": anything})
            | anything,
            "stop_sequences": anything,
        },
    ),
    "/v1/messages/count_tokens": st.fixed_dictionaries(
        {"model": models, "messages": messages},
        optional={"system": anything, "tools": common["tools"]},
    ),
    "/v1/responses": st.fixed_dictionaries(
        {"model": models, "input": st.text(min_size=1, max_size=20) | messages},
        optional={**common, "instructions": anything, "max_output_tokens": anything, "store": anything},
    ),
}
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=30).map(str.strip)
HEADERS = st.fixed_dictionaries(
    {},
    optional={
        "anthropic-version": header_text,
        "anthropic-beta": header_text,
        "x-memory-user-id": header_text,
        "x-request-id": header_text,
        "user-agent": header_text,
    },
)


def check(route: str, response: httpx.Response, sent_upstream: bool) -> None:
    text = response.text
    assert response.status_code != 500, text
    if response.status_code >= 500:
        assert sent_upstream, f"{response.status_code} for a request that never left: {text}"
    for never in NEVER:
        assert never not in text, (never, text)
    if response.status_code < 400:
        return
    body = response.json()
    if route in ANTHROPIC_ROUTES:
        assert body["type"] == "error", body
        assert set(body["error"]) == {"type", "message"}, body
    else:
        assert set(body) == {"error"}, body
        assert set(body["error"]) == {"message", "type", "param", "code"}, body


@pytest.mark.parametrize("route", ROUTES)
def test_any_body_and_headers(served: Served, route: str) -> None:
    @settings(
        max_examples=150,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(body=BODIES[route], headers=HEADERS)
    def one(body: dict[str, Any], headers: dict[str, str]) -> None:
        before = len(served.fake.seen)
        with httpx.Client(base_url=served.base, trust_env=False, timeout=60) as client:
            response = client.post(
                route, content=json.dumps(body), headers={**headers, "content-type": "application/json"}
            )
        check(route, response, sent_upstream=len(served.fake.seen) > before)

    one()
