"""Every typed key of the app and of a request: the only place keys are defined."""

from __future__ import annotations

from aiohttp import web

from aiohttp_memproxy.errors import Dialect
from aiohttp_memproxy.models import ModelTable
from aiohttp_memproxy.routing import MemoryRouter
from aiohttp_memproxy.settings import Settings

SETTINGS = web.AppKey("settings", Settings)
MODELS = web.AppKey("models", ModelTable)
ROUTER = web.AppKey("router", MemoryRouter)
STARTED_AT = web.AppKey("started_at", float)  # time.monotonic() at create_app

REQUEST_ID = web.RequestKey("request_id", str)
DIALECT: web.RequestKey[Dialect] = web.RequestKey("dialect")
