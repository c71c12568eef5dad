"""What a request runs against (settings, models, memory routing, the LLM gateway), and swapping it on
reload.

A request takes the current Runtime when it arrives and keeps it to the end, streams included, so a
reload never changes a request in flight. A reload validates the new file fully first, with every check a
start makes; on any error the old Runtime keeps serving and every error is logged. The replaced Runtime's
gateway (its LiteLLM clients and Router) is closed once its last request is done. The ``memproxy:`` section
(the gateway settings) belongs to the process (listening address, state dir, body limit, upstream pool,
timeouts and retries, with their command-line overrides): it changes at a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace

import structlog
from aiohttp import web

from aiohttp_memproxy.config.exposure import exposure_problems
from aiohttp_memproxy.config.load import load_settings
from aiohttp_memproxy.config.settings import ConfigError, Settings
from aiohttp_memproxy.keys import METRICS, RUNTIMES, SETTINGS, TRANSPORT, UPSTREAM
from aiohttp_memproxy.llm.gateway import Gateway
from aiohttp_memproxy.outbound.transport import AiohttpTransport, RetryPolicy
from aiohttp_memproxy.resolve.memory import MemoryRouting
from aiohttp_memproxy.resolve.models import ModelTable
from aiohttp_memproxy.usage.metrics import Metrics

log = structlog.get_logger()


@dataclass
class Runtime:
    settings: Settings
    models: ModelTable
    memory: MemoryRouting
    gateway: Gateway
    in_flight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    @classmethod
    def build(cls, settings: Settings, transport: AiohttpTransport, metrics: Metrics) -> Runtime:
        models, memory = ModelTable(settings.models, settings.aliases), MemoryRouting(settings.routing)
        gateway = Gateway(settings, transport)  # last: what it opens (LiteLLM's Router) the Runtime closes
        if gateway.router is not None:
            gateway.router.on_cooldown = lambda model: metrics.cooldowns.labels(model.name).inc()
        return cls(settings=settings, models=models, memory=memory, gateway=gateway)


class Runtimes:
    """Holds the current Runtime; the middleware acquires and releases it around each request."""

    def __init__(self, first: Runtime, transport: AiohttpTransport) -> None:
        self.current = first
        self._transport = transport
        self._retiring: dict[asyncio.Task[None], Runtime] = {}

    def acquire(self) -> Runtime:
        runtime = self.current
        runtime.in_flight += 1
        runtime.idle.clear()
        return runtime

    @staticmethod
    def release(runtime: Runtime) -> None:
        runtime.in_flight -= 1
        if runtime.in_flight == 0:
            runtime.idle.set()

    def reload(self, app: web.Application) -> bool:
        """Re-read the config file and swap it in. A bad file is logged, never raised: the old one serves."""
        old = self.current
        try:
            settings = load_settings(old.settings.source, os.environ)
            # memproxy: belongs to the process (with its command-line overrides): it changes at a restart.
            # So do the proxies and CAs (the session was built with them): egress too.
            settings = replace(settings, gateway=app[SETTINGS].gateway, egress=app[SETTINGS].egress)
            # Judged as a start judges it: a reload must not open what a start refuses (no key, or a weak
            # one, on a non-loopback bind).
            refused, weak = exposure_problems(settings)
            if refused:
                raise ConfigError(str(settings.source), refused)
            runtime = Runtime.build(settings, self._transport, app[METRICS])  # LiteLLM judges them
        except ConfigError as exc:
            for error in exc.errors:
                log.error("config_reload_error", path=exc.source, error=error)
            app[METRICS].reloads.labels("error").inc()
            return False
        for warning in settings.warnings:
            log.warning(warning.event, **warning.fields)
        for message in weak:
            log.warning("weak_auth", detail=message)
        self.current = runtime
        app[METRICS].reloads.labels("ok").inc()
        log.info("config_reloaded", sha256=settings.digest, models=len(settings.models))
        task = asyncio.create_task(self._retire(old))
        self._retiring[task] = old
        task.add_done_callback(lambda done: self._retiring.pop(done, None))
        return True

    @staticmethod
    async def _retire(runtime: Runtime) -> None:
        if runtime.in_flight:
            await runtime.idle.wait()
        await runtime.gateway.aclose()

    async def aclose(self) -> None:
        for task, runtime in list(self._retiring.items()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if not runtime.gateway.closed:  # shut down before its last request was done: closed here
                await runtime.gateway.aclose()
        await self.current.gateway.aclose()


async def runtimes(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: needs UPSTREAM; the gateway's LiteLLM clients borrow it through one transport."""
    settings = app[SETTINGS]
    gateway = settings.gateway
    transport = AiohttpTransport(
        app[UPSTREAM],
        RetryPolicy(gateway.retry_attempts, gateway.retry_base_delay_s, gateway.retry_after_max_s),
        app[METRICS],
        settings.egress,
    )
    holder = Runtimes(Runtime.build(settings, transport, app[METRICS]), transport)
    app[RUNTIMES] = holder
    app[TRANSPORT] = transport
    try:
        yield
    finally:
        await holder.aclose()
