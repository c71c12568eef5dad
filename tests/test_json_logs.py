"""``--log-format json``: every line the real process writes, on stdout and stderr, is one JSON object, over a
run of every route (library warnings included: they go through the log configuration, without their text)."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.conftest import MESSAGES, UPSTREAM_KEY, base_config, models_at
from tests.fake_upstream import FakeUpstream
from tests.test_cli import free_port, wait_ready

pytestmark = pytest.mark.subprocess


async def every_route(base: str) -> None:
    """One request of each kind a client sends, the failing kinds included."""
    gpt = openai.AsyncOpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0)
    claude = anthropic.AsyncAnthropic(base_url=base, api_key="unused", max_retries=0)
    try:
        await gpt.chat.completions.create(model="gpt-up", messages=MESSAGES)  # type: ignore[arg-type]
        async for _ in await gpt.chat.completions.create(model="gpt-up", messages=MESSAGES, stream=True):  # type: ignore[arg-type]
            pass
        await gpt.responses.create(model="gpt-up", input="hi")
        async for _ in await gpt.responses.create(model="gpt-up", input="hi", stream=True):
            pass
        async for _ in await gpt.responses.create(model="claude-up", input="hi", stream=True):  # bridged
            pass
        await claude.messages.create(model="claude-up", max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]
        # Through a wildcard, to a model LiteLLM's price map lacks, natively: LiteLLM's own cost logging of
        # the stream fails (an error with a traceback, 1.110.2), which is none of the gateway's business.
        async with claude.messages.stream(model="wild-claude-1", max_tokens=64, messages=MESSAGES) as stream:  # type: ignore[arg-type]
            await stream.get_final_message()
        async with claude.messages.stream(model="gpt-up", max_tokens=64, messages=MESSAGES) as stream:  # type: ignore[arg-type]
            await stream.get_final_message()
        await claude.messages.count_tokens(model="claude-up", messages=MESSAGES)  # type: ignore[arg-type]
        await gpt.models.list()
        await gpt.models.retrieve("gpt-up")
        with pytest.raises(openai.BadRequestError):
            await gpt.chat.completions.create(model="gpt-up", messages=[])
        with pytest.raises(openai.NotFoundError):
            await gpt.chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    finally:
        await gpt.close()
        await claude.close()
    async with aiohttp.ClientSession() as session:
        for path in ("/health", "/metrics", "/ui", "/ui/data", "/memory-routing/info", "/v1/nope"):
            async with session.get(f"{base}{path}") as response:
                await response.read()


async def test_every_line_is_json_over_every_route(
    upstream: tuple[FakeUpstream, str],
    write_config: Callable[[dict[str, Any] | str], Path],
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    fake, url = upstream
    fake.gate = True
    wildcard = {
        "model_name": "wild-*",
        "litellm_params": {"model": "anthropic/*", "api_base": url, "api_key": UPSTREAM_KEY},
    }
    models = [*models_at(url), wildcard]
    config = write_config(base_config(model_list=models, memproxy={"retry_base_delay_s": 0}))
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiohttp_memproxy",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--state-dir",
        str(tmp_path / "state"),
        "--log-format",
        "json",
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        await wait_ready(port)
        await every_route(f"http://127.0.0.1:{port}")
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    lines = [line for line in (out + err).decode().splitlines() if line.strip()]
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"not JSON: {line[:300]!r}") from None
        assert isinstance(event, dict), line[:300]
        assert "event" in event, line[:300]
    events = [json.loads(line)["event"] for line in lines]
    assert events.count("request") >= 19
    text = (out + err).decode()
    assert UPSTREAM_KEY not in text
    assert "Hello from upstream" not in text  # no answer's text in any line, a warning's included
    # Nothing went wrong in these requests but the failing kinds' own 4xx: no error line, no traceback.
    assert [json.loads(line) for line in lines if json.loads(line).get("level") == "error"] == []
    assert "Traceback" not in text
