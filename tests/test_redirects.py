"""No key ever follows a redirect: an upstream that answers 3xx to another host gets a 502 in the client's
dialect (code ``upstream_redirect``, the status and the host, never the rest of the URL), and the host it
points to sees nothing, for every provider family of the matrix, every API route and forward mode."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aiohttp_memproxy.config.settings import Settings
from tests.conftest import MESSAGES, UPSTREAM_KEY, AppClient, base_config
from tests.test_providers import PROVIDERS, provider_settings

SECRET_PATH = "/stolen/path-with-a-token-abc123"


class Redirector:
    """Answers every request with ``status`` to the recorder (on ``localhost``, another host than the one
    the gateway called); the recorder writes down whatever reaches it."""

    def __init__(self, status: int = 307) -> None:
        self.status = status
        self.asked: list[str] = []
        self.reached: list[tuple[str, dict[str, str]]] = []
        self.recorder_url = ""

    def redirecting_app(self) -> web.Application:
        async def redirect(request: web.Request) -> web.Response:
            self.asked.append(request.path)
            await request.read()
            return web.Response(status=self.status, headers={"Location": self.recorder_url + SECRET_PATH})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", redirect)
        return app

    def recording_app(self) -> web.Application:
        async def record(request: web.Request) -> web.Response:
            self.reached.append((request.path, dict(request.headers)))
            return web.json_response({"choices": [{"message": {"role": "assistant", "content": "stolen"}}]})

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", record)
        return app


@pytest.fixture
async def redirector(aiohttp_server: Any) -> tuple[Redirector, str]:
    found = Redirector()
    recorder: TestServer = await aiohttp_server(found.recording_app())
    found.recorder_url = f"http://localhost:{recorder.port}"
    server: TestServer = await aiohttp_server(found.redirecting_app())
    return found, str(server.make_url("")).rstrip("/")


def assert_refused(status: int, body: str, dialect: str = "openai", code: int = 307) -> None:
    assert status == 502, body
    parsed = json.loads(body)
    error = parsed["error"]
    if dialect == "openai":
        assert error["code"] == "upstream_redirect"
    else:
        assert parsed["type"] == "error"
        assert error["type"] == "api_error"
    assert f"answered {code}" in error["message"]
    assert "a redirect to localhost" in error["message"]
    assert "stolen" not in body
    assert SECRET_PATH not in body


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("name", list(PROVIDERS))
async def test_no_provider_follows_a_redirect(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    redirector: tuple[Redirector, str],
    name: str,
    stream: bool,
) -> None:
    found, url = redirector
    client = await app_client(provider_settings(make_settings, url, PROVIDERS[name]))
    response = await client.post(
        "/v1/chat/completions", json={"model": "target", "messages": MESSAGES, "stream": stream}
    )
    assert_refused(response.status, await response.text())
    assert found.asked, "the request never reached the redirecting upstream"
    assert found.reached == []


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_every_redirect_status_is_refused(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    redirector: tuple[Redirector, str],
    status: int,
) -> None:
    found, url = redirector
    found.status = status
    client = await app_client(provider_settings(make_settings, url, PROVIDERS["openai"]))
    response = await client.post("/v1/chat/completions", json={"model": "target", "messages": MESSAGES})
    assert_refused(response.status, await response.text(), code=status)
    assert found.reached == []


def memory_models(url: str) -> list[dict[str, Any]]:
    return [
        {
            "model_name": "claude",
            "litellm_params": {
                "model": "anthropic/claude-sonnet-4-5-20250929",
                "api_base": url,
                "api_key": UPSTREAM_KEY,
                "extra_headers": {"x-supermemory-api-key": "sm-key-never-follows"},
            },
            "model_info": {"supermemory": True},
        },
        {
            "model_name": "gpt",
            "litellm_params": {
                "model": "openai/gpt-4o-mini",
                "api_base": f"{url}/v1",
                "api_key": UPSTREAM_KEY,
            },
        },
        {
            "model_name": "gem",
            "litellm_params": {
                "model": "gemini/gemini-2.5-flash",
                "api_base": f"{url}/v1beta",
                "api_key": "g",
            },
        },
    ]


ANTHROPIC = {"anthropic-version": "2023-06-01"}
ROUTES = {
    "messages-anthropic": ("/v1/messages", "claude", True, ANTHROPIC),
    "messages-anthropic-plain": ("/v1/messages", "claude", False, ANTHROPIC),
    "messages-to-openai": ("/v1/messages", "gpt", True, ANTHROPIC),
    "messages-to-gemini": ("/v1/messages", "gem", False, ANTHROPIC),
    "count-tokens-anthropic": ("/v1/messages/count_tokens", "claude", None, ANTHROPIC),
    "responses-native": ("/v1/responses", "gpt", True, {}),
    "responses-native-plain": ("/v1/responses", "gpt", False, {}),
    "responses-bridged": ("/v1/responses", "claude", True, {}),
}


@pytest.mark.parametrize("route", list(ROUTES))
async def test_no_route_follows_a_redirect(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    redirector: tuple[Redirector, str],
    route: str,
) -> None:
    found, url = redirector
    path, model, stream, headers = ROUTES[route]
    body: dict[str, Any] = {"model": model}
    if path == "/v1/responses":
        body["input"] = "hi"
    else:
        body.update(messages=MESSAGES, max_tokens=64)
    if stream is not None:
        body["stream"] = stream
    client = await app_client(make_settings(base_config(model_list=memory_models(url))))
    response = await client.post(path, json=body, headers=headers)
    assert_refused(response.status, await response.text(), "anthropic" if "messages" in path else "openai")
    assert found.asked
    assert found.reached == []


async def test_forward_mode_follows_no_redirect(
    app_client: AppClient, make_settings: Callable[..., Settings], redirector: tuple[Redirector, str]
) -> None:
    found, url = redirector
    settings = make_settings(
        base_config(memproxy={"mode": "forward", "upstream": url, "upstream_key": UPSTREAM_KEY})
    )
    client = await app_client(settings)
    response = await client.post("/v1/chat/completions", json={"model": "demo", "messages": MESSAGES})
    assert_refused(response.status, await response.text())
    assert found.asked == ["/v1/chat/completions"]
    assert found.reached == []
