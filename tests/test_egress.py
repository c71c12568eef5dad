"""Corporate networks: an outbound proxy on loopback that records what passes (CONNECT for https,
absolute-form for http), and a TLS upstream whose certificate a throwaway CA (trustme) signed, as a
TLS-inspecting proxy's would be. Through the proxy with the CA trusted, the cookie gate works as ever; without
the CA, a clear 502."""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from yarl import URL

from aiohttp_memproxy.config.settings import ConfigError, Settings
from aiohttp_memproxy.keys import LEDGER
from aiohttp_memproxy.outbound.egress import Egress
from aiohttp_memproxy.usage import ledger
from tests.conftest import MESSAGES, UPSTREAM_KEY, AppClient, LogLines, base_config, post
from tests.fake_upstream import CLEARANCE, FakeUpstream

PROXY_USER, PROXY_PASSWORD = "corp-user", "corp-pass-0123"
# The upstream's name as the gateway knows it. Only the proxy resolves it (to the fake on loopback): the
# gateway never reaches a loopback upstream through a proxy, and it may look nothing up beyond loopback.
UPSTREAM_HOST = "upstream.test"
# OpenAI's own host, for what LiteLLM does only there; the proxy takes it to the fake on loopback too.
OPENAI_HOST = "api.openai.com"


@dataclass
class Passed:
    method: str
    target: str
    proxy_authorization: str | None


@dataclass
class ForwardProxy:
    """A minimal HTTP forward proxy: CONNECT tunnels for https, absolute-form requests for http."""

    seen: list[Passed] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    port: int = 0

    async def start(self) -> asyncio.Server:
        server = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        return server

    @property
    def url(self) -> str:
        return f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{self.port}"

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.tasks.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        request_line, *header_lines = head.split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in header_lines if ": " in line)}
        self.seen.append(Passed(method, target, headers.get("proxy-authorization")))
        if method == "CONNECT":
            host, port = target.rsplit(":", 1)
            up_reader, up_writer = await asyncio.open_connection(_resolve(host), int(port))
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:  # absolute-form: to origin-form, without the proxy's own header
            url = URL(target)
            up_reader, up_writer = await asyncio.open_connection(_resolve(url.host or ""), url.port)
            kept = [line for line in header_lines if line and not line.lower().startswith("proxy-")]
            up_writer.write(
                "\r\n".join([f"{method} {url.raw_path_qs} HTTP/1.1", *kept, "", ""]).encode("latin-1")
            )
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))


def _resolve(host: str) -> str:
    return "127.0.0.1" if host in (UPSTREAM_HOST, OPENAI_HOST) else host


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


@pytest.fixture
async def proxy() -> AsyncIterator[ForwardProxy]:
    forward = ForwardProxy()
    server = await forward.start()
    yield forward
    server.close()
    for task in list(forward.tasks):
        task.cancel()
    await asyncio.gather(*forward.tasks, return_exceptions=True)
    await server.wait_closed()


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, Path]:
    authority = trustme.CA(organization_name="Example Corp TLS inspection")
    path = tmp_path / "corp-ca.pem"
    authority.cert_pem.write_to_path(str(path))
    return authority, path


@pytest.fixture
async def tls_upstream(aiohttp_server: Any, ca: tuple[trustme.CA, Path]) -> tuple[FakeUpstream, str]:
    return await tls_fake(aiohttp_server, ca[0], UPSTREAM_HOST, "127.0.0.1")


@pytest.fixture
async def openai_upstream(aiohttp_server: Any, ca: tuple[trustme.CA, Path]) -> tuple[FakeUpstream, str]:
    """The fake upstream as api.openai.com (reached through the proxy, its certificate the company CA's)."""
    return await tls_fake(aiohttp_server, ca[0], OPENAI_HOST)


async def tls_fake(
    aiohttp_server: Any, authority: trustme.CA, host: str, *also: str
) -> tuple[FakeUpstream, str]:
    """A fake upstream on loopback serving TLS as ``host`` (and ``also``), its certificate ``authority``'s."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(host, *also).configure_cert(context)
    fake = FakeUpstream()
    server = await aiohttp_server(fake.app(), ssl=context)
    return fake, f"https://{host}:{server.port}"


def on_loopback(url: str) -> str:
    """The same upstream by its loopback address: reached directly."""
    return url.replace(UPSTREAM_HOST, "127.0.0.1")


def settings_for(
    make_settings: Callable[..., Settings], url: str, environ: dict[str, str] | None = None, **sections: Any
) -> Settings:
    doc = base_config(
        model_list=[
            {
                "model_name": "corp",
                "litellm_params": {"model": "openai/corp", "api_base": f"{url}/v1", "api_key": UPSTREAM_KEY},
            }
        ],
        **sections,
    )
    doc.setdefault("memproxy", {})["retry_base_delay_s"] = 0
    return make_settings(doc, environ)


def through_company_proxy(
    make_settings: Callable[..., Settings], url: str, proxy: ForwardProxy, ca: tuple[trustme.CA, Path]
) -> Settings:
    """Settings for ``url`` through the loopback company proxy, its CA trusted (memproxy.ca_bundle)."""
    return settings_for(make_settings, url, {"HTTPS_PROXY": proxy.url}, memproxy={"ca_bundle": str(ca[1])})


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def test_https_through_the_proxy_with_the_company_ca(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    tls_upstream: tuple[FakeUpstream, str],
    proxy: ForwardProxy,
    ca: tuple[trustme.CA, Path],
) -> None:
    fake, url = tls_upstream
    fake.gate = True
    settings = through_company_proxy(make_settings, url, proxy, ca)
    client = await app_client(settings)
    for _ in range(2):
        response = await post(client, {"model": "corp", "messages": MESSAGES})
        assert response.status == 200, await response.text()
    # The upstream's cookies, kept for the upstream's host: one challenge, then the cookie, through the proxy.
    assert fake.challenges == 1
    assert fake.with_cookie == [False, True, True]
    port = URL(url).port
    assert [passed.method for passed in proxy.seen] == ["CONNECT"]  # one tunnel, kept alive
    assert proxy.seen[0].target == f"{UPSTREAM_HOST}:{port}"
    assert proxy.seen[0].proxy_authorization == basic(PROXY_USER, PROXY_PASSWORD)
    assert all(
        "Proxy-Authorization" not in seen.headers for seen in fake.seen
    )  # the proxy's, not the upstream's
    health = await (await client.get("/health")).json()
    assert CLEARANCE in health["cookies"]["names"]


async def test_an_untrusted_certificate_is_a_clear_502(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    tls_upstream: tuple[FakeUpstream, str],
    proxy: ForwardProxy,
) -> None:
    fake, url = tls_upstream
    client = await app_client(settings_for(make_settings, url, {"HTTPS_PROXY": proxy.url}))
    response = await post(client, {"model": "corp", "messages": MESSAGES})
    assert response.status == 502
    error = (await response.json())["error"]
    assert error["code"] == "upstream_certificate"
    assert f"certificate of {UPSTREAM_HOST}" in error["message"]
    assert "memproxy.ca_bundle" in error["message"]
    assert PROXY_PASSWORD not in error["message"]
    assert fake.seen == []


async def test_no_proxy_goes_direct(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    tls_upstream: tuple[FakeUpstream, str],
    proxy: ForwardProxy,
    loopback_only: list[str],
) -> None:
    """NO_PROXY names the host: the gateway goes to it itself (here it must resolve the name, which only the
    proxy could: the lookup it tried is the proof, and the client gets a 502 that says so)."""
    _, url = tls_upstream
    environ = {"HTTPS_PROXY": proxy.url, "NO_PROXY": "localhost,.test"}
    client = await app_client(settings_for(make_settings, url, environ))
    response = await post(client, {"model": "corp", "messages": MESSAGES})
    assert response.status == 502
    assert proxy.seen == []
    assert set(loopback_only) == {f"lookup {UPSTREAM_HOST}"}
    loopback_only.clear()  # that lookup was the point


async def test_a_loopback_upstream_is_never_proxied(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    proxy: ForwardProxy,
) -> None:
    """A local server (vLLM, Ollama, a LiteLLM proxy in forward mode) with HTTP_PROXY set: direct, so its key
    and the memory headers never cross a corporate proxy in plain text."""
    _, url = upstream
    client = await app_client(settings_for(make_settings, url, {"HTTP_PROXY": proxy.url}))
    assert (await post(client, {"model": "corp", "messages": MESSAGES})).status == 200
    assert proxy.seen == []


async def test_http_upstream_through_the_proxy_in_absolute_form(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    proxy: ForwardProxy,
) -> None:
    fake, loopback_url = upstream
    url = loopback_url.replace("127.0.0.1", UPSTREAM_HOST)
    client = await app_client(settings_for(make_settings, url, {"http_proxy": proxy.url}))
    response = await post(client, {"model": "corp", "messages": MESSAGES, "stream": True})
    assert response.status == 200
    assert "Hello" in await response.text()
    assert proxy.seen[0].method == "POST"
    assert proxy.seen[0].target == f"{url}/v1/chat/completions"
    assert proxy.seen[0].proxy_authorization == basic(PROXY_USER, PROXY_PASSWORD)
    assert "Proxy-Authorization" not in fake.seen[0].headers


async def test_memproxy_upstream_proxy_wins_over_the_environment(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    proxy: ForwardProxy,
) -> None:
    _, loopback_url = upstream
    url = loopback_url.replace("127.0.0.1", UPSTREAM_HOST)
    dead = "http://127.0.0.1:9"
    settings = settings_for(
        make_settings, url, {"HTTP_PROXY": dead, "HTTPS_PROXY": dead}, memproxy={"upstream_proxy": proxy.url}
    )
    client = await app_client(settings)
    assert (await post(client, {"model": "corp", "messages": MESSAGES})).status == 200
    assert [passed.method for passed in proxy.seen] == ["POST"]


async def test_ssl_verify_false_connects_and_says_so_loudly(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    tls_upstream: tuple[FakeUpstream, str],
    log_lines: LogLines,
) -> None:
    _, url = tls_upstream
    settings = settings_for(make_settings, on_loopback(url), litellm_settings={"ssl_verify": False})
    assert [w.event for w in settings.warnings] == ["tls_verification_disabled"]
    client = await app_client(settings)
    assert (await post(client, {"model": "corp", "messages": MESSAGES})).status == 200
    assert log_lines.named("tls_verification_disabled")


async def test_litellm_ssl_verify_as_a_path_is_trusted(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    tls_upstream: tuple[FakeUpstream, str],
    ca: tuple[trustme.CA, Path],
) -> None:
    _, url = tls_upstream
    settings = settings_for(make_settings, on_loopback(url), litellm_settings={"ssl_verify": str(ca[1])})
    client = await app_client(settings)
    assert (await post(client, {"model": "corp", "messages": MESSAGES})).status == 200


def test_a_company_ca_adds_to_the_system_store(ca: tuple[trustme.CA, Path]) -> None:
    egress = Egress.configure({"SSL_CERT_FILE": str(ca[1])}, None, None, True)
    context = egress.ssl_context()
    assert isinstance(context, ssl.SSLContext)
    subjects = [dict(item[0] for item in cert["subject"]) for cert in context.get_ca_certs()]
    assert {"organizationName": "Example Corp TLS inspection"} in [
        {k: v for k, v in s.items() if k == "organizationName"} for s in subjects
    ]
    assert len(subjects) > 1  # the public CAs are still there
    assert egress.describe_trust() == f"system store + {ca[1]} (SSL_CERT_FILE)"


def test_an_unreadable_ca_file_is_a_config_error(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(base_config(memproxy={"ca_bundle": str(tmp_path / "missing.pem")}))
    assert caught.value.errors == (f"memproxy.ca_bundle: CA file {tmp_path / 'missing.pem'} cannot be read",)


@pytest.mark.parametrize(
    ("environ", "url", "expected"),
    [
        ({"HTTPS_PROXY": "http://p:3128"}, "https://api.example.com/v1", "http://p:3128"),
        (
            {"https_proxy": "http://lower:1", "HTTPS_PROXY": "http://upper:2"},
            "https://a.example/",
            "http://lower:1",
        ),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": ".example.com"}, "https://api.example.com/", "direct"),
        ({"HTTP_PROXY": "http://p:3128"}, "https://api.example.com/", "direct"),
        ({"HTTP_PROXY": "http://u:pw@p:3128"}, "http://h/", "http://p:3128"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "10.0.0.0/8"}, "https://10.1.2.3/v1", "direct"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "10.0.0.0/8"}, "https://11.1.2.3/v1", "http://p:3128"),
        ({"HTTPS_PROXY": "http://p:3128", "NO_PROXY": "*"}, "https://api.example.com/", "direct"),
        ({"HTTPS_PROXY": "http://p:3128"}, "https://127.0.0.1:8000/v1", "direct"),  # loopback: never
        ({"HTTP_PROXY": "http://p:3128"}, "http://localhost:4000/v1", "direct"),
    ],
)
def test_proxy_choice_as_curl_makes_it(environ: dict[str, str], url: str, expected: str) -> None:
    route = Egress.configure(environ, None, None, True).route(URL(url))
    assert route.describe() == expected


async def test_probe_reports_the_proxy_and_the_trust_of_each_model(
    make_settings: Callable[..., Settings],
    tls_upstream: tuple[FakeUpstream, str],
    proxy: ForwardProxy,
    ca: tuple[trustme.CA, Path],
) -> None:
    from aiohttp_memproxy import probe

    _, url = tls_upstream
    settings = through_company_proxy(make_settings, url, proxy, ca)
    (result,) = await probe.probe(settings, ["corp"])
    assert result.outcome == "ok", result.detail
    assert result.proxy == f"http://127.0.0.1:{proxy.port}"  # never its credentials
    assert result.trust == f"system store + {ca[1]} (memproxy.ca_bundle)"
    assert PROXY_PASSWORD not in probe.report([result])
    assert f"proxy: http://127.0.0.1:{proxy.port}; TLS trusts: system store + {ca[1]}" in probe.report(
        [result]
    )


def test_a_proxy_url_that_cannot_be_used_stops_startup(make_settings: Callable[..., Settings]) -> None:
    with pytest.raises(ConfigError) as caught:
        make_settings(base_config(), {"HTTPS_PROXY": "socks5://secret-user:secret-pw@p:1080"})
    assert caught.value.errors == (
        "HTTPS_PROXY (or https_proxy): expected an http:// or https:// proxy URL with a host",
    )


async def test_openais_own_api_streams_its_exact_usage_to_the_ledger(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    openai_upstream: tuple[FakeUpstream, str],
    proxy: ForwardProxy,
    ca: tuple[trustme.CA, Path],
) -> None:
    """LiteLLM asks OpenAI's own API for a stream's usage itself (1.106.2) and relays a usage chunk of its
    own: the gateway neither asks again nor takes the upstream's chunk out (LiteLLM would then estimate the
    tokens with a tokenizer). The ledger gets the upstream's exact tokens; the client, no usage chunk."""
    fake, url = openai_upstream
    settings = through_company_proxy(make_settings, url, proxy, ca)
    client = await app_client(settings)
    response = await post(client, {"model": "corp", "messages": MESSAGES, "stream": True})
    assert response.status == 200, await response.text()
    frames = [json.loads(line[6:]) for line in (await response.text()).splitlines() if line[6:8] == '{"']
    assert frames
    assert all("usage" not in frame for frame in frames)
    assert fake.seen[-1].body["stream_options"] == {"include_usage": True}  # LiteLLM's own asking
    assert not any(name.lower().startswith("x-memproxy") for name in fake.seen[-1].headers)
    assert proxy.seen[0].target.startswith(f"{OPENAI_HOST}:")
    assert client.server.app is not None
    book = client.server.app[LEDGER]
    await book.flush()
    [row] = ledger.read(book.path, 0)
    assert (row.input_tokens, row.output_tokens) == (5, 3)  # the fake's, not a tokenizer's estimate
