"""create_app: a table of contents. Keys, cleanup contexts in dependency order, middlewares, routes."""

from __future__ import annotations

import time

from aiohttp import web

from aiohttp_memproxy import admission, connections, forward, ledger, litellm_seam, middlewares, statedir
from aiohttp_memproxy.keys import ADMISSION, METRICS, SETTINGS, STARTED_AT
from aiohttp_memproxy.metrics import Metrics
from aiohttp_memproxy.runtime import runtimes
from aiohttp_memproxy.settings import Settings
from aiohttp_memproxy.upstream import upstream_session
from aiohttp_memproxy.views import routes, sdk_routes

MIB = 1024 * 1024


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=int(settings.proxy.max_body_mb * MIB),
        middlewares=[
            connections.mark_busy,
            middlewares.request_context,
            middlewares.render_errors,
            admission.admit,
            middlewares.authenticate,
        ],
    )
    app[SETTINGS] = settings
    app[ADMISSION] = admission.Admission(settings.proxy)
    app[STARTED_AT] = time.monotonic()
    app[METRICS] = Metrics()
    # Dependency order: the state directory checked, the session (and its jar), then the seam that gives
    # LiteLLM our transport, then the runtime whose LiteLLM clients borrow it, then the ledger.
    app.cleanup_ctx.extend([statedir.state_dir, upstream_session, litellm_seam.seam, runtimes, ledger.ledger])
    app.on_response_prepare.extend([middlewares.echo_request_id, admission.cors_headers])
    app.add_routes(routes)
    app.add_routes(forward.routes if settings.proxy.mode == "forward" else sdk_routes)
    return app
