"""Every provider family through the one session and jar: LiteLLM for real against the fake upstream speaking
each dialect behind its cookie gate. The tripwire: one challenge per test, answered at once, and every request
after it carries the cookie (a client LiteLLM built for itself would have none), across a restart too; and no
request of LiteLLM's ever reached the seam outside a gateway call."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.llm import patches
from tests.conftest import MESSAGES, UPSTREAM_KEY, AppClient, base_config, post, sse_frames
from tests.fake_upstream import FakeUpstream

AWS = {
    "aws_access_key_id": "AKIAFAKEFAKEFAKE",
    "aws_secret_access_key": "fake-secret",
    "aws_region_name": "us-east-1",
}


@dataclass(frozen=True)
class Provider:
    """One provider family: its litellm_params (``{url}`` is the fake upstream) and the path it must call."""

    model: str
    base: str | None  # appended to the fake upstream's URL as api_base; None: no api_base
    path: str
    stream_path: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def litellm_params(self, url: str) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "api_key": UPSTREAM_KEY, **self.params}
        if self.base is not None:
            params["api_base"] = url + self.base
        return params


PROVIDERS = {
    "openai": Provider("openai/gpt-4o-mini", "/v1", "/v1/chat/completions"),
    # A responses-only model (price map: mode responses): acompletion goes through LiteLLM's Responses bridge.
    "openai-responses-only": Provider("openai/gpt-5-codex", "/v1", "/v1/responses"),
    "azure": Provider(
        "azure/my-deployment",
        "",
        "/openai/deployments/my-deployment/chat/completions",
        params={"api_version": "2024-10-21"},
    ),
    # LiteLLM builds this one client itself, around its factories: the gateway hands it one over the jar.
    "azure-cloudflare-ai-gateway": Provider(
        "azure/my-deployment",
        "/v1/acct/gateway.ai.cloudflare.com/azure-openai/my-resource",
        "/v1/acct/gateway.ai.cloudflare.com/azure-openai/my-resource/my-deployment/chat/completions",
        params={"api_version": "2024-10-21"},
    ),
    "openrouter": Provider(
        "openrouter/meta-llama/llama-3.3-70b-instruct", "/api/v1", "/api/v1/chat/completions"
    ),
    "deepseek": Provider("deepseek/deepseek-chat", "/v1", "/v1/chat/completions"),
    "groq": Provider("groq/llama-3.1-8b-instant", "/openai/v1", "/openai/v1/chat/completions"),
    "xai": Provider("xai/grok-3-mini", "/v1", "/v1/chat/completions"),
    "mistral": Provider("mistral/mistral-small-latest", "/v1", "/v1/chat/completions"),
    "together_ai": Provider(
        "together_ai/meta-llama/Llama-3.3-70B-Instruct-Turbo", "/v1", "/v1/chat/completions"
    ),
    "fireworks_ai": Provider(
        "fireworks_ai/accounts/fireworks/models/llama-v3p1-8b-instruct",
        "/inference/v1",
        "/inference/v1/chat/completions",
    ),
    "cerebras": Provider("cerebras/llama3.1-8b", "/v1", "/v1/chat/completions"),
    "perplexity": Provider("perplexity/sonar", "", "/chat/completions"),
    "lm_studio": Provider("lm_studio/qwen2.5-7b-instruct", "/v1", "/v1/chat/completions"),
    "hosted_vllm": Provider("hosted_vllm/qwen", "/v1", "/v1/chat/completions"),
    "databricks": Provider(
        "databricks/databricks-meta-llama-3-3-70b-instruct",
        "/serving-endpoints",
        "/serving-endpoints/chat/completions",
    ),
    "anthropic": Provider("anthropic/claude-sonnet-4-5-20250929", "", "/v1/messages"),
    "gemini": Provider(
        "gemini/gemini-2.5-flash",
        "/v1beta",
        "/v1beta/models/gemini-2.5-flash:generateContent",
        "/v1beta/models/gemini-2.5-flash:streamGenerateContent",
    ),
    "ollama_chat": Provider("ollama_chat/llama3.1", "", "/api/chat"),
    # LiteLLM signs with SigV4 locally: fake credentials work offline.
    "bedrock-converse": Provider(
        "bedrock/anthropic.claude-3-haiku-20240307-v1:0",
        None,
        "/model/anthropic.claude-3-haiku-20240307-v1:0/converse",
        "/model/anthropic.claude-3-haiku-20240307-v1:0/converse-stream",
        params=AWS,
    ),
    "cohere_chat": Provider("cohere_chat/command-r-08-2024", "/v2/chat", "/v2/chat"),
}


def provider_settings(make_settings: Callable[..., Settings], url: str, provider: Provider) -> Settings:
    params = provider.litellm_params(url)
    if provider.base is None:  # bedrock/: the endpoint has its own key
        params["aws_bedrock_runtime_endpoint"] = url
    doc = base_config(
        model_list=[{"model_name": "target", "litellm_params": params}],
        litellm_settings={"drop_params": True},
        memproxy={"retry_base_delay_s": 0},
    )
    return make_settings(doc)


def chat_text(body: str, stream: bool) -> str:
    if not stream:
        return str(json.loads(body)["choices"][0]["message"]["content"])
    frames = sse_frames(body)
    assert frames[-1] == "[DONE]", frames[-3:]
    chunks = [json.loads(frame) for frame in frames[:-1]]
    assert all("error" not in chunk for chunk in chunks), chunks
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c.get("choices"))


async def ask(client: TestClient[web.Request, web.Application], stream: bool) -> str:
    response = await post(client, {"model": "target", "messages": MESSAGES, "stream": stream})
    body = await response.text()
    assert response.status == 200, body
    return chat_text(body, stream)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_provider_through_the_jar(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    name: str,
    stream: bool,
) -> None:
    fake, url = upstream
    fake.gate = True
    provider = PROVIDERS[name]
    settings = provider_settings(make_settings, url, provider)
    escapes = patches.escapes()

    client = await app_client(settings)
    assert await ask(client, stream) == "Hello from upstream"
    assert await ask(client, stream) == "Hello from upstream"
    await client.close()  # the jar is saved
    again = await app_client(settings)
    assert await ask(again, stream) == "Hello from upstream"

    # One challenge, answered at once; every request after it carried the cookie, the restart's included.
    assert fake.challenges == 1
    assert fake.with_cookie == [False, True, True, True]
    expected = (provider.stream_path or provider.path) if stream else provider.path
    assert {seen.path for seen in fake.seen} == {expected}
    assert patches.escapes() == escapes


async def test_no_other_network_while_serving(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    loopback_only: list[str],
) -> None:
    """For llama models on groq/ and together_ai/ LiteLLM counts tokens with a HuggingFace tokenizer it
    downloads on the request path (retrying ~23 s offline): only the model's API is called while serving."""
    fake, url = upstream
    entries = [
        {"model_name": name, "litellm_params": PROVIDERS[name].litellm_params(url)}
        for name in ("groq", "together_ai")
    ]
    client = await app_client(
        make_settings(base_config(model_list=entries, litellm_settings={"drop_params": True}))
    )
    for name in ("groq", "together_ai"):
        chat = await post(client, {"model": name, "messages": MESSAGES, "stream": True})
        assert chat_text(await chat.text(), stream=True) == "Hello from upstream"
        body = {"model": name, "max_tokens": 64, "messages": MESSAGES, "stream": True}
        headers = {"anthropic-version": "2023-06-01"}
        messages = await client.post("/v1/messages", json=body, headers=headers)
        assert messages.status == 200
        assert "Hello" in await messages.text()
        counted = await client.post("/v1/messages/count_tokens", json=body, headers=headers)
        assert counted.status == 200
        assert (await counted.json())["input_tokens"] > 0
    assert loopback_only == []
    assert len(fake.seen) == 4  # two chats, two Messages: counting is local


async def test_azure_deployments_behind_one_cloudflare_ai_gateway(
    app_client: AppClient, make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    """Two deployments, one gateway base and key: each request reaches its own deployment."""
    fake, url = upstream
    base = f"{url}/v1/acct/gateway.ai.cloudflare.com/azure-openai/res"
    entries = [
        {
            "model_name": name,
            "litellm_params": {
                "model": f"azure/{name}",
                "api_base": base,
                "api_key": "k",
                "api_version": "2024-10-21",
            },
        }
        for name in ("dep-a", "dep-b")
    ]
    client = await app_client(make_settings(base_config(model_list=entries)))
    for name in ("dep-a", "dep-b", "dep-a"):
        response = await post(client, {"model": name, "messages": MESSAGES})
        assert response.status == 200, await response.text()
    prefix = "/v1/acct/gateway.ai.cloudflare.com/azure-openai/res"
    assert [seen.path for seen in fake.seen] == [
        f"{prefix}/dep-a/chat/completions",
        f"{prefix}/dep-b/chat/completions",
        f"{prefix}/dep-a/chat/completions",
    ]
