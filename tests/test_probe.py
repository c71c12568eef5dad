"""``memproxy check --probe``: the real command in a child process, against a cookie-gated fake upstream on
loopback (the command itself is meant for real upstreams; the test never leaves the machine)."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, SM_KEY, UPSTREAM_KEY, base_config, models_at
from tests.fake_upstream import CLEARANCE, FakeUpstream

pytestmark = pytest.mark.subprocess


async def run_cli(*args: str, env: dict[str, str]) -> tuple[int, str, str]:
    """The CLI as a child, awaited, so this test's loop keeps serving the fake upstream meanwhile."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aiohttp_memproxy",
        *args,
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def blocks(report: str) -> dict[str, str]:
    """The probe report by model: a block starts at an unindented line naming the model."""
    found: dict[str, str] = {}
    current = None
    for line in report.splitlines():
        if line and not line.startswith(" ") and not line.startswith("probe "):
            current = line.split()[0]
            found[current] = line
        elif current is not None and line.startswith(" "):
            found[current] += "\n" + line
    return found


@pytest.fixture
def probe_config(
    write_config: Callable[[dict[str, Any] | str], Path], upstream: tuple[FakeUpstream, str]
) -> Path:
    _, url = upstream
    wildcard = {
        "model_name": "claude-*",
        "litellm_params": {"model": "anthropic/claude-*", "api_base": url, "api_key": UPSTREAM_KEY},
    }
    doc = base_config()
    doc["model_list"] += [*models_at(url), wildcard]
    return write_config(doc)


async def test_probe_reports_each_model_through_the_gated_session(
    upstream: tuple[FakeUpstream, str], probe_config: Path, child_env: dict[str, str], tmp_path: Path
) -> None:
    fake, _ = upstream
    fake.gate = True
    state = tmp_path / "probe-state"
    code, out, err = await run_cli(
        "check", "--probe", "--config", str(probe_config), "--state-dir", str(state), env=child_env
    )
    assert code == 1, out + err  # `nowhere` cannot be reached: the probe says so in its exit status
    found = blocks(out.split("probe (cookie jar:", 1)[1])
    # The first call meets the gate: 503 with the cookie, retried at once, 200; the jar replays it after.
    assert "ok" in found["gpt-up"].split()
    assert "upstream 503/200" in found["gpt-up"]
    cookies_line = next(line for line in found["gpt-up"].splitlines() if "cookies set:" in line)
    set_part, replayed_part = cookies_line.split(";")
    assert CLEARANCE in set_part
    assert CLEARANCE in replayed_part
    for name in ("vllm-up", "claude-up", "claude-memory", "gpt-memory", "gpt-4o-up"):
        assert "ok" in found[name].split(), found[name]
        assert "upstream 200 in" in found[name], found[name]
        assert f"cookies set: -; replayed: __cf_bm, {CLEARANCE}" in found[name]
    assert "messages upstream" in found["claude-up"]  # Anthropic models go the way Claude Code's requests go
    assert "chat upstream" in found["vllm-up"]
    # Memory headers as they went out: to Supermemory models only, the key shown as set, never its value.
    assert "memory headers: x-sm-user-id=default-dev, x-supermemory-api-key=set" in found["claude-memory"]
    assert "memory headers: x-sm-user-id=default-dev\n" in found["gpt-memory"] + "\n"
    assert "not a Supermemory model" in found["claude-up"]
    assert "proxy: direct; TLS trusts: system store" in found["gpt-up"]  # no proxy configured here
    sent = {seen.body.get("model"): {k.lower(): v for k, v in seen.headers.items()} for seen in fake.seen}
    assert sent["claude-memory"]["x-sm-user-id"] == "default-dev"
    assert "x-sm-user-id" not in sent["claude-up"]
    # What is not probed says why; what fails says how, in our words.
    assert "skipped" in found["demo"].split()
    assert "mock_response" in found["demo"]
    assert "TEST_UNSET_OFF" in found["off"]
    assert "wildcard" in found["claude-*"]
    assert "error" in found["nowhere"].split()
    assert "502 upstream_unreachable" in found["nowhere"]
    for secret in (UPSTREAM_KEY, SM_KEY):
        assert secret not in out + err
    assert "Traceback" not in err
    # The jar is the service's: saved after the probe, so the first real request needs no challenge.
    saved = json.loads((state / "cookies.json").read_text())
    assert CLEARANCE in json.dumps(saved)


async def test_probe_one_model_by_id(
    upstream: tuple[FakeUpstream, str], probe_config: Path, child_env: dict[str, str], tmp_path: Path
) -> None:
    fake, _ = upstream
    code, out, err = await run_cli(
        "check",
        "--probe",
        "--model",
        "claude-haiku-4-5-20251001",  # through the wildcard, as Claude Code would name it
        "--config",
        str(probe_config),
        "--state-dir",
        str(tmp_path / "state"),
        env=child_env,
    )
    assert code == 0, out + err
    found = blocks(out.split("probe (cookie jar:", 1)[1])
    assert list(found) == ["claude-haiku-4-5-20251001"]
    assert "messages upstream 200" in found["claude-haiku-4-5-20251001"]
    assert [seen.body["model"] for seen in fake.seen] == ["claude-haiku-4-5-20251001"]
