"""Running as a service: listen, tell systemd (the NOTIFY_SOCKET datagram protocol), drain on SIGTERM/SIGINT.

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
from collections.abc import Mapping

import structlog
from aiohttp import web

from aiohttp_memproxy.app import create_app
from aiohttp_memproxy.settings import Settings

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


async def serve(settings: Settings) -> None:
    proxy = settings.proxy
    runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=proxy.drain_timeout_s)
    await runner.setup()
    try:
        site = web.TCPSite(runner, proxy.host, proxy.port)
        await site.start()
        log.info("serving", host=proxy.host, port=proxy.port)
        sd_notify("READY=1", f"STATUS=serving on {proxy.host}:{proxy.port}", f"MAINPID={os.getpid()}")
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        sd_notify("STOPPING=1", "STATUS=draining")
        log.info("stopping", drain_timeout_s=proxy.drain_timeout_s)
    finally:
        await runner.cleanup()
