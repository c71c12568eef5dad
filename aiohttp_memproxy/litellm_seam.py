"""The seam that gives LiteLLM our transport: every HTTP client LiteLLM builds for itself sends through the
gateway's one aiohttp session and cookie jar.

LiteLLM builds its clients in two factories, both looked up at call time (verified on litellm 1.106.2):
``AsyncHTTPHandler.create_client`` / ``AsyncHTTPHandler.create_async_transport``
(``llms/custom_httpx/http_handler.py``: every base_llm_http_handler, Anthropic, Gemini, Bedrock, Ollama,
Cohere and Responses path) and ``BaseOpenAILLM._get_async_http_client`` (``llms/openai/common_utils.py``:
the OpenAI-SDK and Azure paths, including the Responses bridge). Both are replaced while a gateway runs, so
they hand out ``Dispatch``: a transport that sends each request through the transport of the gateway call in
progress (a ContextVar the calls in ``llm`` set). A client LiteLLM caches (``in_memory_llm_clients_cache``,
1 h) therefore stays valid across apps, reloads and event loops: it holds no connection of its own.

A request that reaches ``Dispatch`` outside a gateway call is refused and counted (``escapes``): the tests'
tripwire. ``install`` checks that LiteLLM's internals are where this module expects them and that the
factories, once replaced, really hand out ``Dispatch``; if not it raises ``SeamError`` and the gateway does
not start (a loud failure, never a silent cookie-less gateway).

This module and ``llm`` are the only ones that touch LiteLLM.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map at import

import contextlib
from collections.abc import AsyncIterator, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import httpx
import structlog
from aiohttp import web

log = structlog.get_logger()

VERIFIED_ON = "1.106.2"
SELF_CHECK_PROVIDER = "memproxy-seam-self-check"
# Clients LiteLLM keeps as module attributes, outside its client cache (built by the factories on first use).
MODULE_CLIENTS = ("module_level_aclient", "module_level_client")
RUST_SWITCH = "LITELLM_RUST"
MISSING = object()
# LiteLLM's routes (its rust_bridge catalog's names) that this gateway calls.
ROUTES_USED = frozenset({"chat_completions", "messages", "responses", "token_counter", "tokenizer"})

# The transport of the gateway call in progress; set by llm.LLMClients before it calls LiteLLM, and kept by
# the task (so a stream read later in the same handler still has it).
CURRENT: ContextVar[httpx.AsyncBaseTransport | None] = ContextVar("memproxy_transport", default=None)


class SeamError(RuntimeError):
    """LiteLLM's internals are not where the seam expects them: the gateway must not start."""


class Dispatch(httpx.AsyncBaseTransport):
    """The transport every client LiteLLM builds gets: sends through the current gateway call's transport."""

    def __init__(self, seam: _Installed) -> None:
        self._seam = seam

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        transport = CURRENT.get()
        if transport is None:
            self._seam.escapes += 1
            log.error("litellm_request_outside_gateway_call", host=request.url.host)
            raise httpx.ConnectError("refused: a LiteLLM request outside a gateway call", request=request)
        return await transport.handle_async_request(request)

    async def aclose(self) -> None:
        """Holds nothing: the transports it dispatches to are owned by their apps."""


@dataclass
class _Installed:
    """What was replaced, to put it back when the last app goes."""

    originals: dict[tuple[type, str], Any] = field(default_factory=dict)
    users: int = 0
    escapes: int = 0


# LiteLLM's classes are process-wide, so the seam is too: installed by the first app, counted per app, and
# LiteLLM put back as it was when the last app goes. Nothing app-specific lives here (that is CURRENT's job).
_SEAM = _Installed()


def escapes() -> int:
    """Requests LiteLLM tried to send outside a gateway call since this process started."""
    return _SEAM.escapes


def _targets() -> tuple[type, type, Any]:
    """LiteLLM's two factory owners and its client cache, or SeamError naming what moved."""
    try:
        import litellm
        from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler
        from litellm.llms.openai.common_utils import BaseOpenAILLM
    except ImportError as exc:
        raise SeamError(_moved(f"cannot import {exc.name}")) from exc
    missing = [
        f"{owner.__name__}.{name}"
        for owner, name in (
            (AsyncHTTPHandler, "create_client"),
            (AsyncHTTPHandler, "create_async_transport"),
            (AsyncHTTPHandler, "_create_async_transport"),
            (BaseOpenAILLM, "_get_async_http_client"),
        )
        if not callable(getattr(owner, name, None))
    ]
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    if cache is None or not callable(getattr(cache, "flush_cache", None)):
        missing.append("litellm.in_memory_llm_clients_cache.flush_cache")
    if missing:
        raise SeamError(_moved("missing " + ", ".join(missing)))
    return AsyncHTTPHandler, BaseOpenAILLM, cache


def _moved(what: str) -> str:
    return (
        f"LiteLLM {metadata.version('litellm')}'s HTTP client factories are not as verified on "
        f"{VERIFIED_ON} ({what}): refusing to start a gateway whose upstream calls would not keep cookies"
    )


def _python_paths_only() -> None:
    """LiteLLM's optional Rust paths (1.106.2: the Anthropic Messages route, when ``LITELLM_RUST`` or
    ``litellm.rust(True)`` opts in) send with their own HTTP client, around any Python transport: turned off,
    and a refusal to start if the environment forces one on."""
    try:
        from litellm.rust_bridge import catalog
        from litellm.rust_bridge.configuration import Decision, rust
    except ImportError:  # a LiteLLM without the Rust bridge: every path is Python
        return
    try:
        rust(False)
        providers = [
            None,
            *(str(getattr(p, "value", p)) for p in getattr(litellm_module(), "provider_list", [])),
        ]
        native = sorted(
            {
                route.value
                for route in catalog.Route
                for provider in providers
                if route.value in ROUTES_USED
                and catalog.decision(catalog.RouteContext(route, provider)) is not Decision.PYTHON
            }
        )
    except (AttributeError, TypeError, ValueError) as exc:  # the bridge's catalog moved
        raise SeamError(_moved(f"its Rust bridge's catalog changed ({type(exc).__name__})")) from exc
    if native:
        raise SeamError(
            f"LiteLLM would send {', '.join(native)} requests through its Rust HTTP client, around the "
            f"gateway's cookie jar ({RUST_SWITCH} is set in the environment?): unset it"
        )


def litellm_module() -> Any:
    import litellm

    return litellm


def _install() -> None:
    from litellm.llms.custom_httpx.http_handler import blocked_cookie_jar

    handler_cls, openai_cls, cache = _targets()
    litellm = litellm_module()
    _python_paths_only()
    dispatch = Dispatch(_SEAM)
    original_create_client = handler_cls.create_client  # type: ignore[attr-defined]

    def create_client(self: Any, *args: Any, **kwargs: Any) -> httpx.AsyncClient:
        # LiteLLM's own branch for a given transport: no proxy mounts, no trust_env, its blocked httpx jar
        # (our aiohttp jar does the cookies, below httpx).
        if self.transport is None:
            self.transport = dispatch
        client: httpx.AsyncClient = original_create_client(self, *args, **kwargs)
        client.follow_redirects = False  # the transport refuses a redirect anyway: never followed with a key
        return client

    def create_async_transport(*args: Any, **kwargs: Any) -> httpx.AsyncBaseTransport:
        return dispatch

    def get_async_http_client(*args: Any, **kwargs: Any) -> httpx.AsyncClient:
        # Replaces litellm.aclient_session too: the OpenAI SDK's httpx client, with our transport only.
        # Timeouts are the aiohttp session's (connect, sock_read), none of httpx's on top; cookies are the
        # session's jar, so httpx keeps none (LiteLLM's own blocked jar).
        return httpx.AsyncClient(
            transport=dispatch,
            follow_redirects=False,
            trust_env=False,
            timeout=None,  # noqa: S113
            cookies=blocked_cookie_jar(),
        )

    replacements: list[tuple[type, str, Any]] = [
        (handler_cls, "create_client", create_client),
        (handler_cls, "create_async_transport", staticmethod(create_async_transport)),
        (handler_cls, "_create_async_transport", staticmethod(create_async_transport)),
        (openai_cls, "_get_async_http_client", staticmethod(get_async_http_client)),
    ]
    try:
        for owner, name, replacement in replacements:
            # Its own attribute, or MISSING where it inherits one: put back by deleting ours.
            _SEAM.originals[(owner, name)] = vars(owner).get(name, MISSING)
            setattr(owner, name, replacement)
        _forget_clients(cache, litellm)  # clients LiteLLM built before the seam would send around it
        _self_check(dispatch, handler_cls, openai_cls, cache)
    except BaseException as exc:
        _uninstall()
        if isinstance(exc, (AttributeError, TypeError, KeyError)):
            raise SeamError(_moved(f"{type(exc).__name__} while installing")) from exc
        raise


def _self_check(dispatch: Dispatch, handler_cls: type, openai_cls: type, cache: Any) -> None:
    """The factories, called as LiteLLM calls them, must hand out Dispatch."""
    from litellm.llms.custom_httpx.http_handler import get_async_httpx_client

    handler = get_async_httpx_client(llm_provider=SELF_CHECK_PROVIDER)
    openai_http = openai_cls._get_async_http_client()  # type: ignore[attr-defined]
    found = {
        "get_async_httpx_client": getattr(getattr(handler, "client", None), "_transport", None),
        "BaseOpenAILLM._get_async_http_client": getattr(openai_http, "_transport", None),
        "AsyncHTTPHandler.create_async_transport": handler_cls.create_async_transport(),  # type: ignore[attr-defined]
    }
    cache.flush_cache()
    wrong = [name for name, transport in found.items() if transport is not dispatch]
    if wrong:
        raise SeamError(_moved("not handing out the gateway's transport: " + ", ".join(wrong)))


def _forget_clients(cache: Any, litellm: Any) -> None:
    cache.flush_cache()
    for name in MODULE_CLIENTS:  # kept outside the cache (image URL fetches); rebuilt by the factories on use
        vars(litellm).pop(name, None)


def _uninstall() -> None:
    for (owner, name), original in _SEAM.originals.items():
        if original is MISSING:
            with contextlib.suppress(AttributeError):
                delattr(owner, name)
        else:
            setattr(owner, name, original)
    _SEAM.originals.clear()
    with contextlib.suppress(SeamError, ImportError):
        from litellm.rust_bridge.configuration import reset_rust_configuration

        reset_rust_configuration()
    with contextlib.suppress(SeamError):
        _forget_clients(_targets()[2], litellm_module())  # clients holding Dispatch must not outlive the seam


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """The seam for as long as the block runs; nested uses share one installation."""
    if _SEAM.users == 0:
        _install()
    _SEAM.users += 1
    try:
        yield
    finally:
        _SEAM.users -= 1
        if _SEAM.users == 0:
            _uninstall()


async def seam(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: LiteLLM's factories hand out our transport while this app runs."""
    with installed():
        log.debug("litellm_seam_installed", litellm=metadata.version("litellm"), verified_on=VERIFIED_ON)
        yield
