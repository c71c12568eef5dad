"""Running as a service: listen (connections bounded: connections.py), tell systemd (NOTIFY_SOCKET), reload
on SIGHUP, drain on SIGTERM/SIGINT.

``sd_notify`` follows sd_notify(3): one datagram of newline-separated ``KEY=VALUE`` to the AF_UNIX socket
named by ``$NOTIFY_SOCKET`` (``@`` means the abstract namespace); a no-op without it. Shutdown is
aiohttp's own: ``AppRunner.cleanup`` stops accepting, lets in-flight requests and streams finish for up to
``memproxy.drain_timeout_s``, then runs the cleanup contexts (the cookie jar is saved there).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Mapping

import structlog
from aiohttp import web

from aiohttp_memproxy.app import create_app
from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.keys import METRICS, RUNTIMES
from aiohttp_memproxy.server.connections import ConnectionGuard, GuardedSite, effective_cap, raise_file_limit

log = structlog.get_logger()


def sd_notify(*states: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``states`` to systemd; False when not run by systemd (no NOTIFY_SOCKET)."""
    address = environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        sock.connect(address)
        sock.sendall("\n".join(states).encode())
    return True


def reload(app: web.Application) -> None:
    """SIGHUP: RELOADING=1, re-read the config (kept as it was if invalid), READY=1."""
    sd_notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")
    app[RUNTIMES].reload(app)
    sd_notify("READY=1", "STATUS=serving")


async def serve(settings: Settings) -> None:
    gateway = settings.gateway
    app = create_app(settings)
    file_limit = raise_file_limit()
    guard = ConnectionGuard(
        effective_cap(gateway.max_connections, gateway.pool_limit, file_limit), app[METRICS]
    )
    # keepalive_timeout: a connection that runs no request (idle, or still sending its headers) is closed.
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=gateway.drain_timeout_s,
        keepalive_timeout=gateway.idle_timeout_s,
    )
    try:
        await runner.setup()  # a refusal here (SeamError, ConfigError) still closes what started
        site = GuardedSite(runner, gateway.host, gateway.port, guard)
        await site.start()
        log.info(
            "serving",
            host=gateway.host,
            port=gateway.port,
            max_connections=guard.cap,
            file_limit=str(file_limit),
            idle_timeout_s=gateway.idle_timeout_s,
        )
        sd_notify("READY=1", f"STATUS=serving on {gateway.host}:{gateway.port}", f"MAINPID={os.getpid()}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload, app)
        await stop.wait()
        sd_notify("STOPPING=1", "STATUS=draining")
        log.info("stopping", drain_timeout_s=gateway.drain_timeout_s)
    finally:
        await runner.cleanup()
