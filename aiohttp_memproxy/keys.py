"""Every typed key of the app and of a request: the only place keys are defined."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from aiohttp_memproxy.errors import Dialect
from aiohttp_memproxy.metrics import Metrics
from aiohttp_memproxy.settings import Settings
from aiohttp_memproxy.usage import Record

if TYPE_CHECKING:  # these modules import keys: name them, don't import them
    from aiohttp_memproxy.admission import Admission
    from aiohttp_memproxy.ledger import Ledger
    from aiohttp_memproxy.runtime import Runtime, Runtimes
    from aiohttp_memproxy.transport import AiohttpTransport
    from aiohttp_memproxy.upstream import CookieStore

# The settings the process started with: what needs a restart to change (host, port, pool, body limit...).
SETTINGS = web.AppKey("settings", Settings)
STARTED_AT = web.AppKey("started_at", float)  # time.monotonic() at create_app
METRICS = web.AppKey("metrics", Metrics)

# Set by create_app: who may use the gateway (Host, browser origins).
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")

REQUEST_ID = web.RequestKey("request_id", str)
# Set by admission.admit for a browser origin listed in memproxy.allowed_origins: the origin CORS answers.
CORS_ORIGIN = web.RequestKey("cors_origin", str)
DIALECT: web.RequestKey[Dialect] = web.RequestKey("dialect")
REQUEST_STARTED = web.RequestKey("request_started", float)
# The Runtime a request started on, kept to its end (set by the request_context middleware).
RUNTIME: web.RequestKey[Runtime] = web.RequestKey("runtime")  # time.perf_counter() when the request came in

# Set by upstream.upstream_session (a cleanup context).
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
COOKIES: web.AppKey[CookieStore] = web.AppKey("cookies")
# Set by runtime.runtimes (a cleanup context): the reloadable part.
RUNTIMES: web.AppKey[Runtimes] = web.AppKey("runtimes")
TRANSPORT: web.AppKey[AiohttpTransport] = web.AppKey("transport")  # forward mode sends through it directly
# Set by ledger.ledger (a cleanup context): the usage ledger, the process's (a reload keeps it).
LEDGER: web.AppKey[Ledger] = web.AppKey("ledger")
# Set by a model route once it knows the model: what the ledger row of the request needs (usage.Record).
USAGE: web.RequestKey[Record] = web.RequestKey("usage")
