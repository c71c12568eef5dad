"""create_app: a table of contents. Keys, cleanup contexts in dependency order, middlewares, routes."""

from __future__ import annotations

import time

from aiohttp import web

from aiohttp_memproxy import statedir
from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.keys import ADMISSION, METRICS, SETTINGS, STARTED_AT
from aiohttp_memproxy.llm import patches
from aiohttp_memproxy.outbound.session import upstream_session
from aiohttp_memproxy.runtime import runtimes
from aiohttp_memproxy.server import (
    admission,
    chat,
    connections,
    forward,
    gemini,
    messages,
    middlewares,
    model_list,
    ops,
    responses,
)
from aiohttp_memproxy.usage import ledger
from aiohttp_memproxy.usage.metrics import Metrics

MIB = 1024 * 1024
# The APIs served through LiteLLM (mode sdk); forward mode proxies these paths raw instead.
MODEL_APIS = (model_list.routes, chat.routes, messages.routes, responses.routes, gemini.routes)


def create_app(settings: Settings) -> web.Application:
    app = web.Application(
        client_max_size=int(settings.gateway.max_body_mb * MIB),
        middlewares=[
            connections.mark_busy,
            middlewares.request_context,
            middlewares.render_errors,
            admission.admit,
            middlewares.authenticate,
        ],
    )
    app[SETTINGS] = settings
    app[ADMISSION] = admission.Admission(settings.gateway)
    app[STARTED_AT] = time.monotonic()
    app[METRICS] = Metrics()
    # Dependency order: the state directory checked, the session (and its jar), then the seam that gives
    # LiteLLM our transport, then the runtime whose LiteLLM clients borrow it, then the ledger.
    app.cleanup_ctx.extend([statedir.state_dir, upstream_session, patches.seam, runtimes, ledger.ledger])
    app.on_response_prepare.extend([middlewares.echo_request_id, admission.cors_headers])
    app.add_routes(ops.routes)
    if settings.gateway.mode == "forward":
        app.add_routes(forward.routes)
    else:
        for api in MODEL_APIS:
            app.add_routes(api)
    return app
