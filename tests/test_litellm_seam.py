"""The seam in LiteLLM's client factories: installed and removed with the app, a loud refusal when LiteLLM's
internals moved, and a LiteLLM request outside a gateway call refused and counted (the tripwire)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import litellm
import openai
import pytest
from aiohttp import web
from litellm.llms.custom_httpx import http_handler
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler
from litellm.llms.openai.common_utils import BaseOpenAILLM
from litellm.router_rust.invoke import endpoints, streaming
from litellm.rust_bridge import catalog
from litellm.rust_bridge.catalog import decision
from litellm.rust_bridge.configuration import Decision, Rollout

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
        vars(endpoints)["compact_to_fit"],  # the Router's attempts, adapted for a gateway call
        vars(streaming.StreamAttempt)["fallback"],  # the Router's recovery of a broken stream
        vars(streaming.StreamAttempt)["retry"],
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
    assert (
        f"not as verified on {patches.VERIFIED_ON} (missing AsyncHTTPHandler.create_async_transport)"
        in str(error)
    )


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


def claude_at(url: str) -> dict[str, Any]:
    return {
        "model_name": "claude",
        "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_base": url, "api_key": UPSTREAM_KEY},
    }


def gpt_at(url: str) -> dict[str, Any]:
    return {
        "model_name": "gpt",
        "litellm_params": {"model": "openai/gpt-4o", "api_base": f"{url}/v1", "api_key": UPSTREAM_KEY},
    }


async def test_litellm_rust_in_the_environment_is_refused_naming_route_and_provider(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """LiteLLM's catalog serves Messages to anthropic/ in Rust when LITELLM_RUST is on (opt-in); the
    environment wins over LiteLLM's process switch, so the gateway cannot turn it off: it refuses."""
    monkeypatch.setenv("LITELLM_RUST", "1")
    error = await refused(make_settings(base_config(model_list=[claude_at("http://localhost:9")])))
    assert isinstance(error, ConfigError)
    assert error.errors == (
        f"model_list[0].litellm_params.model: LiteLLM {patches.LITELLM_VERSION} would send anthropic/ "
        "requests through its Rust HTTP client, around the cookie jar: messages (LITELLM_RUST is set in the "
        "environment: unset it) (model 'claude')",
    )


async def test_without_litellm_rust_the_opt_in_route_stays_in_python(
    app_client: AppClient, make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream
    client = await app_client(make_settings(base_config(model_list=[claude_at(url)])))
    async with anthropic.AsyncAnthropic(base_url=str(client.make_url("")), api_key="x", max_retries=0) as sdk:
        answer = await sdk.messages.create(model="claude", max_tokens=16, messages=MESSAGES)  # type: ignore[arg-type]
    assert answer.content
    assert len(fake.seen) == 1  # through the gateway's session (the fake upstream's cookie gate passed)


def rust_catalog(rollout: str, route: str, provider: str) -> tuple[Any, ...]:
    """LiteLLM's catalog with one more rule first: ``route`` for ``provider`` goes to Rust as ``rollout``."""
    rule = catalog.RouteRule(catalog.Route(route), Rollout[rollout], providers=frozenset({provider}))
    return (rule, *catalog.RULES)


async def test_a_catalog_that_requires_rust_is_refused_naming_route_and_provider(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(catalog, "RULES", rust_catalog("RUST_REQUIRED", "chat_completions", "openai"))
    doc = base_config(model_list=[claude_at("http://localhost:9"), gpt_at("http://localhost:9")])
    error = await refused(make_settings(doc))
    assert isinstance(error, ConfigError)
    assert error.errors == (
        f"model_list[1].litellm_params.model: LiteLLM {patches.LITELLM_VERSION} would send openai/ requests "
        "through its Rust HTTP client, around the cookie jar: "
        "chat_completions (LiteLLM serves it only there) (model 'gpt')",
    )


async def test_a_catalog_rule_for_some_requests_only_is_found(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rule that sends only streamed Responses requests to Rust still refuses the deployment."""
    rule = catalog.RouteRule(
        catalog.Route.RESPONSES, Rollout.RUST_REQUIRED, features=frozenset({catalog.Feature.STREAMING})
    )
    monkeypatch.setattr(catalog, "RULES", (rule, *catalog.RULES))
    error = await refused(make_settings(base_config(model_list=[gpt_at("http://localhost:9")])))
    assert isinstance(error, ConfigError)
    assert "responses (LiteLLM serves it only there)" in error.errors[0]


async def test_a_catalog_that_prefers_rust_is_overridden_and_served_in_python(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Rust by default where LiteLLM allows an override (opt-out): the seam's switch keeps it in Python, and
    the call goes through the gateway's session and jar."""
    monkeypatch.setattr(catalog, "RULES", rust_catalog("RUST_OPT_OUT", "chat_completions", "openai"))
    fake, url = upstream
    client = await app_client(make_settings(base_config(model_list=[gpt_at(url)])))
    assert decision(catalog.RouteContext(catalog.Route.CHAT_COMPLETIONS, "openai")) is Decision.PYTHON
    async with openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="x", max_retries=0) as sdk:
        assert (await sdk.chat.completions.create(model="gpt", messages=MESSAGES)).choices  # type: ignore[arg-type]
    assert len(fake.seen) == 1
    monkeypatch.setenv("LITELLM_RUST", "1")  # the environment wins over the switch: refused
    error = await refused(make_settings(base_config(model_list=[gpt_at(url)])))
    assert isinstance(error, ConfigError)
    assert "chat_completions (LITELLM_RUST is set in the environment: unset it)" in error.errors[0]


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
        f"model_list[0].litellm_params.model: LiteLLM {patches.LITELLM_VERSION} has no provider "
        "'no-such-provider' (model 'x')",
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
        "model_list:\n  - model_name: claude\n    litellm_params: {model: anthropic/claude-sonnet-4-5, "
        "api_key: k}\n"
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
    claude = base_config(model_list=[claude_at(url)])
    assert isinstance(await refused(make_settings(claude)), ConfigError)
    assert factories() == before
    monkeypatch.delenv("LITELLM_RUST")
    params = {"model": "mistral/mistral-small-latest", "api_base": f"{url}/v1", "api_key": "k"}
    client = await app_client(
        make_settings(base_config(model_list=[{"model_name": "m", "litellm_params": params}]))
    )
    response = await post(client, {"model": "m", "messages": MESSAGES})
    assert response.status == 200, await response.text()
