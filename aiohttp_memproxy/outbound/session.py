"""The one upstream ClientSession and its cookie jar: created, loaded, saved and closed here.

Cloudflare in front of an upstream sets ``__cf_bm`` / ``cf_clearance``; a client that drops them gets 503s.
The jar accepts cookies from IP-address hosts too (``unsafe=True``: local and test upstreams), persists in
``<state_dir>/cookies.json`` with aiohttp's own JSON save/load, and is saved at shutdown, soon after a
response changes it, and periodically. A corrupt file is moved aside and startup continues.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import aiohttp
import structlog
from aiohttp import web
from multidict import CIMultiDict

from aiohttp_memproxy import statedir
from aiohttp_memproxy.keys import COOKIES, METRICS, SETTINGS, UPSTREAM
from aiohttp_memproxy.outbound.call import CALL

log = structlog.get_logger()

COOKIE_FILE = "cookies.json"
SAVE_DEBOUNCE_S = 1.0


class CookieStore:
    """Owns the jar's file: atomic writes (temp file + rename), mode 0600, a 0700 directory."""

    def __init__(self, jar: aiohttp.CookieJar, state_dir: Path) -> None:
        self.jar = jar
        self.path = state_dir / COOKIE_FILE
        self.changed = asyncio.Event()

    def names(self) -> list[str]:
        return sorted({morsel.key for morsel in self.jar})

    def load(self) -> None:
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not statedir.trust(self.path) or not self.path.exists():
            return
        try:
            self.jar.load(self.path)
        except Exception as exc:  # any unreadable file: move it aside, start empty
            aside = self.path.with_name(f"{COOKIE_FILE}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(self.path, aside)
            log.warning("cookie_jar_corrupt", moved_to=str(aside), error=type(exc).__name__)
            return
        log.info("cookie_jar_loaded", count=len(self.jar), names=self.names())

    def save(self) -> None:
        self.changed.clear()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # A unique name: a periodic save still running in its thread may overlap the shutdown save.
        handle, name = tempfile.mkstemp(prefix=f".{COOKIE_FILE}.", suffix=".tmp", dir=self.path.parent)
        os.close(handle)  # mkstemp made it 0600; aiohttp rewrites it in place
        temporary = Path(name)
        try:
            self.jar.save(temporary)
            os.replace(temporary, self.path)
        finally:
            temporary.unlink(missing_ok=True)

    async def keep_saved(self, interval_s: float) -> None:
        """Save soon after a change (debounced), and every ``interval_s`` anyway."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.changed.wait(), timeout=interval_s)
                await asyncio.sleep(SAVE_DEBOUNCE_S)
            await asyncio.to_thread(self.save)


@dataclass(frozen=True)
class Exchange:
    """One upstream HTTP exchange, for whoever asked to see them (``memproxy check --probe``)."""

    status: int
    sent: CIMultiDict[str]  # the request headers as they went out, Cookie included: never print them whole
    cookies_set: tuple[str, ...]  # names from the response's Set-Cookie


def _watched() -> list[Exchange] | None:
    """Where the gateway call in progress collects its exchanges, if anyone asked to see them."""
    call = CALL.get()
    return call.exchanges if call is not None else None


def _trace(store: CookieStore) -> aiohttp.TraceConfig:
    """Marks the jar changed when a response sets a cookie; records the exchanges of a call that asks to see
    them (``Call.exchanges``)."""

    async def on_request_headers_sent(
        session: aiohttp.ClientSession,
        context: SimpleNamespace,
        params: aiohttp.TraceRequestHeadersSentParams,
    ) -> None:
        if _watched() is not None:
            context.sent = CIMultiDict(params.headers)

    async def on_request_end(
        session: aiohttp.ClientSession, context: SimpleNamespace, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if "Set-Cookie" in params.response.headers:
            store.changed.set()
        seen = _watched()
        if seen is not None:
            seen.append(
                Exchange(
                    status=params.response.status,
                    sent=getattr(context, "sent", CIMultiDict()),
                    cookies_set=tuple(params.response.cookies),
                )
            )

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_request_headers_sent)
    trace.on_request_end.append(on_request_end)
    return trace


async def upstream_session(app: web.Application) -> AsyncIterator[None]:
    gateway = app[SETTINGS].gateway
    assert gateway.state_dir is not None  # load_settings always resolves it
    jar = aiohttp.CookieJar(unsafe=True)
    store = CookieStore(jar, gateway.state_dir)
    store.load()
    egress = app[SETTINGS].egress
    if not egress.verify:
        log.warning(
            "tls_verification_disabled", detail="upstream certificates are NOT checked (ssl_verify: false)"
        )
    session = aiohttp.ClientSession(
        # The system store plus the configured CAs; proxies are chosen per request by the transport (egress).
        connector=aiohttp.TCPConnector(limit=gateway.pool_limit, ssl=egress.ssl_context()),
        cookie_jar=jar,
        # No total timeout: streams run as long as they produce; a silent upstream hits sock_read.
        timeout=aiohttp.ClientTimeout(
            total=None, connect=gateway.connect_timeout_s, sock_read=gateway.read_timeout_s
        ),
        auto_decompress=False,  # httpx (LiteLLM's side of the transport) decodes content-encoding itself
        trace_configs=[_trace(store)],
    )
    app[UPSTREAM] = session
    app[COOKIES] = store
    app[METRICS].count_cookies(lambda: len(jar))
    saver = asyncio.create_task(store.keep_saved(gateway.cookie_save_interval_s))
    try:
        yield
    finally:
        saver.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await saver
        await session.close()
        store.save()
        log.info("cookie_jar_saved", count=len(jar))
