"""The real coding CLIs against the real gateway, end to end: what they send must work. The binaries come
from ``make cli-deps`` (npm packages pinned and locked in ``tests/clis``, which CI installs); a test skips,
saying why, where one cannot be had. The CLIs are pointed at the gateway on loopback, and the gateway at the
fake upstream behind its cookie gate; telemetry and update checks are switched off."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from aiohttp_memproxy.config.settings import Settings
from tests import fake_dialects
from tests.conftest import MASTER_KEY, REPO, UPSTREAM_KEY, AppClient, base_config
from tests.fake_upstream import FakeUpstream

CLI_BIN = REPO / "tests" / "clis" / "node_modules" / ".bin"
TIMEOUT_S = 180


def cli(name: str) -> Path:
    """The pinned binary from ``make cli-deps``; skipped with the reason where it cannot be had."""
    found = CLI_BIN / name
    if not found.exists():
        pytest.skip(f"{name} is not installed: run `make cli-deps` (npm; versions pinned in tests/clis)")
    if shutil.which("node") is None:
        pytest.skip(f"{name} needs Node.js, which is not on PATH")
    return found


def cli_env(home: Path, **extra: str) -> dict[str, str]:
    keep = ("PATH", "LANG", "TERM")
    env = {key: os.environ[key] for key in keep if key in os.environ}
    return {"HOME": str(home), **env, **extra}


async def run(command: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """A child process without blocking the loop, which serves the gateway and the fake upstream."""
    process = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return process.returncode, out.decode(errors="replace"), err.decode(errors="replace")


@pytest.mark.subprocess
async def test_claude_code_cli_to_an_openai_compatible_model(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
) -> None:
    """``claude -p`` with ANTHROPIC_BASE_URL at the gateway; every Claude id it uses goes, through a
    wildcard, to an OpenAI-compatible model LiteLLM does not know."""
    claude = cli("claude")
    fake, url = upstream
    fake.gate = True
    fake.call_tools = False  # a plain answer: the CLI would run a tool call for real
    doc = base_config(
        model_list=[
            {
                "model_name": "claude-*",
                "litellm_params": {
                    "model": "openai/local-coder",
                    "api_base": f"{url}/v1",
                    "api_key": UPSTREAM_KEY,
                },
            }
        ],
        general_settings={"master_key": MASTER_KEY},
        memproxy={"retry_base_delay_s": 0},
    )
    client = await app_client(make_settings(doc))
    home = tmp_path / "home"
    home.mkdir()
    env = cli_env(
        home,
        ANTHROPIC_BASE_URL=str(client.make_url("")).rstrip("/"),
        ANTHROPIC_API_KEY=MASTER_KEY,
        DISABLE_TELEMETRY="1",
        DISABLE_AUTOUPDATER="1",
        DISABLE_ERROR_REPORTING="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
    )
    code, out, err = await run(
        [str(claude), "-p", "Say hello.", "--model", "claude-sonnet-4-5-20250929"], env, tmp_path
    )
    assert code == 0, (out, err)
    assert "Hello from upstream" in out
    chats = [seen for seen in fake.seen if seen.path == "/v1/chat/completions"]
    assert chats, [seen.path for seen in fake.seen]
    assert fake.challenges == 1
    assert all(fake.with_cookie[1:]), fake.with_cookie  # one challenge, then the cookie every time


@pytest.mark.subprocess
@pytest.mark.parametrize(("model", "path"), [("gpt-5-codex", "/v1/responses"), ("claude-up", "/v1/messages")])
async def test_codex_cli(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
    model: str,
    path: str,
) -> None:
    """``codex exec`` with a model_providers entry for the gateway (wire_api responses): natively to an
    upstream with the Responses API, and bridged to an Anthropic one."""
    codex = cli("codex")
    fake, url = upstream
    fake.gate = True
    fake.call_tools = False  # a plain answer: the CLI would run a tool call for real
    doc = base_config(
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
                "litellm_params": {"model": "anthropic/claude-up", "api_base": url, "api_key": UPSTREAM_KEY},
            },
        ],
        general_settings={"master_key": MASTER_KEY},
        litellm_settings={"drop_params": True},
        memproxy={"retry_base_delay_s": 0},
    )
    client = await app_client(make_settings(doc))
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    base_url = str(client.make_url("/v1"))
    provider = (
        f'{{name="memproxy", base_url="{base_url}", env_key="MEMPROXY_KEY", wire_api="responses", '
        "request_max_retries=0, stream_max_retries=0}"
    )
    env = cli_env(home, CODEX_HOME=str(home / ".codex"), MEMPROXY_KEY=MASTER_KEY)
    command = [
        str(codex),
        "exec",
        "--skip-git-repo-check",
        "-c",
        "model_provider=memproxy",
        "-c",
        f"model_providers.memproxy={provider}",
        "-m",
        model,
        "Say hello.",
    ]
    code, out, err = await run(command, env, tmp_path)
    assert code == 0, (out, err)
    assert "Hello from upstream" in out
    assert {seen.path for seen in fake.seen} == {path}
    if path == "/v1/responses":  # what Codex 0.169 sends, as it reached the upstream
        sent = fake.seen[-1].body
        assert sent["store"] is False
        assert sent["include"] == ["reasoning.encrypted_content"]
        assert sent["prompt_cache_key"]
        assert sent["input"][0]["role"] == "developer"
        assert any(tool["name"] == "exec_command" for tool in sent["tools"])
    assert fake.challenges == 1
    assert all(fake.with_cookie[1:]), fake.with_cookie


@pytest.mark.subprocess
@pytest.mark.parametrize(
    ("provider", "path"),
    [("gemini", ":streamGenerateContent"), ("anthropic", "/v1/messages"), ("openai", "/v1/chat/completions")],
)
@pytest.mark.parametrize("model", [None, "gemini-2.5-flash"])
async def test_gemini_cli(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
    provider: str,
    path: str,
    model: str | None,
) -> None:
    """``gemini -p`` with GOOGLE_GEMINI_BASE_URL at the gateway and its key in GEMINI_API_KEY, in its default
    mode (no -m: a classifier model first, then its default model) and with -m; every Gemini id it uses goes,
    through a wildcard, to a Gemini upstream natively, or bridged to an Anthropic or an OpenAI one."""
    gemini = cli("gemini")
    fake, url = upstream
    fake.gate = True
    fake.call_tools = False  # a plain answer: the CLI would run a tool call for real
    params = {
        "gemini": {"model": "gemini/gemini-up", "api_base": url},
        "anthropic": {"model": "anthropic/claude-up", "api_base": url},
        "openai": {"model": "openai/gpt-up", "api_base": f"{url}/v1"},
    }[provider]
    doc = base_config(
        model_list=[{"model_name": "gemini-*", "litellm_params": {**params, "api_key": UPSTREAM_KEY}}],
        general_settings={"master_key": MASTER_KEY},
        litellm_settings={"drop_params": True},
        user_id_mappings={
            "header_patterns": [{"header": "user-agent", "pattern": "^GeminiCLI", "user_id": "gemini-cli"}]
        },
        memproxy={"retry_base_delay_s": 0},
    )
    client = await app_client(make_settings(doc))
    home = tmp_path / "home"
    (home / ".gemini").mkdir(parents=True)
    # No update check, no telemetry, no usage statistics: nothing leaves loopback.
    (home / ".gemini" / "settings.json").write_text(
        json.dumps(
            {
                "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
                "privacy": {"usageStatisticsEnabled": False},
                "telemetry": {"enabled": False},
                "security": {"auth": {"selectedType": "gemini-api-key"}},
            }
        )
    )
    env = cli_env(
        home,
        GOOGLE_GEMINI_BASE_URL=str(client.make_url("")).rstrip("/"),
        GEMINI_API_KEY=MASTER_KEY,
        GEMINI_CLI_NO_RELAUNCH="true",
    )
    command = [str(gemini), "--skip-trust", "-p", "Say hello.", *(["-m", model] if model else [])]
    code, out, err = await run(command, env, tmp_path)
    assert code == 0, (out, err)
    assert "Hello from upstream" in out
    assert any(seen.path.endswith(path) for seen in fake.seen), [seen.path for seen in fake.seen]
    if model is None:  # without -m, its classifier asked first for JSON of a schema (LiteLLM: a forced tool)
        assert any(
            fake_dialects.asked_schema(seen.body) is not None
            or (seen.body.get("tool_choice") or {}).get("name") == "json_tool_call"
            for seen in fake.seen
        )
    assert fake.challenges == 1
    assert all(fake.with_cookie[1:]), fake.with_cookie
