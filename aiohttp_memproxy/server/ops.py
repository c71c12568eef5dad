"""The routes every mode serves: health (LiteLLM-proxy compatible probes too), metrics, memory-routing info,
the status page and its data, and Claude Code's start-up ping and telemetry."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import time
from datetime import UTC, datetime
from importlib import metadata, resources
from typing import Any

import prometheus_client
from aiohttp import web

from aiohttp_memproxy import __version__
from aiohttp_memproxy.keys import COOKIES, LEDGER, METRICS, RUNTIME, STARTED_AT
from aiohttp_memproxy.usage import ledger

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    return web.json_response(
        {
            **_state(request),
            # For leak checks (make load): these must come back down when the traffic stops.
            "process": {"asyncio_tasks": len(asyncio.all_tasks()), "open_fds": _open_fds()},
        }
    )


def _state(request: web.Request) -> dict[str, Any]:
    """What /health and /ui show of the gateway: models, cooldowns, config, cookies (names, never values)."""
    settings, models = request[RUNTIME].settings, request[RUNTIME].models
    return {
        "status": "ok",
        "version": __version__,
        "uptime_s": round(time.monotonic() - request.app[STARTED_AT], 3),
        "models": {
            "available": [name for name, _ in models.listing()],
            "disabled": [{"name": m.name, "missing_env": list(m.missing_env)} for m in models.disabled],
        },
        "config": {
            "path": str(settings.source),
            "sha256": settings.digest,
            "loaded_at": iso(settings.loaded_at),
        },
        # Deployments LiteLLM's Router skips for now (allowed_fails / cooldown_time), and until when.
        "cooldowns": [
            {**row, "until": iso(row["until"])} for row in request[RUNTIME].gateway.cooldown_rows()
        ],
        "cookies": {"count": len(request.app[COOKIES].jar), "names": request.app[COOKIES].names()},
        # Which LiteLLM and price map answer: a model that arrived since is unknown to both.
        "litellm": request[RUNTIME].gateway.litellm_info(),
    }


UI_DAYS = 14  # the charts' span
UI_LATEST = 100  # the table's rows
UI_PAGE = (resources.files("aiohttp_memproxy.server") / "ui.html").read_bytes()


@routes.get("/ui")
async def ui(request: web.Request) -> web.Response:
    """The status page: one self-contained file (no CDN, no build step). It holds no data: it asks
    /ui/data, with the key its form keeps in the tab's sessionStorage where a master key is set."""
    return web.Response(
        body=UI_PAGE,
        content_type="text/html",
        headers=UI_HEADERS,
    )


LEDGER_OFF = "the usage ledger is off (memproxy.usage_ledger: false)"


def _inline_hashes(page: bytes, tag: bytes) -> str:
    """CSP sources for the page's inline ``<tag>`` elements: the sha256 of each one's text."""
    found = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", page, re.DOTALL)
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(text).digest()).decode()}'" for text in found)


# The page's own script and style only (by hash: an injected one would not run), requests to this origin
# only, never framed, no form posted elsewhere.
UI_CSP = (
    f"default-src 'none'; script-src {_inline_hashes(UI_PAGE, b'script')}; "
    f"style-src {_inline_hashes(UI_PAGE, b'style')}; connect-src 'self'; frame-ancestors 'none'; "
    "base-uri 'none'; form-action 'none'"
)
UI_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": UI_CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
# The ledger's latest requests: kept by no cache.
UI_DATA_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


@routes.get("/ui/data")
async def ui_data(request: web.Request) -> web.Response:
    """The status page's data (same auth as the API): the gateway's state, and usage from the ledger: per
    day by client and by model over UI_DAYS, and the last UI_LATEST requests."""
    book = request.app.get(LEDGER)
    since = time.time() - UI_DAYS * 86400
    found: dict[str, object]
    if book is None:
        found = ledger.no_overview(LEDGER_OFF)
    else:
        await book.flush()  # what was just answered shows
        found = await asyncio.to_thread(ledger.overview, book.path, since, UI_LATEST)
    return web.json_response(
        {
            "state": _state(request),
            "usage": {
                "days": UI_DAYS,
                "by_client": found["by_client"],
                "by_model": found["by_model"],
                "error": found["error"],
            },
            "latest": found["latest"],
        },
        headers=UI_DATA_HEADERS,
    )


def _open_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return None


@routes.get("/health/liveliness")
@routes.get("/health/liveness")
async def liveliness(request: web.Request) -> web.Response:
    return web.json_response("I'm alive!")  # the LiteLLM proxy's exact answer


@routes.get("/health/readiness")
async def readiness(request: web.Request) -> web.Response:
    # LiteLLM-compatible shape; we have no database or cache to report.
    return web.json_response(
        {
            "status": "healthy",
            "db": "Not connected",
            "cache": None,
            "litellm_version": metadata.version("litellm"),
            "memproxy_version": __version__,
        }
    )


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.Response:
    book = request.app.get(LEDGER)
    if book is not None:
        await book.settle()  # the usage counters of every request so far, not of the last batch's
    body = prometheus_client.generate_latest(request.app[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST})


@routes.get("/memory-routing/info")
async def memory_routing_info(request: web.Request) -> web.Response:
    return web.json_response(request[RUNTIME].memory.routing_info(request.headers))


@routes.get("/api/hello")  # HEAD too (aiohttp adds it to a GET)
async def hello(request: web.Request) -> web.Response:
    """Claude Code's start-up ping (``HEAD /api/hello``): an empty 200, no key needed."""
    return web.Response()


@routes.post("/api/event_logging/batch")
async def event_logging(request: web.Request) -> web.Response:
    """Claude Code's telemetry: accepted and dropped, so it does not 404."""
    await request.read()
    return web.json_response({"status": "ok"})


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat().replace("+00:00", "Z")
