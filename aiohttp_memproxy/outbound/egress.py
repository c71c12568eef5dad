"""How upstream requests leave the machine: which outbound proxy each one goes through, and which certificate
authorities its TLS trusts. Read once at startup; the upstream session and transport, and the probe, ask here.

Proxies as curl and httpx choose them: ``memproxy.upstream_proxy`` if set, else ``HTTPS_PROXY`` /
``HTTP_PROXY`` by the URL's scheme (lowercase names first, as curl), each bypassed for hosts ``NO_PROXY``
names; credentials in a proxy URL become its ``Proxy-Authorization``. TLS trusts the system store plus every
CA bundle configured (``memproxy.ca_bundle``, ``litellm_settings.ssl_verify`` as a path, ``SSL_CERT_FILE``,
``REQUESTS_CA_BUNDLE``), or nothing is verified when ``litellm_settings.ssl_verify`` is false.
"""

from __future__ import annotations

import functools
import ipaddress
import ssl
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from yarl import URL

CA_VARIABLES = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")


@dataclass(frozen=True)
class Route:
    """The proxy one request goes through (None: direct), with its credentials as a header, not in its URL."""

    proxy: URL | None
    headers: Mapping[str, str] | None = field(default=None, repr=False)

    def describe(self) -> str:
        """For people: the proxy's scheme, host and port, never its credentials."""
        if self.proxy is None:
            return "direct"
        return f"{self.proxy.scheme}://{self.proxy.host}:{self.proxy.port}"


DIRECT = Route(None)


@dataclass(frozen=True)
class Egress:
    explicit_proxy: str | None = field(default=None, repr=False)
    environment_proxies: Mapping[str, str] = field(default_factory=dict, repr=False)  # scheme -> URL, "no"
    ca_files: tuple[tuple[str, Path], ...] = ()  # (where it was configured, the file)
    verify: bool = True

    @classmethod
    def configure(
        cls,
        environ: Mapping[str, str],
        upstream_proxy: str | None,
        ca_bundle: Path | None,
        ssl_verify: bool | str,
    ) -> Egress:
        sources: list[tuple[str, Path]] = []
        if ca_bundle is not None:
            sources.append(("memproxy.ca_bundle", ca_bundle))
        if isinstance(ssl_verify, str):
            sources.append(("litellm_settings.ssl_verify", Path(ssl_verify)))
        sources += [(name, Path(environ[name])) for name in CA_VARIABLES if environ.get(name)]
        proxies = _environment_proxies(environ)
        for scheme in ("http", "https"):
            if scheme in proxies:
                check_proxy(f"{scheme.upper()}_PROXY (or {scheme}_proxy)", proxies[scheme])
        return cls(
            explicit_proxy=upstream_proxy,
            environment_proxies=proxies,
            ca_files=tuple(sources),
            verify=ssl_verify is not False,
        )

    def route(self, url: URL) -> Route:
        """Called for every upstream request: with no proxy configured, it costs a dict lookup."""
        if self.explicit_proxy is not None:
            chosen: str | None = self.explicit_proxy
        else:
            chosen = self.environment_proxies.get(url.scheme)
        if chosen is None:
            return DIRECT
        host = url.host or ""
        # A local server (vLLM, Ollama, a LiteLLM proxy) is never reached through a proxy.
        if is_loopback(host) or self._bypassed(host, url.port):
            return DIRECT
        return _proxy_route(chosen)

    def _bypassed(self, host: str, port: int | None) -> bool:
        if "no" not in self.environment_proxies:
            return False
        if _in_networks(host, self.environment_proxies["no"]):  # CIDR entries, as curl, requests and Go
            return True
        target = f"{host}:{port}" if port else host
        # Undocumented but long-standing (3.x): the NO_PROXY rule urllib itself applies.
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        return bool(bypass(target, dict(self.environment_proxies)))

    def ssl_context(self) -> ssl.SSLContext | bool:
        """False (verify nothing) only when the config says so; else the system store plus every CA file.

        ``SSL_CERT_FILE`` makes OpenSSL's default paths that one file, dropping the system store: the store's
        own compiled-in paths are loaded explicitly, so a company CA adds to the public ones."""
        if not self.verify:
            return False
        context = ssl.create_default_context()
        paths = ssl.get_default_verify_paths()
        if Path(paths.openssl_cafile).is_file():
            context.load_verify_locations(cafile=paths.openssl_cafile)
        if Path(paths.openssl_capath).is_dir():
            context.load_verify_locations(capath=paths.openssl_capath)
        for _, path in self.ca_files:
            context.load_verify_locations(cafile=str(path))
        return context

    def describe_trust(self) -> str:
        if not self.verify:
            return "TLS verification off (litellm_settings.ssl_verify: false)"
        extra = ", ".join(f"{path} ({source})" for source, path in self.ca_files)
        return f"system store + {extra}" if extra else "system store"


class EgressConfigError(ValueError):
    """A proxy URL this gateway cannot use; the message names where it was set, never its value."""


def check_proxy(where: str, value: str) -> None:
    url = URL(value if "://" in value else f"http://{value}")
    if url.scheme not in ("http", "https") or not url.host:
        raise EgressConfigError(f"{where}: expected an http:// or https:// proxy URL with a host")


@functools.lru_cache(maxsize=8)
def _proxy_route(chosen: str) -> Route:
    """A configured proxy URL as a Route, parsed once (there are at most a few)."""
    proxy = URL(chosen if "://" in chosen else f"http://{chosen}")
    if not proxy.user:
        return Route(proxy)
    credentials = aiohttp.encode_basic_auth(proxy.user, proxy.password or "")
    return Route(proxy.with_user(None), {"Proxy-Authorization": credentials})


def is_loopback(host: str) -> bool:
    """localhost or a loopback address (brackets of an IPv6 host allowed)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _in_networks(host: str, no_proxy: str) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    for entry in no_proxy.split(","):
        try:
            if address in ipaddress.ip_network(entry.strip().strip("[]"), strict=False):
                return True
        except ValueError:
            continue
    return False


def _environment_proxies(environ: Mapping[str, str]) -> dict[str, str]:
    """``http``/``https``/``no`` from the environment, lowercase names winning, as curl reads them."""
    found: dict[str, str] = {}
    for scheme in ("http", "https", "no"):
        for name in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY"):
            if environ.get(name):
                found[scheme] = environ[name]
                break
    return found
