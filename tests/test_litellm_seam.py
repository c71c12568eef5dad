"""The seam in LiteLLM's client factories: installed and removed with the app, a loud refusal when LiteLLM's
internals moved, and a LiteLLM request outside a gateway call refused and counted (the tripwire)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import litellm
import openai
import pytest
from aiohttp import web
from litellm.llms.custom_httpx import http_handler
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler
from litellm.llms.openai.common_utils import BaseOpenAILLM

from aiohttp_memproxy.app import create_app
from aiohttp_memproxy.config.settings import ConfigError, Settings
from aiohttp_memproxy.llm import patches, providers
from aiohttp_memproxy.llm.patches import SeamError
from tests.conftest import MESSAGES, UPSTREAM_KEY, AppClient, base_config, post
from tests.fake_upstream import FakeUpstream


async def refused(settings: Settings) -> BaseException:
    """Start the app as the service does; it must refuse. What startup entered is cleaned up, as the
    service does (the session closed)."""
    runner = web.AppRunner(create_app(settings))
    try:
        await runner.setup()
    except (SeamError, ConfigError) as exc:
        return exc
    finally:
        await runner.cleanup()
    raise AssertionError("the app started")


def factories() -> tuple[Any, ...]:
    return (
        vars(AsyncHTTPHandler)["create_client"],
        vars(AsyncHTTPHandler)["create_async_transport"],
        vars(AsyncHTTPHandler)["_create_async_transport"],
        vars(BaseOpenAILLM)["_get_async_http_client"],
        vars(litellm.router)["compact_to_fit"],  # the Router's attempts, adapted for a gateway call
    )


async def test_installed_with_the_app_and_removed_with_it(
    app_client: AppClient, make_settings: Callable[..., Settings]
) -> None:
    before = factories()
    first = await app_client(make_settings())
    second = await app_client(make_settings())  # two apps in one process share one installation
    assert all(a is not b for a, b in zip(factories(), before, strict=True))
    await first.close()
    assert all(a is not b for a, b in zip(factories(), before, strict=True))
    await second.close()
    assert factories() == before  # LiteLLM as it was


async def test_refuses_to_start_when_litellm_moved(
    app_client: AppClient, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delattr(AsyncHTTPHandler, "create_async_transport")
    error = await refused(make_settings())
    assert isinstance(error, SeamError)
    assert "not as verified on 1.106.2 (missing AsyncHTTPHandler.create_async_transport)" in str(error)


async def test_refuses_to_start_when_the_factories_do_not_hand_out_ours(
    app_client: AppClient, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A LiteLLM whose cached-client helper no longer goes through the factories we replace."""

    def elsewhere(llm_provider: str, params: Any = None, shared_session: Any = None) -> AsyncHTTPHandler:
        handler = AsyncHTTPHandler()
        handler.client = patches.httpx.AsyncClient()  # httpx's own transport: around our jar
        return handler

    monkeypatch.setattr(http_handler, "get_async_httpx_client", elsewhere)
    error = await refused(make_settings())
    assert "not handing out the gateway's transport: get_async_httpx_client" in str(error)
    assert patches._SEAM.users == 0  # nothing left half-installed
    assert not patches._SEAM.originals


async def test_refuses_to_start_when_litellm_rust_forces_its_own_http(
    app_client: AppClient, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LITELLM_RUST", "1")
    error = await refused(make_settings())
    assert isinstance(error, SeamError)
    assert "would send messages requests through its Rust HTTP client" in str(error)
    assert "LITELLM_RUST" in str(error)


@pytest.mark.provokes_escape
async def test_a_request_outside_a_gateway_call_is_refused_and_counted(
    app_client: AppClient, make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    await app_client(make_settings())  # the seam is in
    escapes = patches.escapes()
    with pytest.raises(openai.OpenAIError):  # LiteLLM's class varies by provider
        await litellm.acompletion(
            model="mistral/mistral-small-latest",
            api_base=f"{url}/v1",
            api_key=UPSTREAM_KEY,
            messages=MESSAGES,
            num_retries=0,
        )
    assert patches.escapes() > escapes  # LiteLLM may try twice; each attempt is refused and counted
    assert fake.seen == []  # it never left


async def test_unknown_provider_is_refused_at_startup(
    app_client: AppClient, make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    doc = base_config(
        model_list=[
            {"model_name": "x", "litellm_params": {"model": "no-such-provider/x", "api_base": "http://h"}}
        ]
    )
    error = await refused(make_settings(doc))
    assert isinstance(error, ConfigError)
    assert error.errors == (
        "model_list[0].litellm_params.model: LiteLLM 1.106.2 has no provider 'no-such-provider' (model 'x')",
    )


async def test_provider_with_a_session_of_its_own_is_refused_at_startup(
    make_settings: Callable[..., Settings],
) -> None:
    params = {"model": "aiohttp_openai/gpt-4o", "api_base": "http://127.0.0.1:9/v1", "api_key": "k"}
    error = await refused(
        make_settings(base_config(model_list=[{"model_name": "a", "litellm_params": params}]))
    )
    assert isinstance(error, ConfigError)
    assert error.errors == (
        "model_list[0].litellm_params.model: LiteLLM sends aiohttp_openai/ through an HTTP session of its "
        "own, around the cookie jar: use openai/ (model 'a')",
    )


async def test_provider_needing_a_package_not_installed_is_refused_at_startup(
    app_client: AppClient, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """vertex_ai/ needs google-auth, a dependency of the gateway: served. In an installation without it (as
    if it were missing here), refused at startup, naming the package."""
    params = {"model": "vertex_ai/gemini-2.5-pro", "vertex_project": "p", "vertex_location": "us-central1"}
    settings = make_settings(base_config(model_list=[{"model_name": "v", "litellm_params": params}]))
    assert (await (await app_client(settings)).get("/v1/models")).status == 200
    monkeypatch.setattr(providers, "_installed", lambda module: module != "google.auth")
    error = await refused(settings)
    assert isinstance(error, ConfigError)
    assert error.errors == (
        "model_list[0].litellm_params.model: LiteLLM serves vertex_ai/ only with the google-auth package, "
        "which is not installed here (model 'v')",
    )


@pytest.mark.subprocess
def test_serve_refuses_loudly(tmp_path: Path, child_env: dict[str, str]) -> None:
    """The real CLI: a clear line and exit 1, no traceback, no silent cookie-less gateway."""
    config = tmp_path / "config.yaml"
    config.write_text(
        "model_list:\n  - model_name: demo\n    litellm_params: {model: openai/demo, mock_response: hi}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "aiohttp_memproxy", "serve", "--config", str(config), "--port", "18764"],
        env={**child_env, "LITELLM_RUST": "1"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "refusing_to_start" in result.stdout + result.stderr
    assert "LITELLM_RUST" in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


async def test_a_refused_start_leaves_litellm_as_it_was(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, url = upstream
    before = factories()
    monkeypatch.setenv("LITELLM_RUST", "1")
    assert isinstance(await refused(make_settings()), SeamError)
    assert factories() == before
    monkeypatch.delenv("LITELLM_RUST")
    params = {"model": "mistral/mistral-small-latest", "api_base": f"{url}/v1", "api_key": "k"}
    client = await app_client(
        make_settings(base_config(model_list=[{"model_name": "m", "litellm_params": params}]))
    )
    response = await post(client, {"model": "m", "messages": MESSAGES})
    assert response.status == 200, await response.text()
