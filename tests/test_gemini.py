"""Google's Gemini API (Gemini CLI, the google-genai SDKs): the official google-genai SDK as the client,
LiteLLM for real, the fake upstream behind its cookie gate. Native to a Gemini upstream, bridged to an
Anthropic and an OpenAI one."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.keys import LEDGER
from aiohttp_memproxy.usage import ledger
from tests.conftest import MASTER_KEY, UPSTREAM_KEY, AppClient, LogLines, base_config, models_at
from tests.fake_dialects import USAGE_IN, USAGE_OUT
from tests.fake_upstream import TOOL_INPUT, FakeUpstream, Scripted

MODELS = ["gemini-up", "claude-up", "gpt-up"]  # native, bridged to Messages, bridged to chat completions


@pytest.fixture
def gemini_settings(make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]) -> Settings:
    _, url = upstream
    models = [
        {
            "model_name": "gemini-up",
            "litellm_params": {"model": "gemini/gemini-up", "api_base": url, "api_key": UPSTREAM_KEY},
        },
        *models_at(url),
    ]
    return make_settings(
        base_config(
            model_list=models,
            general_settings={"master_key": MASTER_KEY},
            router_settings={"model_group_alias": {"gemini-2.5-pro": "gemini-up"}},
            memproxy={"retry_base_delay_s": 0},
        )
    )


def sdk(client: TestClient[Any, Any], key: str = MASTER_KEY, prefix: str = "") -> genai.Client:
    return genai.Client(
        api_key=key,
        http_options=types.HttpOptions(base_url=str(client.make_url(prefix)), api_version="v1beta"),
    )


@pytest.mark.parametrize("model", MODELS)
async def test_the_sdk_generates_and_streams_through_the_gate(
    app_client: AppClient, gemini_settings: Settings, upstream: tuple[FakeUpstream, str], model: str
) -> None:
    fake, _ = upstream
    fake.gate = True
    fake.call_tools = False
    client = await app_client(gemini_settings)
    gemini = sdk(client).aio
    answer = await gemini.models.generate_content(model=model, contents="hi")
    assert answer.text == "Hello from upstream"
    streamed = [
        chunk.text or ""
        async for chunk in await gemini.models.generate_content_stream(model=model, contents="hi")
    ]
    assert "".join(streamed) == "Hello from upstream"
    assert fake.challenges == 1
    assert all(fake.with_cookie[1:]), fake.with_cookie


async def test_counts_lists_and_resolves_aliases(
    app_client: AppClient, gemini_settings: Settings, upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    client = await app_client(gemini_settings)
    gemini = sdk(client).aio
    counted = await gemini.models.count_tokens(model="gpt-up", contents="hello there, how are you today?")
    assert counted.total_tokens is not None
    assert counted.total_tokens > 5
    # A system instruction counts (Google's SDK sends one only to Vertex: asked over HTTP here).
    longer = await client.post(
        "/v1beta/models/gpt-up:countTokens",
        json={
            "contents": [{"role": "user", "parts": [{"text": "hello there, how are you today?"}]}],
            "systemInstruction": {"parts": [{"text": "You are a careful assistant. " * 10}]},
        },
        headers={"x-goog-api-key": MASTER_KEY},
    )
    assert (await longer.json())["totalTokens"] > counted.total_tokens + 30
    # countTokens may wrap a whole generateContent request: that request is what is counted.
    contents = [{"role": "user", "parts": [{"text": "hello there, how are you today?"}]}]
    wrapped = await client.post(
        "/v1beta/models/gpt-up:countTokens",
        json={"generateContentRequest": {"model": "models/gpt-up", "contents": contents}},
        headers={"x-goog-api-key": MASTER_KEY},
    )
    assert (await wrapped.json())["totalTokens"] == counted.total_tokens
    names = [model.name async for model in await gemini.models.list()]
    assert "models/gemini-up" in names
    assert "models/gemini-2.5-pro" in names  # a visible alias
    one = await gemini.models.get(model="gemini-2.5-pro")
    assert one.name == "models/gemini-2.5-pro"
    answer = await gemini.models.generate_content(model="gemini-2.5-pro", contents="hi")  # Gemini CLI's id
    assert answer.text == "Hello from upstream"
    assert fake.seen[-1].path.endswith("models/gemini-up:generateContent")


async def test_auth_takes_googles_header_a_bearer_and_the_key_parameter(
    app_client: AppClient, gemini_settings: Settings, log_lines: LogLines
) -> None:
    client = await app_client(gemini_settings)
    body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
    path = "/v1beta/models/gemini-up:generateContent"
    for headers, query in (
        ({"x-goog-api-key": MASTER_KEY}, ""),
        ({"Authorization": f"Bearer {MASTER_KEY}"}, ""),
        ({}, f"?key={MASTER_KEY}"),
    ):
        response = await client.post(path + query, json=body, headers=headers)
        assert response.status == 200, await response.text()
    refused = await client.post(path, json=body, headers={"x-goog-api-key": "wrong"})
    assert refused.status == 401
    assert await refused.json() == {
        "error": {"code": 401, "message": "invalid API key", "status": "UNAUTHENTICATED"}
    }
    # ?key= counts on Google's routes only.
    elsewhere = await client.get(f"/v1/models?key={MASTER_KEY}")
    assert elsewhere.status == 401
    with pytest.raises(genai_errors.ClientError) as caught:
        await sdk(client, key="wrong").aio.models.generate_content(model="gemini-up", contents="hi")
    assert caught.value.code == 401
    assert len(log_lines.named("request")) == 6
    assert MASTER_KEY not in log_lines.text  # ?key= included: the log line names the route, never the URL


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v1beta/models/nope:generateContent", {"contents": [{"parts": [{"text": "hi"}]}]}, 404, "'nope'"),
        ("/v1beta/models/gemini-up:generateContent", {}, 400, "contents is required"),
        ("/v1beta/models/gemini-up:generateContent", {"contents": "hi"}, 400, "contents must be"),
        ("/v1beta/models/gemini-up:generateContent", {"contents": [1]}, 400, "contents[0] must be an object"),
        (
            "/v1beta/models/gemini-up:generateContent",
            {"contents": [{"parts": []}], "generationConfig": []},
            400,
            "generationConfig must be an object",
        ),
        ("/v1beta/models/gemini-up:embedContent", {"contents": [{"parts": []}]}, 404, "no method"),
    ],
)
async def test_errors_in_googles_shape(
    app_client: AppClient,
    gemini_settings: Settings,
    path: str,
    body: dict[str, Any],
    status: int,
    fragment: str,
) -> None:
    client = await app_client(gemini_settings)
    response = await client.post(path, json=body, headers={"x-goog-api-key": MASTER_KEY})
    assert response.status == status
    error = (await response.json())["error"]
    assert set(error) == {"code", "message", "status"}
    assert error["code"] == status
    assert error["status"] == {400: "INVALID_ARGUMENT", 404: "NOT_FOUND"}[status]
    assert fragment in error["message"]


async def test_the_litellm_proxy_gemini_prefix_and_the_ledger(
    app_client: AppClient, gemini_settings: Settings, upstream: tuple[FakeUpstream, str]
) -> None:
    """GOOGLE_GEMINI_BASE_URL=<proxy>/gemini as LiteLLM's docs set it; a streamed answer's usage in the
    ledger, with Gemini CLI's User-Agent as its client."""
    client = await app_client(gemini_settings)
    stream = await client.post(
        "/gemini/v1beta/models/gemini-up:streamGenerateContent?alt=sse",
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        headers={"x-goog-api-key": MASTER_KEY, "User-Agent": "GeminiCLI/0.61.0/gemini-2.5-pro (linux; x64)"},
    )
    assert stream.status == 200
    assert stream.headers["Content-Type"].startswith("text/event-stream")
    frames = [
        json.loads(line[6:]) for line in (await stream.text()).splitlines() if line.startswith("data: ")
    ]
    assert "".join(
        part["text"] for frame in frames for part in frame["candidates"][0]["content"]["parts"]
    ) == ("Hello from upstream")
    assert client.server.app is not None
    book = client.server.app[LEDGER]
    await book.flush()
    rows = [row for row in ledger.read(book.path, 0.0) if row.route.startswith("/gemini/")]
    assert len(rows) == 1
    row = rows[0]
    assert (row.client, row.model, row.status) == ("gemini-cli", "gemini-up", 200)
    assert (row.input_tokens, row.output_tokens) == (USAGE_IN, USAGE_OUT)


WEATHER = types.Tool(
    function_declarations=[
        types.FunctionDeclaration(
            name="get_weather",
            description="Weather for a city",
            parameters_json_schema={
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        )
    ]
)


@pytest.mark.parametrize("model", MODELS)
async def test_function_calls_round_trip(
    app_client: AppClient, gemini_settings: Settings, upstream: tuple[FakeUpstream, str], model: str
) -> None:
    """A declared function is called (natively, or as a tool call of the bridged provider, streamed too);
    its response goes back and the answer is text."""
    client = await app_client(gemini_settings)
    gemini = sdk(client).aio
    config = types.GenerateContentConfig(tools=[WEATHER])
    asked = types.Content(role="user", parts=[types.Part(text="Weather in Paris?")])
    first = await gemini.models.generate_content(model=model, contents=[asked], config=config)
    [call] = first.function_calls or []
    assert (call.name, call.args) == ("get_weather", TOOL_INPUT)
    streamed = [
        chunk
        async for chunk in await gemini.models.generate_content_stream(
            model=model, contents=[asked], config=config
        )
    ]
    calls = [c for chunk in streamed for c in chunk.function_calls or []]
    assert [(c.name, c.args) for c in calls] == [("get_weather", TOOL_INPUT)]
    replied = types.Content(
        role="user",
        parts=[types.Part.from_function_response(name="get_weather", response={"forecast": "sunny"})],
    )
    called = first.candidates[0].content if first.candidates else None
    assert called is not None
    answer = await gemini.models.generate_content(
        model=model, contents=[asked, called, replied], config=config
    )
    assert answer.text == "Hello from upstream"


async def test_a_gemini_group_falls_back_through_litellms_router(
    app_client: AppClient, make_settings: Callable[..., Settings], upstreams: Any
) -> None:
    """A Gemini model whose upstream fails falls back to another group (LiteLLM's Router), its attempt made
    right for that deployment (here, translated to Anthropic's Messages)."""
    (broken, broken_url), (backup, backup_url) = await upstreams(2)
    broken.script = [Scripted(500, {"error": {"code": 500, "message": "down", "status": "INTERNAL"}})] * 10
    models = [
        {
            "model_name": "gemini-up",
            "litellm_params": {"model": "gemini/gemini-up", "api_base": broken_url, "api_key": UPSTREAM_KEY},
        },
        {
            "model_name": "claude-up",
            "litellm_params": {
                "model": "anthropic/claude-up",
                "api_base": backup_url,
                "api_key": UPSTREAM_KEY,
            },
        },
    ]
    settings = make_settings(
        base_config(model_list=models, router_settings={"fallbacks": [{"gemini-up": ["claude-up"]}]})
    )
    client = await app_client(settings)
    answer = await sdk(client).aio.models.generate_content(model="gemini-up", contents="hi")
    assert answer.text == "Hello from upstream"
    assert broken.seen
    assert [seen.path for seen in backup.seen] == ["/v1/messages"]


async def test_a_bridged_stream_never_records_zero_tokens(
    app_client: AppClient, gemini_settings: Settings
) -> None:
    """LiteLLM's translation writes 0/0 usage on a bridged stream's last chunk when the chat stream said
    none: the ledger takes the chat stream's own usage, or none, never those zeros."""
    client = await app_client(gemini_settings)
    for model in ("claude-up", "gpt-up"):
        response = await client.post(
            f"/v1beta/models/{model}:streamGenerateContent?alt=sse",
            json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
            headers={"x-goog-api-key": MASTER_KEY},
        )
        assert response.status == 200
        await response.read()
    assert client.server.app is not None
    book = client.server.app[LEDGER]
    await book.flush()
    rows = ledger.read(book.path, 0.0)
    assert [row.model for row in rows] == ["claude-up", "gpt-up"]
    for row in rows:
        assert row.input_tokens != 0
        assert row.output_tokens != 0


@pytest.mark.parametrize("model", MODELS)
async def test_a_client_that_leaves_releases_the_upstream(
    app_client: AppClient, gemini_settings: Settings, upstream: tuple[FakeUpstream, str], model: str
) -> None:
    """Native or bridged, a client that leaves mid-stream stops the upstream read at once."""
    fake, _ = upstream
    fake.chunk_delay_s = 0.3
    client = await app_client(gemini_settings)
    response = await client.post(
        f"/v1beta/models/{model}:streamGenerateContent?alt=sse",
        json={"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        headers={"x-goog-api-key": MASTER_KEY},
    )
    assert response.status == 200
    await response.content.readline()
    response.close()  # the client leaves mid-stream
    await asyncio.wait_for(fake.cancelled.wait(), timeout=10)
