"""Admission: whether a request may use the gateway at all, judged from its headers before its body is read.

The gateway holds every provider key of its user, on a workstation whose most exposed program is the
browser. A page there reaches 127.0.0.1 in three ways, and each is closed here:

- **DNS rebinding**: a foreign name that resolves to 127.0.0.1 makes the page same-origin with the gateway,
  so it may read answers; only ``Host`` shows it. ``Host`` must be a loopback name or address (``localhost``,
  ``127.0.0.0/8``, ``[::1]``, and ``0.0.0.0``, which clients configured as ``http://0.0.0.0:8764`` send), an
  address of the socket the request came in on, or a name in ``memproxy.allowed_hosts``.
- **Cross-site requests**: a page may send a "simple" request (a form, or ``fetch`` with ``mode: no-cors``)
  without a CORS preflight. Such requests carry ``Origin`` (``Sec-Fetch-Site`` for a no-cors ``GET``): an
  origin other than the gateway's own is refused unless ``memproxy.allowed_origins`` lists it. Listed origins
  get CORS (a preflight answered, ``Access-Control-Allow-Origin`` on the answer); otherwise no
  ``Access-Control-*`` header ever leaves the gateway, an upstream's (forward mode) included.
- **A body a page can send**: model routes take only ``application/json``, which no simple request can set.

This is the pattern of Ollama after its DNS-rebinding CVE (``Host`` against loopback names, browser origins
only through ``OLLAMA_ORIGINS``) and of Jupyter (``Host`` checked unless ``allow_remote_access``).
"""

from __future__ import annotations

import functools
import ipaddress
import re

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler

from aiohttp_memproxy.config.schema import GatewaySettings
from aiohttp_memproxy.errors import PermissionDenied, UnsupportedMediaType
from aiohttp_memproxy.keys import ADMISSION, CORS_ORIGIN

# The routes that call a model (and their unprefixed aliases): JSON only.
MODEL_PATHS = frozenset(
    {
        "/v1/chat/completions",
        "/chat/completions",
        "/v1/messages",
        "/messages",
        "/v1/messages/count_tokens",
        "/messages/count_tokens",
        "/v1/responses",
        "/responses",
        "/anthropic/v1/messages",
        "/anthropic/v1/messages/count_tokens",
    }
)
# Google's Gemini API: the model and the method are in the path.
GEMINI_CALL = re.compile(r"(/gemini)?/v1beta/models/.+:(generateContent|streamGenerateContent|countTokens)")
LOOPBACK_NAMES = frozenset({"localhost"})
HOST_REFUSED = (
    "this request's Host header names another host than this gateway's (a DNS-rebinding page?): only "
    "loopback names and addresses are accepted, and the names listed in memproxy.allowed_hosts"
)
ORIGIN_REFUSED = (
    "a web page on another origin may not use this gateway: list its origin in memproxy.allowed_origins "
    "to allow it"
)
NOT_JSON = (
    "Content-Type: this route takes a JSON body only: send the header 'Content-Type: application/json' "
    "(curl -d needs -H 'Content-Type: application/json')"
)
CORS_METHODS = "GET, POST, DELETE, OPTIONS"
CORS_MAX_AGE = "600"
CORS_EXPOSED = "x-request-id, retry-after"
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}")
MAX_PREFLIGHT_HEADERS = 32
# A Sec-Fetch-Site that says a page of another site sent the request.
OTHER_SITES = frozenset({"cross-site", "same-site"})
ACCESS_CONTROL = "access-control-"


class Admission:
    """The admission rules of one gateway (``memproxy.allowed_hosts``, ``memproxy.allowed_origins``)."""

    def __init__(self, gateway: GatewaySettings) -> None:
        self.any_host = "*" in gateway.allowed_hosts
        self.hosts = frozenset(gateway.allowed_hosts)
        self.origins = frozenset(gateway.allowed_origins)
        # A client sends the same Host on every request: judged once per value.
        self._judged = functools.lru_cache(maxsize=256)(self._judge_host)

    def host_allowed(self, value: str, request: web.BaseRequest) -> bool:
        judged = self._judged(value)
        if isinstance(judged, bool):
            return judged
        # An address that is not loopback: admitted where the connection came in on it (a LAN address the
        # gateway listens on; a page reaching it by that address is same-origin with nothing but the gateway).
        transport = request.transport
        local = transport.get_extra_info("sockname") if transport is not None else None
        return isinstance(local, tuple) and _address(str(local[0])) == judged

    def _judge_host(self, value: str) -> bool | ipaddress.IPv4Address | ipaddress.IPv6Address:
        """True or False, or an address to compare with the socket's own."""
        lowered = value.lower()
        name = _host_name(lowered)
        if name is None:
            return False
        if self.any_host or lowered in self.hosts or name in self.hosts or name in LOOPBACK_NAMES:
            return True
        bracketed = name.startswith("[")
        try:
            literal = ipaddress.ip_address(name[1:-1] if bracketed else name)
        except ValueError:
            return False  # a name nobody listed
        if literal.version != (6 if bracketed else 4):  # an IPv6 address goes in brackets, only it
            return False
        address = _address(str(literal))
        assert address is not None  # an address already
        return True if address.is_loopback or address.is_unspecified else address

    def browser_origin(self, request: web.Request, origin: str | None, host: str | None) -> str | None:
        """The origin to answer with CORS headers (a listed one), None for a request that is not a page's of
        another origin; PermissionDenied for a page of another origin that is not listed."""
        if origin is not None:
            lowered = origin.lower()
            if lowered in self.origins:
                return origin
            scheme, _, authority = lowered.partition("://")
            if host is not None and scheme in ("http", "https") and authority == host.lower():
                return None  # the gateway's own page (/ui)
            raise PermissionDenied(ORIGIN_REFUSED, code="origin_not_allowed")
        # No Origin: a no-cors GET of a page (<img>, <script>) says where it came from here only.
        headers = request.headers
        if headers.get("Sec-Fetch-Site") in OTHER_SITES and headers.get("Sec-Fetch-Mode") != "navigate":
            raise PermissionDenied(ORIGIN_REFUSED, code="origin_not_allowed")
        return None


def _host_name(value: str) -> str | None:
    """The name or bracketed address of a Host header's value (any port), None if it is not one."""
    if value.startswith("["):
        end = value.find("]")
        if end == -1:
            return None
        name, rest = value[: end + 1], value[end + 1 :]
    else:
        name, colon, port = value.partition(":")
        rest = colon + port
    if rest and not (rest[0] == ":" and rest[1:].isdigit() and len(rest) <= 6):
        return None
    return name or None


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.partition("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _preflight(request: web.Request, origin: str) -> web.Response:
    """A CORS preflight from a listed origin: what it may send, for ten minutes."""
    asked = request.headers.get("Access-Control-Request-Headers", "")
    names = [name.strip() for name in asked.split(",")[:MAX_PREFLIGHT_HEADERS]]
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Methods": CORS_METHODS,
        "Access-Control-Max-Age": CORS_MAX_AGE,
        "Vary": "Origin",
    }
    allowed = [name for name in names if HEADER_NAME.fullmatch(name)]
    if allowed:
        headers["Access-Control-Allow-Headers"] = ", ".join(allowed)
    if request.headers.get("Access-Control-Request-Private-Network") == "true":
        headers["Access-Control-Allow-Private-Network"] = "true"  # Chrome: a public page to a local server
    return web.Response(status=204, headers=headers)


@web.middleware
async def admit(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Host, then a browser's Origin (a listed origin's preflight is answered here), then a model route's
    Content-Type: all before anything reads the body or checks the key."""
    admission = request.app[ADMISSION]
    headers = request.headers
    host = headers.get(hdrs.HOST)
    if host is not None and not admission.host_allowed(host, request):
        raise PermissionDenied(HOST_REFUSED, code="host_not_allowed")
    origin = headers.get(hdrs.ORIGIN)
    if origin is not None or "Sec-Fetch-Site" in headers:
        allowed = admission.browser_origin(request, origin, host)
        if allowed is not None:
            request[CORS_ORIGIN] = allowed
            if request.method == hdrs.METH_OPTIONS and "Access-Control-Request-Method" in headers:
                return _preflight(request, allowed)
    if (
        request.method == hdrs.METH_POST
        and (request.path in MODEL_PATHS or GEMINI_CALL.fullmatch(request.path))
        and request.content_type != "application/json"
    ):
        raise UnsupportedMediaType(NOT_JSON)
    return await handler(request)


async def cors_headers(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """on_response_prepare: ``Access-Control-*`` only for a listed origin, never anyone else's."""
    headers = response.headers
    origin = request.get(CORS_ORIGIN)
    if origin is not None and request.method == hdrs.METH_OPTIONS:
        return  # a preflight's own, set by _preflight
    for name in {name for name in headers if name.lower().startswith(ACCESS_CONTROL)}:
        headers.popall(name, None)
    if origin is not None:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = CORS_EXPOSED
        if "origin" not in headers.get("Vary", "").lower():
            headers.add("Vary", "Origin")
