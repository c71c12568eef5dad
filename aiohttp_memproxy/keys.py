"""Every typed key of the app and of a request: the only place keys are defined."""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.dialects import Dialect
from aiohttp_memproxy.usage.metrics import Metrics
from aiohttp_memproxy.usage.outcome import Outcome

if TYPE_CHECKING:  # these modules import keys: name them, don't import them
    from aiohttp_memproxy.outbound.session import CookieStore
    from aiohttp_memproxy.outbound.transport import AiohttpTransport
    from aiohttp_memproxy.runtime import Runtime, Runtimes
    from aiohttp_memproxy.server.admission import Admission
    from aiohttp_memproxy.usage.ledger import Ledger

# The settings the process started with: what needs a restart to change (host, port, pool, body limit...).
SETTINGS = web.AppKey("settings", Settings)
STARTED_AT = web.AppKey("started_at", float)  # time.monotonic() at create_app
METRICS = web.AppKey("metrics", Metrics)

# Set by create_app: who may use the gateway (Host, browser origins).
ADMISSION: web.AppKey[Admission] = web.AppKey("admission")

REQUEST_ID = web.RequestKey("request_id", str)
# Set by server.admission.admit for a browser origin in memproxy.allowed_origins: the origin CORS answers.
CORS_ORIGIN = web.RequestKey("cors_origin", str)
DIALECT: web.RequestKey[Dialect] = web.RequestKey("dialect")
REQUEST_STARTED = web.RequestKey("request_started", float)  # time.perf_counter() when the request came in
# The Runtime a request started on, kept to its end (set by the request_context middleware).
RUNTIME: web.RequestKey[Runtime] = web.RequestKey("runtime")

# Set by outbound.session.upstream_session (a cleanup context).
UPSTREAM = web.AppKey("upstream", aiohttp.ClientSession)
COOKIES: web.AppKey[CookieStore] = web.AppKey("cookies")
# Set by runtime.runtimes (a cleanup context): the reloadable part.
RUNTIMES: web.AppKey[Runtimes] = web.AppKey("runtimes")
TRANSPORT: web.AppKey[AiohttpTransport] = web.AppKey("transport")  # forward mode sends through it directly
# Set by usage.ledger.ledger (a cleanup context): the usage ledger, the process's (a reload keeps it).
LEDGER: web.AppKey[Ledger] = web.AppKey("ledger")
# Set by the request_context middleware: what the request came to, filled in as it goes (usage.outcome).
OUTCOME = web.RequestKey("outcome", Outcome)
