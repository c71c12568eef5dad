"""The CLI contract, driven as other tools drive it: the real command in a child process."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import REPO, SHIPPED_CONFIG, base_config

pytestmark = pytest.mark.subprocess


def memproxy(
    *args: str, env: dict[str, str], timeout: float = 60, cwd: Path = REPO
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "aiohttp_memproxy", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_check_shipped_config(child_env: dict[str, str]) -> None:
    result = memproxy("check", env=child_env)  # default: conf/config.yaml
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:3] == ["demo", "openai/demo", "ok"] for line in lines)
    assert any("claude-sonnet-4-5 " in line and "disabled: ANTHROPIC_API_KEY" in line for line in lines)
    assert "claude-sonnet-4-5-20250929 -> claude-sonnet-4-5" in result.stdout
    # Which LiteLLM and price map: the shipped models are all known to it (the demo model is a mock).
    assert any(line.startswith("litellm: ") and "(price map: bundled, " in line for line in lines)
    assert not [line for line in lines if "price map does not know" in line]


def test_check_warns_for_a_model_litellms_price_map_does_not_know(
    child_env: dict[str, str], write_config: Callable[[dict[str, Any] | str], Path]
) -> None:
    """A model newer than the installed LiteLLM (or a local one) has no price and no context window there:
    check names it and the model_info keys that fill them in; one that fills them in is not warned about."""
    models = [
        {"model_name": "brand-new", "litellm_params": {"model": "openai/gpt-99-ultra", "api_key": "x"}},
        {
            "model_name": "described",
            "litellm_params": {"model": "openai/gpt-99-lite", "api_key": "x"},
            "model_info": {
                "input_cost_per_token": 1e-6,
                "output_cost_per_token": 2e-6,
                "max_input_tokens": 8192,
            },
        },
        {"model_name": "known", "litellm_params": {"model": "openai/gpt-4o", "api_key": "x"}},
    ]
    result = memproxy("check", "--config", str(write_config(base_config(model_list=models))), env=child_env)
    assert result.returncode == 0, result.stderr
    warned = [line for line in result.stdout.splitlines() if "price map does not know" in line]
    assert len(warned) == 1
    assert warned[0].startswith("warning: model 'brand-new' (openai/gpt-99-ultra): LiteLLM ")
    for key in ("input_cost_per_token", "output_cost_per_token", "max_input_tokens", "max_output_tokens"):
        assert key in warned[0]


def test_check_reports_what_litellm_would_send_through_rust(
    child_env: dict[str, str], write_config: Callable[[dict[str, Any] | str], Path]
) -> None:
    """What serve would refuse, check says first: here LITELLM_RUST sends Anthropic Messages to LiteLLM's
    Rust HTTP client, around the cookie jar."""
    claude = {
        "model_name": "claude",
        "litellm_params": {"model": "anthropic/claude-sonnet-4-5", "api_key": "k"},
    }
    path = write_config(base_config(model_list=[claude]))
    result = memproxy("check", "--config", str(path), env={**child_env, "LITELLM_RUST": "1"})
    assert result.returncode == 1
    assert "error: model_list[0].litellm_params.model: LiteLLM " in result.stderr
    assert "anthropic/ requests through its Rust HTTP client" in result.stderr
    assert "messages (LITELLM_RUST is set in the environment: unset it)" in result.stderr
    assert memproxy("check", "--config", str(path), env=child_env).returncode == 0


def test_check_with_config_from_environment(
    child_env: dict[str, str], write_config: Callable[[dict[str, Any] | str], Path]
) -> None:
    path = write_config(base_config())
    result = memproxy("check", env={**child_env, "MEMPROXY_CONFIG": str(path)})
    assert result.returncode == 0
    assert str(path) in result.stdout


def test_check_a_config_with_no_model(
    child_env: dict[str, str], write_config: Callable[[dict[str, Any] | str], Path]
) -> None:
    """Forward mode needs no model: such a config checks clean."""
    path = write_config({"memproxy": {"mode": "forward", "upstream": "http://127.0.0.1:4000"}})
    result = memproxy("check", "--config", str(path), env=child_env)
    assert result.returncode == 0, result.stderr
    assert "models:" in result.stdout
    assert "Traceback" not in result.stderr


def test_check_invalid_config_lists_errors_without_traceback(
    child_env: dict[str, str], write_config: Callable[[dict[str, Any] | str], Path]
) -> None:
    doc = base_config(
        model_list=[
            {"model_name": "x", "litellm_params": {"model": "gpt4", "api_key": "sk-do-not-print-me-42"}}
        ],
        memproxy={"port": "eighty"},
    )
    result = memproxy("check", "--config", str(write_config(doc)), env=child_env)
    assert result.returncode == 1
    assert "2 errors" in result.stderr
    assert "model_list[0].litellm_params.model: expected 'provider/name', got 'gpt4'" in result.stderr
    assert "memproxy.port:" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "sk-do-not-print-me-42" not in result.stderr + result.stdout


def test_check_missing_file(child_env: dict[str, str], tmp_path: Path) -> None:
    result = memproxy("check", "--config", str(tmp_path / "absent.yaml"), env=child_env)
    assert result.returncode == 1
    assert "cannot read the file" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_reports_an_exposed_open_gateway(
    child_env: dict[str, str], write_config: Callable[[dict[str, Any] | str], Path]
) -> None:
    path = write_config(base_config(memproxy={"host": "0.0.0.0"}))
    result = memproxy("check", "--config", str(path), env=child_env)
    assert result.returncode == 1
    assert "refusing to listen on non-loopback 0.0.0.0 without general_settings.master_key" in result.stderr


@pytest.mark.parametrize("key", ["sk-1234", "short-key"])
def test_serve_refuses_public_host_with_weak_key(
    child_env: dict[str, str], write_config: Callable[[dict[str, Any] | str], Path], key: str
) -> None:
    path = write_config(base_config(general_settings={"master_key": key}))
    result = memproxy(
        "serve", "--config", str(path), "--host", "0.0.0.0", "--port", str(free_port()), env=child_env
    )
    assert result.returncode == 1
    assert "refusing_to_start" in result.stdout
    assert "non-loopback 0.0.0.0" in result.stdout
    assert key not in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr


def test_serve_invalid_config_exits_1(
    child_env: dict[str, str], write_config: Callable[[dict[str, Any] | str], Path]
) -> None:
    path = write_config("model_list: [{model_name: x}]\n")
    result = memproxy("--config", str(path), env=child_env)  # serve is the default command
    assert result.returncode == 1
    assert "model_list[0].litellm_params: required" in result.stderr


@pytest.fixture
def served(child_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], int]]:
    port = free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "memproxy"),
            "--config",
            str(SHIPPED_CONFIG),
            "--port",
            str(port),
            "--state-dir",
            str(tmp_path / "state"),
            "--log-format",
            "json",
        ],
        cwd=tmp_path,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        yield process, port
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


async def wait_ready(port: int, seconds: float = 30) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(int(seconds * 10)):
            try:
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the server did not become ready")


async def test_serve_answers_health_and_models_then_stops_on_sigterm(
    served: tuple[subprocess.Popen[str], int],
) -> None:
    process, port = served
    await wait_ready(port)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/health") as response:
            health = await response.json()
        async with session.get(f"http://127.0.0.1:{port}/v1/models") as response:
            models = await response.json()
    assert health["status"] == "ok"
    assert [m["id"] for m in models["data"]] == ["demo"]
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert '"event": "model_disabled"' in output
    assert '"event": "request"' in output
