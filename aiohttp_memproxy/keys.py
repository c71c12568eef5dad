"""Every typed key of the app and of a request: the only place keys are defined."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from aiohttp_memproxy.errors import Dialect
from aiohttp_memproxy.metrics import Metrics
from aiohttp_memproxy.models import ModelTable
from aiohttp_memproxy.routing import MemoryRouter
from aiohttp_memproxy.settings import Settings

if TYPE_CHECKING:  # both modules import keys: name them, don't import them
    from aiohttp_memproxy.llm import LLMClients
    from aiohttp_memproxy.upstream import CookieStore

SETTINGS = web.AppKey("settings", Settings)
MODELS = web.AppKey("models", ModelTable)
ROUTER = web.AppKey("router", MemoryRouter)
STARTED_AT = web.AppKey("started_at", float)  # time.monotonic() at create_app
METRICS = web.AppKey("metrics", Metrics)

REQUEST_ID = web.RequestKey("request_id", str)
DIALECT: web.RequestKey[Dialect] = web.RequestKey("dialect")
REQUEST_STARTED = web.RequestKey("request_started", float)  # time.perf_counter() when the request came in

# Set by upstream.upstream_session (a cleanup context).
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
COOKIES: web.AppKey[CookieStore] = web.AppKey("cookies")
# Set by llm.llm_clients (a cleanup context).
LLM: web.AppKey[LLMClients] = web.AppKey("llm")
