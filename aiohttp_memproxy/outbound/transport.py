"""An httpx transport over our aiohttp session, so LiteLLM's HTTP keeps our cookie jar.

The session is borrowed, never closed. Bodies stream both ways. aiohttp exceptions become httpx ones through
one table; a body cut short raises instead of ending quietly. Throttling answers (429, 503, Cloudflare's
challenge pages) are retried here, before any byte is handed on, so every provider path gets the same policy.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

import aiohttp
import httpx
import structlog
from yarl import URL

from aiohttp_memproxy.dialects.openai_chat import ChatUsageTap
from aiohttp_memproxy.outbound.call import CALL
from aiohttp_memproxy.outbound.egress import Egress
from aiohttp_memproxy.usage.metrics import Metrics

log = structlog.get_logger()

RETRY_STATUSES = frozenset({429, 503})
# The statuses HTTP clients follow (httpx's and the SDKs' among them): refused, never followed.
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# A host as a client may be told it: a name or an address, nothing else of the upstream's Location.
SHOWABLE_HOST = re.compile(r"[A-Za-z0-9.:\[\]-]{1,255}")
# Added to every response handed to httpx: LiteLLM re-raises some upstream statuses as 500 but keeps the
# response headers, so llm.errors can still tell the client the upstream's own status.
UPSTREAM_STATUS_HEADER = "x-memproxy-upstream-status"

# Most specific first: the first row whose class matches wins.
EXCEPTION_TABLE: tuple[tuple[type[BaseException], type[httpx.TransportError]], ...] = (
    (aiohttp.ConnectionTimeoutError, httpx.ConnectTimeout),
    (aiohttp.SocketTimeoutError, httpx.ReadTimeout),
    (aiohttp.ServerTimeoutError, httpx.ReadTimeout),
    (asyncio.TimeoutError, httpx.ReadTimeout),
    (aiohttp.ClientConnectorError, httpx.ConnectError),
    (aiohttp.ServerDisconnectedError, httpx.RemoteProtocolError),
    (aiohttp.ClientPayloadError, httpx.RemoteProtocolError),
    (aiohttp.ClientResponseError, httpx.RemoteProtocolError),
    (aiohttp.ClientOSError, httpx.NetworkError),
    (aiohttp.ClientError, httpx.NetworkError),
)


class CertificateError(httpx.ConnectError):
    """The upstream's TLS certificate could not be verified: which host, for an error that can say so."""

    def __init__(self, host: str, request: httpx.Request) -> None:
        super().__init__(f"upstream TLS certificate not verified for {host}", request=request)
        self.host = host


class UpstreamRedirect(httpx.TransportError):
    """The upstream answered a redirect. Never followed: the request carries the deployment's key in headers
    that httpx, which LiteLLM's clients follow redirects with, keeps on a cross-origin hop (all but
    ``Authorization``). Raised before httpx sees the response, so no client of any provider can follow it."""

    def __init__(self, status: int, host: str, request: httpx.Request) -> None:
        super().__init__(f"upstream redirect {status} to {host}", request=request)
        self.status = status
        self.host = host


def redirect_host(location: str | None, request_url: URL) -> str:
    """The host a redirect points to (the request's own for a relative one), and nothing else of it."""
    if not location:
        return "no location"
    try:
        host = request_url.join(URL(location)).host
    except ValueError:
        host = None
    return host if host and SHOWABLE_HOST.fullmatch(host) else "an unreadable location"


def translate(exc: BaseException, request: httpx.Request) -> httpx.TransportError:
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return CertificateError(request.url.host, request)
    for aiohttp_type, httpx_type in EXCEPTION_TABLE:
        if isinstance(exc, aiohttp_type):
            # Our words, not str(exc): aiohttp's messages carry URLs.
            return httpx_type(f"upstream {httpx_type.__name__}", request=request)
    raise TypeError(f"no translation for {type(exc).__name__}") from exc


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 2  # after the first, with backoff
    base_delay_s: float = 0.5
    retry_after_max_s: float = 30.0


def retry_after_seconds(value: str | None) -> float | None:
    """``Retry-After`` as seconds: delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_challenge(response: aiohttp.ClientResponse) -> bool:
    """A Cloudflare answer: its headers say so (the 1200 page is a 503 from cloudflare)."""
    return response.headers.get("server", "").lower() == "cloudflare" or "cf-mitigated" in response.headers


class _ResponseStream(httpx.AsyncByteStream):
    """The upstream body for httpx. The connection goes back the moment the body ends, whatever ends it:
    LiteLLM does not always ``aclose()`` a stream that raised, and a connection left to the garbage collector
    is a leaked socket (and a ResourceWarning)."""

    def __init__(
        self, response: aiohttp.ClientResponse, request: httpx.Request, tap: ChatUsageTap | None = None
    ) -> None:
        self._response = response
        self._request = request
        self._tap = tap

    async def __aiter__(self) -> AsyncIterator[bytes]:
        done = False
        tap = self._tap
        try:
            async for chunk in self._response.content.iter_any():
                if tap is None:
                    yield chunk
                elif passed := tap.feed(chunk):
                    yield passed
            if tap is not None and (rest := tap.end()):
                yield rest
            done = True
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise translate(exc, self._request) from exc
        finally:
            self._finish(done)

    async def aclose(self) -> None:
        self._finish(self._response.content.at_eof())

    def _finish(self, done: bool) -> None:
        if done:
            self._response.release()
        else:
            # Stopped early (client left, or an error): drop the connection so the upstream sees the cancel
            # and no half-read body is put back in the pool.
            self._response.close()


class AiohttpTransport(httpx.AsyncBaseTransport):
    def __init__(
        self, session: aiohttp.ClientSession, retry: RetryPolicy, metrics: Metrics, egress: Egress
    ) -> None:
        self._session = session
        self._retry = retry
        self._metrics = metrics
        self._egress = egress

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            body: bytes | AsyncIterator[bytes] = request.content
            replayable = True
        except httpx.RequestNotRead:
            body = _iter_request(request)
            replayable = False
        attempts, immediate_used, backoffs = 0, False, 0
        call = CALL.get()  # None outside a gateway call (forward mode)
        while True:
            attempts += 1
            if call is not None:
                call.outcome.attempts += 1
            response = await self._send(request, body)
            self._metrics.upstream_attempts.inc()
            if response.status in REDIRECT_STATUSES:
                self._refuse_redirect(response, request)
            # For the log line: the gateway call's total (the Router's retries and fallbacks included), else
            # this request's.
            structlog.contextvars.bind_contextvars(
                attempts=call.outcome.attempts if call is not None else attempts
            )
            if response.status not in RETRY_STATUSES or not replayable:
                break
            challenge = is_challenge(response)
            sets_cookie = "Set-Cookie" in response.headers
            if challenge:
                self._metrics.challenges.inc()
                log.info("upstream_challenge", status=response.status, sets_cookie=sets_cookie)
            if sets_cookie and not immediate_used:
                immediate_used, delay = True, 0.0  # the jar now has what the gate asked for
            elif backoffs < self._retry.attempts and (call is None or call.backoff):
                retry_after = retry_after_seconds(response.headers.get("Retry-After"))
                if retry_after is not None and retry_after > self._retry.retry_after_max_s:
                    break  # longer than we may wait: the client gets the 429/503 and its Retry-After
                delay = retry_after if retry_after is not None else self._retry.base_delay_s * 2**backoffs
                backoffs += 1
            else:
                break
            log.info("upstream_retry", status=response.status, attempt=attempts, delay_s=round(delay, 3))
            self._metrics.upstream_retries.labels(str(response.status)).inc()
            response.release()
            await asyncio.sleep(delay)
        tap = None
        if (
            call is not None
            and call.take_usage
            and response.status == 200
            and response.content_type == "text/event-stream"  # the chat stream, not a fetch of the call
        ):
            tap = ChatUsageTap()
            call.stream_usage = tap.tokens
        return httpx.Response(
            status_code=response.status,
            headers=[
                *((k.decode("latin-1"), v.decode("latin-1")) for k, v in response.raw_headers),
                (UPSTREAM_STATUS_HEADER, str(response.status)),
            ],
            stream=_ResponseStream(response, request, tap),
            request=request,
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode()},
        )

    @staticmethod
    def _refuse_redirect(response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        host = redirect_host(response.headers.get("Location"), response.url)
        response.close()
        log.warning("upstream_redirect_refused", status=response.status, host=host)
        raise UpstreamRedirect(response.status, host, request)

    async def _send(
        self, request: httpx.Request, body: bytes | AsyncIterator[bytes]
    ) -> aiohttp.ClientResponse:
        # httpx computed Host and Content-Length for this body; aiohttp sets its own.
        headers = [
            (k, v) for k, v in request.headers.multi_items() if k.lower() not in ("host", "content-length")
        ]
        url = URL(str(request.url), encoded=True)
        route = self._egress.route(url)
        if route.headers and url.scheme == "http":
            # Plain http goes to the proxy as the request itself (absolute-form): aiohttp sends proxy_headers
            # only on a CONNECT, so the proxy's credentials ride on the request.
            headers.extend(route.headers.items())
        try:
            return await self._session.request(
                request.method,
                url,
                headers=headers,
                data=body,
                allow_redirects=False,
                proxy=route.proxy,
                proxy_headers=route.headers,
                timeout=self._timeout(request),
            )
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise translate(exc, request) from exc

    def _timeout(self, request: httpx.Request) -> aiohttp.ClientTimeout:
        """A call's own read timeout (a deployment's ``timeout``, LiteLLM's ``request_timeout``; httpx carries
        it in the request's extensions) where it is shorter than the session's: memproxy's read timeout stays
        the ceiling, and a stream still has no total timeout. Connect stays memproxy's: the SDKs' own default
        (5 s) would otherwise override a longer ``connect_timeout_s``."""
        asked = (request.extensions.get("timeout") or {}).get("read")
        base = self._session.timeout
        read = _shorter(base.sock_read, asked)
        if read == base.sock_read:
            return base
        return aiohttp.ClientTimeout(total=None, connect=base.connect, sock_read=read)

    async def aclose(self) -> None:
        """The session is borrowed: its owner (``outbound.session``'s cleanup context) closes it."""


async def _iter_request(request: httpx.Request) -> AsyncIterator[bytes]:
    assert isinstance(request.stream, httpx.AsyncByteStream)  # httpx's async client gives one
    async for chunk in request.stream:
        yield chunk


class PinnedHeaders(httpx.AsyncBaseTransport):
    """Sets some headers to fixed values on every request, then hands it to the wrapped transport.

    LiteLLM rewrites some headers on the way (it sorts and merges ``anthropic-beta``); what the client sent
    must reach an Anthropic upstream unchanged. Borrows the wrapped transport, never closes it.
    """

    def __init__(self, wrapped: httpx.AsyncBaseTransport, headers: Mapping[str, str]) -> None:
        self._wrapped = wrapped
        self._headers = dict(headers)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        for name, value in self._headers.items():
            request.headers[name] = value
        return await self._wrapped.handle_async_request(request)

    async def aclose(self) -> None:
        """Borrowed: nothing to close."""


def _shorter(ceiling: float | None, asked: float | None) -> float | None:
    if asked is None:
        return ceiling
    return asked if ceiling is None else min(ceiling, asked)
