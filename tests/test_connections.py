"""Inbound connections are bounded: the real CLI as a child process under a small open-file limit keeps
answering /health while more idle connections are held open than it may open files, and closes a half-sent
request in time."""

from __future__ import annotations

import asyncio
import json
import resource
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from aiohttp_memproxy.config.schema import GatewaySettings
from aiohttp_memproxy.server.connections import MIN_CAP, RESERVED_FDS, ConnectionGuard, effective_cap
from aiohttp_memproxy.usage.metrics import Metrics
from tests.bench import serve_command
from tests.conftest import REPO, base_config
from tests.test_cli import free_port, wait_ready

pytestmark = pytest.mark.subprocess

SMALL_FILE_LIMIT = 1024  # systemd's default soft limit for a service without LimitNOFILE=
# More than the limit allows at once: without a cap, accept() runs out of descriptors and /health waits.
HELD = 1100


def limited(limit: int) -> None:
    """In the child, before exec: soft and hard limit both, as `ulimit -n` sets them."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))


def start(tmp_path: Path, env: dict[str, str], file_limit: int | None, **memproxy: object) -> tuple[
    subprocess.Popen[str], int
]:  # fmt: skip
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base_config(memproxy=memproxy)))
    port = free_port()
    process = subprocess.Popen(  # preexec_fn: the limit must be set before Python starts
        [*serve_command(config, port, tmp_path / "state"), "--log-format", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=(lambda: limited(file_limit)) if file_limit else None,
    )
    return process, port


@pytest.fixture
def held_sockets() -> Iterator[list[socket.socket]]:
    held: list[socket.socket] = []
    try:
        yield held
    finally:
        for sock in held:
            sock.close()


def stop(process: subprocess.Popen[str]) -> list[dict[str, object]]:
    process.terminate()
    try:
        output, _ = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


async def test_health_answers_while_more_idle_connections_are_held_than_files_allowed(
    tmp_path: Path, child_env: dict[str, str], held_sockets: list[socket.socket]
) -> None:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < HELD + 200:
        pytest.skip(f"this test process may open {soft} files, it needs {HELD + 200}")
    process, port = start(tmp_path, child_env, SMALL_FILE_LIMIT)
    try:
        await wait_ready(port)
        for index in range(HELD):
            sock = socket.create_connection(("127.0.0.1", port))
            if index % 2:  # half of them a request cut short in its request line
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-")
            held_sockets.append(sock)
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
            for _ in range(5):
                async with session.get(f"http://127.0.0.1:{port}/health") as response:
                    assert response.status == 200
                    assert (await response.json())["status"] == "ok"
            async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                metrics = await response.text()
        assert 'memproxy_connections_shed_total{how="idle"}' in metrics
    finally:
        lines = stop(process)
    serving = next(line for line in lines if line["event"] == "serving")
    cap = serving["max_connections"]
    assert cap == effective_cap(1000, GatewaySettings().pool_limit, SMALL_FILE_LIMIT) < HELD
    assert serving["file_limit"] == str(SMALL_FILE_LIMIT)
    assert [line["event"] for line in lines].count("connection_limit_reached") == 1  # one line, not a flood
    assert not [line for line in lines if line.get("level") == "error"]


async def test_a_half_sent_request_and_a_silent_connection_are_closed(
    tmp_path: Path, child_env: dict[str, str]
) -> None:
    process, port = start(tmp_path, child_env, None, idle_timeout_s=1)
    try:
        await wait_ready(port)
        half_sent = socket.create_connection(("127.0.0.1", port))
        half_sent.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        silent = socket.create_connection(("127.0.0.1", port))
        began = time.monotonic()
        for sock in (half_sent, silent):
            sock.settimeout(10)
            assert await asyncio.to_thread(sock.recv, 1024) == b""  # closed by the gateway
            sock.close()
        assert time.monotonic() - began < 5
    finally:
        stop(process)


def test_the_default_closes_a_half_sent_request_within_a_minute() -> None:
    assert GatewaySettings().idle_timeout_s <= 60


@pytest.mark.parametrize(
    ("configured", "pool", "limit", "expected"),
    [
        (1000, 100, 8192, 1000),
        (1000, 100, 1024, 1024 - 100 - RESERVED_FDS),
        (1000, 100, float("inf"), 1000),
        (1000, 100, 100, MIN_CAP),
    ],
)
def test_the_cap_stays_below_the_file_limit(configured: int, pool: int, limit: float, expected: int) -> None:
    assert effective_cap(configured, pool, limit) == expected


@pytest.mark.parametrize("unit", ["aiohttp-memproxy.service", "aiohttp-memproxy-user.service"])
def test_the_units_raise_the_open_file_limit(unit: str) -> None:
    lines = (REPO / "aiohttp_memproxy" / "install" / "files" / unit).read_text().splitlines()
    limits = [line.partition("=")[2] for line in lines if line.startswith("LimitNOFILE=")]
    assert len(limits) == 1
    assert int(limits[0].partition(":")[0]) >= 8192


class Transport(asyncio.WriteTransport):
    """The little of a socket transport the guard uses: what was written, whether it was closed."""

    def __init__(self, buffered: int = 0) -> None:
        super().__init__()
        self.buffered = buffered
        self.written = b""
        self.closed = False

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Inner(asyncio.Protocol):
    """Stands for aiohttp's protocol: records what reached it."""

    def __init__(self) -> None:
        self.made = False
        self.received = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.made = True

    def data_received(self, data: bytes) -> None:
        self.received += data


def test_at_the_cap_the_longest_idle_connection_is_shed_and_never_a_busy_one() -> None:
    guard = ConnectionGuard(3, Metrics())
    make = guard.protocol_factory(Inner)
    first, second, third = make(), make(), make()
    transports = [Transport(), Transport(), Transport()]
    for connection, transport in zip((first, second, third), transports, strict=True):
        connection.connection_made(transport)
    guard.busy(first)  # runs a request: never shed
    second.data_received(b"POST /v1/chat/completions HTTP/1.1\r\n")  # bytes just came: shed last
    fourth = make()
    fourth.connection_made(Transport())
    assert transports[2].closed  # third: idle the longest
    assert not transports[0].closed
    assert not transports[1].closed
    assert isinstance(fourth.inner, Inner)
    assert fourth.inner.made
    assert second.inner.received.startswith(b"POST")

    guard.busy(second)
    guard.busy(fourth)
    refused = make()
    refused_transport = Transport()
    refused.connection_made(refused_transport)  # every open one runs a request
    assert refused_transport.written.startswith(b"HTTP/1.1 503")
    assert refused_transport.closed
    assert isinstance(refused.inner, Inner)
    assert not refused.inner.made


def test_an_answer_still_being_written_is_not_cut_to_make_room() -> None:
    guard = ConnectionGuard(2, Metrics())
    make = guard.protocol_factory(Inner)
    writing, quiet = make(), make()
    writing_transport, quiet_transport = Transport(buffered=65536), Transport()
    writing.connection_made(writing_transport)
    quiet.connection_made(quiet_transport)
    make().connection_made(Transport())
    assert not writing_transport.closed
    assert quiet_transport.closed
