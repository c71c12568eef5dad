"""/v1/responses (Codex CLI and every Responses client): the openai SDK as the client, LiteLLM for real, the
fake upstream behind its cookie gate. Native to an upstream with the Responses API, bridged to Anthropic."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from aiohttp_memproxy.config.settings import Settings
from tests.conftest import MASTER_KEY, SM_KEY, UPSTREAM_KEY, AppClient, base_config
from tests.fake_upstream import TOOL_INPUT, FakeUpstream, Scripted

# Model name in gateway_settings -> the upstream path it must reach.
UPSTREAMS = {"gpt-up": "/v1/responses", "claude-up": "/v1/messages"}
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": False,
    }
]
# What Codex CLI 0.169 sends (read off the real CLI, see tests/test_real_clis.py), a turn smaller.
CODEX_BODY: dict[str, Any] = {
    "instructions": "You are Codex, a coding agent.",
    "input": [
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
    ],
    "tools": TOOLS,
    "tool_choice": "auto",
    "parallel_tool_calls": True,
    "reasoning": {"effort": "medium", "summary": "auto"},
    "store": False,
    "stream": True,
    "include": ["reasoning.encrypted_content"],
    "prompt_cache_key": "0199a6f2-4c3b-7e10-9a51-6d2e8b7c4f30",
}


def sdk(client: TestClient[web.Request, web.Application], key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key=key, max_retries=0)


def events_of(text: str) -> list[dict[str, Any]]:
    found = []
    for block in text.split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "data" in lines:
            data = json.loads(lines["data"])
            assert lines.get("event") == data["type"], block  # the SSE event name is the event's type
            found.append(data)
    return found


@pytest.mark.parametrize("model", list(UPSTREAMS))
async def test_sdk_create_and_stream_through_the_gate(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    model: str,
) -> None:
    fake, _ = upstream
    fake.gate = True
    client = await app_client(gateway_settings())
    async with sdk(client) as api:
        response = await api.responses.create(model=model, input="Say hello.")
        assert response.output_text == "Hello from upstream"
        assert response.status == "completed"
        assert response.usage is not None
        assert response.usage.output_tokens == 3
        async with api.responses.stream(model=model, input="Say hello.") as stream:
            deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
            final = await stream.get_final_response()
    assert "".join(deltas) == "Hello from upstream"
    assert final.output_text == "Hello from upstream"
    assert {seen.path for seen in fake.seen} == {UPSTREAMS[model]}
    assert fake.challenges == 1
    assert fake.with_cookie == [False, True, True]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("model", list(UPSTREAMS))
async def test_multi_turn_with_a_function_call(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    model: str,
    stream: bool,
) -> None:
    """Turn one calls the tool; turn two sends the call and its output back as input items (store: false,
    as Codex does) and gets the answer."""
    fake, _ = upstream
    client = await app_client(gateway_settings())
    question: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    async with sdk(client) as api:

        async def turn(items: list[Any]) -> Any:
            if not stream:
                return await api.responses.create(model=model, input=items, tools=TOOLS, store=False)  # type: ignore[arg-type]
            async with api.responses.stream(model=model, input=items, tools=TOOLS, store=False) as events:  # type: ignore[arg-type]
                return await events.get_final_response()

        first = await turn(question)
        calls = [item for item in first.output if item.type == "function_call"]
        assert [(call.name, json.loads(call.arguments)) for call in calls] == [("get_weather", TOOL_INPUT)]
        output = {"type": "function_call_output", "call_id": calls[0].call_id, "output": '{"temp": 21}'}
        call_item = {
            "type": "function_call",
            "call_id": calls[0].call_id,
            "name": calls[0].name,
            "arguments": calls[0].arguments,
        }
        second = await turn([*question, call_item, output])
    assert second.output_text == "Hello from upstream"
    assert not [item for item in second.output if item.type == "function_call"]
    sent = fake.seen[-1].body
    if model == "gpt-up":  # native: the items go as they are
        assert sent["input"][-1] == output
    else:  # bridged to Messages: the call and its output become tool_use and tool_result
        blocks = [
            block for message in sent["messages"] for block in message["content"] if isinstance(block, dict)
        ]
        assert any(block.get("type") == "tool_result" for block in blocks)


def codex_settings(make_settings: Callable[..., Settings], url: str) -> Settings:
    """Codex's own model (a responses-only reasoning model, native) and a Claude model (bridged)."""
    return make_settings(
        base_config(
            model_list=[
                {
                    "model_name": "gpt-5-codex",
                    "litellm_params": {
                        "model": "openai/gpt-5-codex",
                        "api_base": f"{url}/v1",
                        "api_key": UPSTREAM_KEY,
                    },
                },
                {
                    "model_name": "claude-up",
                    "litellm_params": {
                        "model": "anthropic/claude-up",
                        "api_base": url,
                        "api_key": UPSTREAM_KEY,
                    },
                },
            ],
            litellm_settings={"drop_params": True},
        )
    )


@pytest.mark.parametrize(("model", "path"), [("gpt-5-codex", "/v1/responses"), ("claude-up", "/v1/messages")])
async def test_codex_shaped_request(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    model: str,
    path: str,
) -> None:
    fake, url = upstream
    fake.call_tools = False
    client = await app_client(codex_settings(make_settings, url))
    response = await client.post(
        "/v1/responses", json={**CODEX_BODY, "model": model}, headers={"User-Agent": "codex_exec/0.169.0"}
    )
    text = await response.text()
    assert response.status == 200, text
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = events_of(text)
    names = [event["type"] for event in events]
    assert names[0] == "response.created"
    assert names[-1] == "response.completed"
    assert "error" not in names
    deltas = "".join(event["delta"] for event in events if event["type"] == "response.output_text.delta")
    assert deltas == "Hello from upstream"
    assert events[-1]["response"]["status"] == "completed"
    sent = fake.seen[-1]
    assert sent.path == path
    if path == "/v1/responses":  # native: what Codex sent reaches the upstream as it was
        for key in (
            "instructions",
            "store",
            "include",
            "prompt_cache_key",
            "reasoning",
            "parallel_tool_calls",
        ):
            assert sent.body[key] == CODEX_BODY[key], key
    else:  # bridged: the instructions are the system prompt, the tools Anthropic's
        assert CODEX_BODY["instructions"] in json.dumps(sent.body["system"])
        assert [tool["name"] for tool in sent.body["tools"]] == ["get_weather"]


async def test_memory_headers_only_to_supermemory(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    client = await app_client(gateway_settings())
    headers = {"x-memory-user-id": "alice"}
    for model in ("gpt-memory", "gpt-up"):
        response = await client.post("/v1/responses", json={"model": model, "input": "hi"}, headers=headers)
        assert response.status == 200, await response.text()
    memory, plain = fake.seen
    assert memory.headers["x-sm-user-id"] == "alice"
    assert "x-sm-user-id" not in plain.headers
    assert SM_KEY not in json.dumps(plain.headers)


@pytest.mark.parametrize(
    ("body", "status", "param", "fragment"),
    [
        ({"model": "gpt-up"}, 400, "input", "input is required"),
        ({"model": "gpt-up", "input": ""}, 400, "input", "input must be a non-empty string or array"),
        ({"model": "gpt-up", "input": 3}, 400, "input", "input must be a non-empty string or array"),
        ({"input": "hi"}, 400, "model", "model is required"),
        ({"model": "gpt-9", "input": "hi"}, 404, "model", "'gpt-9' is not configured"),
    ],
)
async def test_request_errors_in_openai_shape(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    body: dict[str, Any],
    status: int,
    param: str,
    fragment: str,
) -> None:
    fake, _ = upstream
    client = await app_client(gateway_settings())
    response = await client.post("/v1/responses", json=body)
    assert response.status == status
    error = (await response.json())["error"]
    assert error["param"] == param
    assert fragment in error["message"]
    assert fake.seen == []


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/responses/resp_abc"),
        ("DELETE", "/v1/responses/resp_abc"),
        ("POST", "/v1/responses/resp_abc/cancel"),
        ("GET", "/v1/responses/resp_abc/input_items"),
    ],
)
async def test_stored_responses_are_not_kept_here(
    app_client: AppClient, gateway_settings: Callable[..., Settings], method: str, path: str
) -> None:
    client = await app_client(gateway_settings())
    response = await client.request(method, path)
    assert response.status == 404
    error = (await response.json())["error"]
    assert error["code"] == "response_not_stored"
    assert error["type"] == "invalid_request_error"
    assert "stores no responses" in error["message"]


async def test_previous_response_id_goes_only_where_the_upstream_holds_the_conversation(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    """Bridged (Anthropic): a 400 naming the parameter, nothing sent, never a 500. Native (OpenAI's
    Responses API): the id goes upstream as the client sent it."""
    fake, _ = upstream
    client = await app_client(gateway_settings())
    async with sdk(client) as gpt:
        with pytest.raises(openai.BadRequestError) as refused:
            await gpt.responses.create(model="claude-up", input="and then?", previous_response_id="resp_1")
        error = refused.value.body
        assert isinstance(error, dict)
        assert (error["param"], error["code"]) == ("previous_response_id", "previous_response_not_supported")
        assert "`input`" in error["message"]
        assert fake.seen == []
        answer = await gpt.responses.create(model="gpt-up", input="and then?", previous_response_id="resp_1")
        assert answer.output_text == "Hello from upstream"
    assert fake.seen[-1].path == "/v1/responses"
    assert fake.seen[-1].body["previous_response_id"] == "resp_1"


async def test_upstream_error_before_and_after_the_headers(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    client = await app_client(gateway_settings())
    fake.script = [Scripted(401, {"error": {"message": "bad key", "type": "invalid_request_error"}})]
    response = await client.post("/v1/responses", json={"model": "gpt-up", "input": "hi", "stream": True})
    assert response.status == 401
    error = (await response.json())["error"]
    assert "rejected the gateway's credentials" in error["message"]
    for secret in (UPSTREAM_KEY, "http://", "Traceback", "litellm."):
        assert secret not in error["message"]

    fake.cut_after = 3  # the upstream breaks off mid-stream: the client's stream ends with an error event
    response = await client.post("/v1/responses", json={"model": "gpt-up", "input": "hi", "stream": True})
    assert response.status == 200
    events = events_of(await response.text())
    assert events[0]["type"] == "response.created"
    assert events[-1]["type"] == "error"
    assert events[-1]["code"] == "upstream_unreachable"
    assert "response.completed" not in [event["type"] for event in events]


async def test_auth_required_when_a_master_key_is_set(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    client = await app_client(replace(gateway_settings(), master_key=MASTER_KEY))
    response = await client.post("/v1/responses", json={"model": "gpt-up", "input": "hi"})
    assert response.status == 401
    assert (await response.json())["error"]["type"] == "authentication_error"
    async with sdk(client, MASTER_KEY) as api:
        assert (await api.responses.create(model="gpt-up", input="hi")).output_text == "Hello from upstream"


async def test_the_demo_model_speaks_responses_too(
    app_client: AppClient, make_settings: Callable[..., Settings]
) -> None:
    """No upstream, no key: the demo model (mock_response) answers a stream with a well-formed sequence."""
    client = await app_client(make_settings())
    async with sdk(client) as api:
        assert (await api.responses.create(model="demo", input="hi")).output_text == "hi"
        async with api.responses.stream(model="demo", input="hi") as stream:
            deltas = [event.delta async for event in stream if event.type == "response.output_text.delta"]
            final = await stream.get_final_response()
    assert "".join(deltas) == "hi"
    assert final.status == "completed"
    assert final.output_text == "hi"
