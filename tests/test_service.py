"""The real CLI as a child process, as systemd runs it: readiness on NOTIFY_SOCKET, a graceful drain."""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from aiohttp_memproxy.service import sd_notify
from tests import netns_reload
from tests.bench import serve_command
from tests.conftest import MESSAGES, REPO, base_config
from tests.fake_upstream import CLEARANCE, FakeUpstream
from tests.test_cli import free_port, wait_ready

pytestmark = pytest.mark.subprocess


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(30)
    try:
        yield sock, path
    finally:
        sock.close()


def start(config: Path, port: int, state: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*serve_command(config, port, state), "--log-format", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_sd_notify_is_a_no_op_without_systemd() -> None:
    assert sd_notify("READY=1", environ={}) is False


def test_sd_notify_abstract_namespace(tmp_path: Path) -> None:
    name = f"memproxy-test-{tmp_path.name}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert sd_notify("READY=1", "STATUS=x", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"READY=1\nSTATUS=x"


async def test_ready_and_stopping_reach_notify_socket(
    notify_socket: tuple[socket.socket, str],
    child_env: dict[str, str],
    write_config: Callable[[dict[str, Any] | str], Path],
    tmp_path: Path,
) -> None:
    sock, path = notify_socket
    port = free_port()
    process = start(
        write_config(base_config()), port, tmp_path / "state", {**child_env, "NOTIFY_SOCKET": path}
    )
    try:
        ready = (await asyncio.to_thread(sock.recv, 4096)).decode().split("\n")
        assert "READY=1" in ready
        assert f"MAINPID={process.pid}" in ready
        # READY means listening: the very next request is served.
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{port}/health") as response,
        ):
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        stopping = (await asyncio.to_thread(sock.recv, 4096)).decode().split("\n")
        assert "STOPPING=1" in stopping
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate()


async def test_sigterm_drains_a_slow_stream_and_saves_the_jar(
    aiohttp_server: Any,
    child_env: dict[str, str],
    write_config: Callable[[dict[str, Any] | str], Path],
    tmp_path: Path,
) -> None:
    fake = FakeUpstream(gate=True, chunk_delay_s=0.4)
    server = await aiohttp_server(fake.app())
    url = str(server.make_url("")).rstrip("/")
    config = write_config(
        base_config(
            model_list=[
                {
                    "model_name": "slow",
                    "litellm_params": {"model": "openai/slow", "api_base": f"{url}/v1", "api_key": "k"},
                }
            ],
            memproxy={"drain_timeout_s": 20, "retry_base_delay_s": 0},
        )
    )
    port, state = free_port(), tmp_path / "state"
    process = start(config, port, state, child_env)
    try:
        await wait_ready(port)
        body = {"model": "slow", "messages": MESSAGES, "stream": True}
        chat = f"http://127.0.0.1:{port}/v1/chat/completions"
        async with aiohttp.ClientSession() as session, session.post(chat, json=body) as response:
            assert response.status == 200
            first = await response.content.readline()
            assert first.startswith(b"data: ")
            process.send_signal(signal.SIGTERM)  # mid-stream
            rest = (await response.content.read()).decode()
        frames = [line for line in rest.split("\n\n") if line.startswith("data: ")]
        assert frames[-1] == "data: [DONE]"
        assert await asyncio.to_thread(process.wait, 30) == 0
        saved = json.loads((state / "cookies.json").read_text())
        assert any(CLEARANCE in cookies for cookies in saved.values())
        assert fake.challenges == 1
    finally:
        if process.poll() is None:
            process.kill()
        output, _ = process.communicate()
    assert '"event": "stopping"' in output


async def test_sighup_reloads_a_valid_config_and_keeps_the_old_on_error(
    notify_socket: tuple[socket.socket, str],
    child_env: dict[str, str],
    tmp_path: Path,
) -> None:
    sock, path = notify_socket
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base_config()))
    port = free_port()
    process = start(config, port, tmp_path / "state", {**child_env, "NOTIFY_SOCKET": path})
    base = f"http://127.0.0.1:{port}"
    try:
        assert "READY=1" in (await asyncio.to_thread(sock.recv, 4096)).decode()
        async with aiohttp.ClientSession() as session:

            async def model_ids() -> list[str]:
                async with session.get(f"{base}/v1/models") as response:
                    return [m["id"] for m in (await response.json())["data"]]

            async def digest() -> str:
                async with session.get(f"{base}/health") as response:
                    return str((await response.json())["config"]["sha256"])

            assert await model_ids() == ["demo"]
            first_digest = await digest()
            added = base_config()
            added["model_list"].append(
                {"model_name": "second", "litellm_params": {"model": "openai/x", "mock_response": "2"}}
            )
            config.write_text(yaml.safe_dump(added))
            process.send_signal(signal.SIGHUP)
            assert (await asyncio.to_thread(sock.recv, 4096)).decode().startswith("RELOADING=1")
            assert "READY=1" in (await asyncio.to_thread(sock.recv, 4096)).decode()
            assert await model_ids() == ["demo", "second"]
            assert await digest() != first_digest

            config.write_text("model_list: [{model_name: broken}]\n")
            process.send_signal(signal.SIGHUP)
            assert (await asyncio.to_thread(sock.recv, 4096)).decode().startswith("RELOADING=1")
            assert "READY=1" in (await asyncio.to_thread(sock.recv, 4096)).decode()
            assert await model_ids() == ["demo", "second"]  # the old config keeps serving
            async with session.get(f"{base}/metrics") as response:
                metrics = await response.text()
            assert 'memproxy_config_reloads_total{outcome="ok"} 1.0' in metrics
            assert 'memproxy_config_reloads_total{outcome="error"} 1.0' in metrics
        process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        if process.poll() is None:
            process.kill()
        output, _ = process.communicate()
    errors = [json.loads(line) for line in output.splitlines() if '"config_reload_error"' in line]
    assert [e["error"] for e in errors] == ["model_list[0].litellm_params: required"]


def _namespaces() -> str | None:
    """Why a network namespace cannot be had here, or None."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare or ip (util-linux, iproute2) not installed"
    probe = subprocess.run(
        ["unshare", "-rn", "ip", "link", "set", "lo", "up"], capture_output=True, text=True
    )
    return f"no unprivileged network namespace: {probe.stderr.strip()[:200]}" if probe.returncode else None


async def test_a_reload_on_a_non_loopback_bind_is_judged_as_a_start(child_env: dict[str, str]) -> None:
    """On 0.0.0.0 with a strong key, SIGHUP with the key removed, published, short or an unset variable is
    refused as a start would be: the old key keeps guarding, each error is logged; a strong new key is taken.
    Run in a network namespace of its own, so the gateway on 0.0.0.0 is reachable from nowhere else."""
    reason = _namespaces()
    if reason is not None:
        pytest.skip(reason)
    done = await asyncio.to_thread(
        subprocess.run,
        ["unshare", "-rn", sys.executable, "-m", "tests.netns_reload"],
        env={**child_env, "PYTHONPATH": str(REPO)},
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    steps = [json.loads(line) for line in done.stdout.splitlines()]
    seen = {step["step"]: step for step in steps if step["step"] != "log"}
    assert seen["start"] == {"step": "start", "without_key": 401, "with_key": 200}
    for name in netns_reload.REFUSED:
        assert seen[name] == {
            "step": name,
            "without_key": 401,
            "published_key": 401,
            "with_key": 200,
            "next_key": 401,
        }, name
    assert seen["next-strong-key"]["with_key"] == 401
    assert seen["next-strong-key"]["next_key"] == 200
    log = [step["line"] for step in steps if step["step"] == "log"]
    refused = [line["error"] for line in log if line.get("event") == "config_reload_error"]
    assert len(refused) == len(netns_reload.REFUSED)
    assert all("non-loopback 0.0.0.0" in error for error in refused), refused
    assert sum(line.get("event") == "config_reloaded" for line in log) == 1
    assert netns_reload.STRONG not in done.stdout  # not in any log line
