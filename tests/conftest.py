"""Shared fixtures: configs written to disk and loaded for real, the real app over HTTP, captured logs."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

# Before anything imports litellm: never fetch the price map from the network.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from aiohttp_memproxy import logs
from aiohttp_memproxy.app import create_app
from aiohttp_memproxy.config.load import load_settings
from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.llm import patches
from aiohttp_memproxy.outbound.egress import is_loopback
from tests.fake_upstream import FakeUpstream

REPO = Path(__file__).resolve().parent.parent
SHIPPED_CONFIG = REPO / "conf" / "config.yaml"
MASTER_KEY = "sk-test-master-key-0123456789"


def _local(host: object) -> bool:
    """What socket calls pass: None or "" (this host), bytes, an IPv6 address with its zone."""
    if host in (None, ""):
        return True
    name = host.decode() if isinstance(host, bytes) else str(host)
    return is_loopback(name.split("%")[0])


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """No test leaves loopback: a name lookup or connection elsewhere fails at once and fails the test.
    (LiteLLM, for one, would fetch a price map or a tokenizer from the network on some paths.)"""
    attempts: list[str] = []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not _local(host):
            attempts.append(f"lookup {host}")
            raise socket.gaierror(socket.EAI_NONAME, "tests reach loopback only")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock: socket.socket, address: Any) -> None:
        if sock.family in (socket.AF_INET, socket.AF_INET6) and not _local(address[0]):
            attempts.append(f"connect {address[0]}")
            raise OSError(101, "tests reach loopback only")  # ENETUNREACH
        real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    yield attempts
    assert attempts == [], f"a test tried to leave loopback: {attempts}"


@pytest.fixture(autouse=True)
def nothing_around_the_jar(request: pytest.FixtureRequest) -> Iterator[None]:
    """The tripwire: no request of LiteLLM's reaches the seam outside a gateway call (one that would have been
    sent with a client of LiteLLM's own, cookie-less), in any test but those that provoke one on purpose."""
    before = patches.escapes()
    yield
    if request.node.get_closest_marker("provokes_escape") is None:
        assert patches.escapes() == before, "LiteLLM sent a request outside a gateway call"


def base_config(**sections: Any) -> dict[str, Any]:
    """A small valid config; keyword arguments replace or add top-level sections."""
    doc: dict[str, Any] = {
        "model_list": [
            {"model_name": "demo", "litellm_params": {"model": "openai/demo", "mock_response": "hi"}},
        ]
    }
    doc.update(sections)
    return doc


@pytest.fixture
def write_config(tmp_path: Path) -> Callable[[dict[str, Any] | str], Path]:
    counter = iter(range(1000))

    def write(doc: dict[str, Any] | str) -> Path:
        path = tmp_path / f"config-{next(counter)}.yaml"
        path.write_text(doc if isinstance(doc, str) else yaml.safe_dump(doc, sort_keys=False))
        return path

    return write


@pytest.fixture
def make_settings(
    write_config: Callable[[dict[str, Any] | str], Path], tmp_path: Path
) -> Callable[..., Settings]:
    def make(doc: dict[str, Any] | str | None = None, environ: dict[str, str] | None = None) -> Settings:
        env = {"STATE_DIRECTORY": str(tmp_path / "state"), **(environ or {})}
        return load_settings(write_config(base_config() if doc is None else doc), env)

    return make


AppClient = Callable[[Settings], Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
def app_client(aiohttp_client: Any) -> AppClient:
    async def start(settings: Settings) -> TestClient[web.Request, web.Application]:
        client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(settings))
        return client

    return start


class LogLines:
    """What the real log configuration writes, one parsed JSON object per line."""

    def __init__(self, stream: io.StringIO) -> None:
        self.stream = stream

    @property
    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]

    def named(self, event: str) -> list[dict[str, Any]]:
        return [entry for entry in self.events if entry.get("event") == event]

    @property
    def text(self) -> str:
        return self.stream.getvalue()


@pytest.fixture
def log_lines() -> Iterator[LogLines]:
    stream = io.StringIO()
    logs.configure("json", "debug", stream=stream)
    try:
        yield LogLines(stream)
    finally:
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()
        logging.getLogger().handlers.clear()


@pytest.fixture
async def upstream(aiohttp_server: Any) -> tuple[FakeUpstream, str]:
    """A fake upstream on loopback and its base URL."""
    fake = FakeUpstream()
    server: TestServer = await aiohttp_server(fake.app())
    return fake, str(server.make_url("")).rstrip("/")


UPSTREAM_KEY = "sk-upstream-key-never-shown-0123456789"
SM_KEY = "sm-supermemory-key-never-shown-987654"
MESSAGES = [{"role": "user", "content": "hi"}]
# One model per provider family the gateway supports, all pointed at the fake upstream.
FAMILIES = ["gpt-up", "vllm-up", "claude-up"]


def models_at(url: str) -> list[dict[str, Any]]:
    return [
        {
            "model_name": "gpt-up",
            "litellm_params": {"model": "openai/gpt-up", "api_base": f"{url}/v1", "api_key": UPSTREAM_KEY},
        },
        {"model_name": "vllm-up", "litellm_params": {"model": "hosted_vllm/qwen", "api_base": f"{url}/v1"}},
        {
            "model_name": "claude-up",
            "litellm_params": {"model": "anthropic/claude-up", "api_base": url, "api_key": UPSTREAM_KEY},
        },
        {
            "model_name": "claude-memory",
            "litellm_params": {
                "model": "anthropic/claude-memory",
                "api_base": url,
                "api_key": UPSTREAM_KEY,
                "extra_headers": {"x-supermemory-api-key": SM_KEY},
            },
            "model_info": {"supermemory": True},
        },
        {
            "model_name": "gpt-memory",
            "litellm_params": {
                "model": "openai/gpt-memory",
                "api_base": f"{url}/v1",
                "api_key": UPSTREAM_KEY,
            },
            "model_info": {"supermemory": True},
        },
        {
            "model_name": "gpt-4o-up",
            "litellm_params": {"model": "openai/gpt-4o", "api_base": f"{url}/v1", "api_key": UPSTREAM_KEY},
        },
        {
            "model_name": "off",
            "litellm_params": {"model": "openai/off", "api_key": "os.environ/TEST_UNSET_OFF"},
        },
        {
            "model_name": "nowhere",
            "litellm_params": {
                "model": "openai/nowhere",
                "api_base": "http://127.0.0.1:9/v1",
                "api_key": "x",
            },
        },
    ]


@pytest.fixture
def gateway_settings(
    make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> Callable[..., Settings]:
    _, url = upstream

    def make(**memproxy: Any) -> Settings:
        doc = base_config(
            model_list=models_at(url),
            litellm_settings={"drop_params": True},
            user_id_mappings={
                "header_patterns": [
                    {"header": "user-agent", "pattern": "^claude-cli", "user_id": "claude-code"}
                ]
            },
            memproxy={"retry_base_delay_s": 0, "max_body_mb": 1, **memproxy},
        )
        return make_settings(doc)

    return make


async def post(client: TestClient[web.Request, web.Application], body: Any, **kwargs: Any) -> Any:
    return await client.post("/v1/chat/completions", json=body, **kwargs)


def sse_frames(text: str) -> list[str]:
    return [line[len("data: ") :] for line in text.split("\n\n") if line.startswith("data: ")]


SECRET_VARIABLES = (
    "MEMPROXY_MASTER_KEY",
    "ANTHROPIC_API_KEY",
    "SUPERMEMORY_API_KEY",
    "OPENAI_API_KEY",
    "GEMINI_API_KEY",
)


@pytest.fixture
def child_env(tmp_path: Path) -> dict[str, str]:
    # Nor the developer's proxies: a child gateway or CLI on loopback must not go through a corporate proxy.
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in SECRET_VARIABLES and k != "MEMPROXY_CONFIG" and not k.lower().endswith("_proxy")
    }
    env.update({"HOME": str(tmp_path), "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    env.pop("STATE_DIRECTORY", None)
    env.pop("XDG_STATE_HOME", None)
    return env


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
