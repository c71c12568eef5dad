"""No secret and no prompt in any line the gateway writes, at --log-level debug, with the libraries' own debug
switches set too (OPENAI_LOG, ANTHROPIC_LOG, LITELLM_LOG): the real CLI as a child process, every route
called with marked keys and marked prompt text, answered and failing, in both modes; stdout and stderr are
searched whole."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.bench import serve_command
from tests.conftest import LogLines, base_config
from tests.fake_upstream import FakeUpstream, Scripted
from tests.test_cli import free_port, wait_ready

pytestmark = pytest.mark.subprocess

MASTER = "sk-master-MARK-7f3a9c1d2e4b"
UPSTREAM = "sk-upstream-MARK-b41c0e99aa"
SUPERMEMORY = "sm-supermemory-MARK-55aa66bb"
PROMPT = "PROMPT-MARK-purple-elephant"
MARKS = (MASTER, UPSTREAM, SUPERMEMORY, PROMPT)
DEBUG_ENV = {"OPENAI_LOG": "debug", "ANTHROPIC_LOG": "debug", "LITELLM_LOG": "DEBUG"}
AUTH = {"Authorization": f"Bearer {MASTER}", "anthropic-version": "2023-06-01", "x-memory-user-id": "alice"}
MESSAGES = [{"role": "user", "content": PROMPT}]


def config(url: str, **memproxy: Any) -> dict[str, Any]:
    return base_config(
        model_list=[
            {
                "model_name": "gpt-up",
                "litellm_params": {"model": "openai/gpt-up", "api_base": f"{url}/v1", "api_key": UPSTREAM},
            },
            {
                "model_name": "claude-memory",
                "litellm_params": {
                    "model": "anthropic/claude-memory",
                    "api_base": url,
                    "api_key": UPSTREAM,
                    "extra_headers": {"x-supermemory-api-key": SUPERMEMORY},
                },
                "model_info": {"supermemory": True},
            },
            {
                "model_name": "gpt-memory",
                "litellm_params": {
                    "model": "openai/gpt-memory",
                    "api_base": f"{url}/v1",
                    "api_key": UPSTREAM,
                    "extra_headers": {"x-supermemory-api-key": SUPERMEMORY},
                },
                "model_info": {"supermemory": True},
            },
            {
                "model_name": "gemini-up",
                "litellm_params": {
                    "model": "gemini/gemini-2.5-flash",
                    "api_base": f"{url}/v1beta",
                    "api_key": UPSTREAM,
                },
            },
        ],
        general_settings={"master_key": MASTER},
        memproxy={"retry_base_delay_s": 0, **memproxy},
    )


def spawn(config: Path, port: int, state: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*serve_command(config, port, state), "--log-level", "debug", "--log-format", "json"],
        env={**env, **DEBUG_ENV},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def run_gateway(tmp_path: Path, env: dict[str, str], doc: dict[str, Any], calls: Any) -> str:
    """The gateway at debug, ``calls(session, base)`` against it; everything it wrote, stdout and stderr."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    port = free_port()
    process = spawn(path, port, tmp_path / "state", env)
    try:
        await wait_ready(port)
        async with aiohttp.ClientSession() as session:
            await calls(session, f"http://127.0.0.1:{port}")
    finally:
        process.terminate()
        out, err = await asyncio.to_thread(process.communicate, timeout=60)
    return out + err


async def call(session: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> int:
    async with session.request(method, url, **kwargs) as response:
        await response.read()
        return response.status


async def test_every_route_at_debug_logs_no_secret_and_no_prompt(
    tmp_path: Path, child_env: dict[str, str], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream

    async def calls(session: aiohttp.ClientSession, base: str) -> None:
        statuses: list[tuple[str, int]] = []

        async def note(name: str, method: str, path: str, **kwargs: Any) -> None:
            headers = {**AUTH, **kwargs.pop("headers", {})}
            statuses.append((name, await call(session, method, base + path, headers=headers, **kwargs)))

        for path in (
            "/health",
            "/metrics",
            "/ui",
            "/ui/data",
            "/memory-routing/info",
            "/v1/models",
            "/api/hello",
        ):
            await note(path, "GET", path)
        await note("telemetry", "POST", "/api/event_logging/batch", json={"events": [PROMPT]})
        for stream in (False, True):
            chat = {"model": "gpt-up", "messages": MESSAGES, "stream": stream}
            await note("chat", "POST", "/v1/chat/completions", json=chat)
            await note("chat-gemini", "POST", "/v1/chat/completions", json={**chat, "model": "gemini-up"})
            await note("chat-memory", "POST", "/v1/chat/completions", json={**chat, "model": "gpt-memory"})
            for model in ("claude-memory", "gpt-up"):
                body = {"model": model, "max_tokens": 32, "messages": MESSAGES, "stream": stream}
                await note(f"messages-{model}", "POST", "/v1/messages", json=body)
            for model in ("gpt-up", "claude-memory"):
                body = {"model": model, "input": PROMPT, "stream": stream}
                await note(f"responses-{model}", "POST", "/v1/responses", json=body)
        for model in ("claude-memory", "gpt-up"):
            counted = {"model": model, "messages": MESSAGES}
            await note(f"count-{model}", "POST", "/v1/messages/count_tokens", json=counted)
        # Failing: the upstream refuses (its body quoting the prompt), the body is not JSON, a bad field.
        fake.script = [Scripted(401, {"error": {"message": f"bad key for {PROMPT}"}})] * 3
        await note(
            "upstream-401", "POST", "/v1/chat/completions", json={"model": "gpt-up", "messages": MESSAGES}
        )
        await note("upstream-401-messages", "POST", "/v1/messages",
                   json={"model": "claude-memory", "max_tokens": 8, "messages": MESSAGES})  # fmt: skip
        fake.script = []
        not_json = {"data": f"{{{PROMPT}", "headers": {"Content-Type": "application/json"}}
        await note("not-json", "POST", "/v1/chat/completions", **not_json)
        await note("bad-field", "POST", "/v1/chat/completions",
                   json={"model": "gpt-up", "messages": MESSAGES, "temperature": PROMPT})  # fmt: skip
        served = {name for name, status in statuses if status == 200}
        expected = {"chat", "chat-gemini", "chat-memory", "messages-claude-memory", "messages-gpt-up",
                    "responses-gpt-up", "responses-claude-memory", "count-claude-memory", "count-gpt-up",
                    "/ui/data"}  # fmt: skip
        assert expected <= served, statuses
        assert dict(statuses)["upstream-401"] == 401

    output = await run_gateway(tmp_path, child_env, config(url), calls)
    assert len(fake.seen) >= 14  # the calls did reach the upstream, keys and prompt with them
    assert any(seen.headers.get("x-supermemory-api-key") == SUPERMEMORY for seen in fake.seen)
    lines = output.splitlines()
    assert any('"level": "debug"' in line for line in lines)  # debug really was on
    leaked = {mark: [line[:300] for line in lines if mark in line] for mark in MARKS}
    assert leaked == {mark: [] for mark in MARKS}


async def test_forward_mode_at_debug_logs_no_secret_and_no_prompt(
    tmp_path: Path, child_env: dict[str, str], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, url = upstream

    async def calls(session: aiohttp.ClientSession, base: str) -> None:
        for stream in (False, True):
            body = {"model": "claude-memory", "messages": MESSAGES, "stream": stream}
            assert await call(session, "POST", f"{base}/v1/chat/completions", json=body, headers=AUTH) == 200
        body = {"model": "claude-memory", "max_tokens": 8, "messages": MESSAGES}
        assert await call(session, "POST", f"{base}/v1/messages", json=body, headers=AUTH) == 200

    doc = config(url, mode="forward", upstream=url, upstream_key=UPSTREAM)
    output = await run_gateway(tmp_path, child_env, doc, calls)
    sent = [{name.lower(): value for name, value in seen.headers.items()} for seen in fake.seen]
    assert [headers.get("authorization") for headers in sent] == [f"Bearer {UPSTREAM}"] * 3
    for mark in MARKS:
        assert [line[:300] for line in output.splitlines() if mark in line] == [], mark


def test_the_markers_are_distinct() -> None:
    """A marker inside another would make a finding ambiguous."""
    assert len({mark for mark in MARKS if not any(mark in other for other in MARKS if other != mark)}) == 4
    assert json.dumps(MARKS)  # plain text, nothing to escape


LIBRARIES = ("anthropic", "openai", "httpx", "httpcore", "LiteLLM", "aiohttp.client", "botocore", "urllib3")
EMIT = f"""
import logging
from aiohttp_memproxy import logs
logs.configure("json", "debug")
import aiohttp_memproxy.service  # every library the gateway imports, as serve imports them
logs.adopt_library_loggers()
for name in {LIBRARIES!r}:
    logging.getLogger(name).debug("MARK debug %s", name)
    logging.getLogger(name).info("MARK info %s", name)
logging.getLogger("botocore").warning("a warning passes")
"""


def test_no_library_writes_below_warning_whatever_its_switches(child_env: dict[str, str]) -> None:
    """The SDKs' switches add handlers and lower levels at import; botocore and urllib3 log signed headers
    and URLs at DEBUG: nothing of a library below WARNING reaches the output."""
    done = subprocess.run(
        [sys.executable, "-c", EMIT],
        env={**child_env, **DEBUG_ENV},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    output = done.stdout + done.stderr
    assert "MARK" not in output
    assert "a warning passes" in output


def test_a_library_warning_is_one_log_line_without_its_text(log_lines: LogLines) -> None:
    """A Python warning goes through the log configuration (one JSON line) and never carries its text: a
    pydantic serializer warning quotes the value it dumped (an answer, a prompt)."""
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn(
            "Expected `str` but got `dict` with value `{'text': 'the answer'}`", UserWarning, stacklevel=1
        )
    [line] = log_lines.named("library_warning")
    assert (line["category"], line["level"]) == ("UserWarning", "warning")
    assert line["where"].startswith("tests/test_log_secrets.py:")
    assert "the answer" not in log_lines.text
