"""Every change the gateway makes to LiteLLM, in one place: what it replaces, why, and one installer.

Each statement about LiteLLM's internals in the ``llm`` package is verified on ``VERIFIED_ON``; ``install``
checks that the internals it replaces are where they were, and refuses to start the gateway when they are not
(``SeamError``: a loud failure, never a silent cookie-less gateway).

Process-wide settings (``configure``, at import): LiteLLM's own switches the gateway needs on every call.

Replaced while a gateway app runs (``installed``, reference-counted: LiteLLM's classes are process-wide, so
the first app installs and the last one puts LiteLLM back as it was):

- LiteLLM's two HTTP client factories, both looked up at call time: ``AsyncHTTPHandler.create_client`` /
  ``create_async_transport`` (``llms/custom_httpx/http_handler.py``: every base_llm_http_handler, Anthropic,
  Gemini, Bedrock, Ollama, Cohere and Responses path) and ``BaseOpenAILLM._get_async_http_client``
  (``llms/openai/common_utils.py``: the OpenAI-SDK and Azure paths, the Responses bridge included). They hand
  out ``Dispatch``, a transport that sends each request through the transport of the gateway call in
  progress (``outbound.call``). A client LiteLLM caches (``in_memory_llm_clients_cache``, 1 h) therefore stays
  valid across apps, reloads and event loops: it holds no connection of its own. A request that reaches
  ``Dispatch`` outside a gateway call is refused and counted (``escapes``): the tests' tripwire.
- ``compact_to_fit`` (``router_rust/invoke/endpoints.py``), which LiteLLM's Router awaits on every attempt
  (chat completions, Messages, Responses and Gemini's generate content; retries and fallback hops alike) with
  the deployment it picked and the kwargs it is about to send: wrapped, so that a gateway call's attempt is
  adapted to its deployment (``Call.adapt``); another Router's passes untouched. LiteLLM's own hook for this
  (``async_pre_call_deployment_hook``) would have to be a global callback, which makes every LiteLLM call of
  the process pay LiteLLM's logging (~2 ms of CPU a call).
- ``StreamAttempt.fallback`` and ``.retry`` (``router_rust/invoke/streaming.py``), the Router's recovery of a
  stream that broke: refused once something of the answer reached the client (``Call.relayed``), so a client
  holding part of one answer is never handed the rest of another.

And, for one Router at a time: ``count_cooldowns`` wraps its core's ``cooldown_event`` (called once per
deployment put in cooldown), ``keep_own_price_map`` takes it out of LiteLLM's price-map replay, and
``forget_price_lookups`` calls the private function LiteLLM calls after changing its price map.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import httpx
import litellm
import structlog
from aiohttp import web
from litellm.exceptions import MidStreamFallbackError
from litellm.llms.custom_httpx import http_handler
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, blocked_cookie_jar
from litellm.llms.openai.common_utils import BaseOpenAILLM
from litellm.router_rust.invoke import endpoints, streaming
from litellm.router_rust.surface.replay import untrack_live_registry

from aiohttp_memproxy import logs
from aiohttp_memproxy.llm import rust
from aiohttp_memproxy.outbound.call import CALL

log = structlog.get_logger()

VERIFIED_ON = "1.110.2"
LITELLM_VERSION = metadata.version("litellm")
SELF_CHECK_PROVIDER = "memproxy-seam-self-check"
# Clients LiteLLM keeps as module attributes, outside its client cache (built by the factories on first use).
MODULE_CLIENTS = ("module_level_aclient", "module_level_client")
MISSING = object()


def configure() -> None:
    """LiteLLM's process-wide switches, as every gateway call needs them."""
    logs.adopt_library_loggers()
    # LiteLLM prints a "Give Feedback" banner to stdout on every exception: our log line says what happened.
    litellm.suppress_debug_info = True
    # /v1/messages to an OpenAI upstream: translated to chat completions (what OpenAI-compatible servers
    # speak), not to the Responses API that LiteLLM picks for openai/ by default.
    litellm.use_chat_completions_url_for_anthropic_messages = True
    # LiteLLM submits every stream chunk to a thread pool for its success callbacks; the gateway registers
    # none (its own log line and metrics say what happened), so that is CPU and GIL time for nothing.
    litellm.disable_streaming_logging = True
    # Token counting for some models (groq/, together_ai/ llama) would download a HuggingFace tokenizer on
    # the request path (retrying ~23 s offline); LiteLLM's own offline switch makes it use its bundled
    # tiktoken.
    litellm.disable_hf_tokenizer_download = True
    # Messages to gemini/: LiteLLM would turn Claude Code's cache_control into a call to Gemini's
    # context-caching API (creating cached content, another endpoint) before the request; Gemini caches
    # prefixes implicitly.
    litellm.disable_anthropic_gemini_context_caching_transform = True


configure()


class SeamError(RuntimeError):
    """LiteLLM's internals are not where the seam expects them: the gateway must not start."""


class Dispatch(httpx.AsyncBaseTransport):
    """The transport every client LiteLLM builds gets: sends through the current gateway call's transport."""

    def __init__(self, seam: _Installed) -> None:
        self._seam = seam

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        call = CALL.get()
        if call is None:
            self._seam.escapes += 1
            log.error("litellm_request_outside_gateway_call", host=request.url.host)
            raise httpx.ConnectError("refused: a LiteLLM request outside a gateway call", request=request)
        return await call.transport.handle_async_request(request)

    async def aclose(self) -> None:
        """Holds nothing: the transports it dispatches to are owned by their apps."""


@dataclass
class _Installed:
    """What was replaced, to put it back when the last app goes."""

    originals: dict[tuple[Any, str], Any] = field(default_factory=dict)
    users: int = 0
    escapes: int = 0


# Process-wide, as LiteLLM's classes are. Nothing app-specific lives here (that is the call's).
_SEAM = _Installed()


def escapes() -> int:
    """Requests LiteLLM tried to send outside a gateway call since this process started."""
    return _SEAM.escapes


def _targets() -> tuple[type, type, Any]:
    """LiteLLM's two factory owners and its client cache, or SeamError naming what moved."""
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
    if not callable(vars(endpoints).get("compact_to_fit")):
        missing.append("litellm.router_rust.invoke.endpoints.compact_to_fit")
    missing += [
        f"StreamAttempt.{name}"
        for name in ("fallback", "retry")
        if not callable(vars(streaming.StreamAttempt).get(name))
    ]
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    if cache is None or not callable(getattr(cache, "flush_cache", None)):
        missing.append("litellm.in_memory_llm_clients_cache.flush_cache")
    if missing:
        raise SeamError(_moved("missing " + ", ".join(missing)))
    return AsyncHTTPHandler, BaseOpenAILLM, cache


def _moved(what: str) -> str:
    return (
        f"LiteLLM {LITELLM_VERSION}'s HTTP client factories are not as verified on "
        f"{VERIFIED_ON} ({what}): refusing to start a gateway whose upstream calls would not keep cookies"
    )


async def _adapted_attempt(
    ctx: Any, deployment: Mapping[str, Any], payload: Mapping[str, Any], surface: Any
) -> Mapping[str, Any]:
    """LiteLLM's ``compact_to_fit``, then the attempt made right for the deployment the Router picked, if it
    is the gateway call's own Router (``ctx``, LiteLLM's RoutingContext, says whose attempt it is)."""
    original: Callable[..., Awaitable[Mapping[str, Any]]] = _SEAM.originals[(endpoints, "compact_to_fit")]
    found = await original(ctx, deployment, payload, surface)
    call = CALL.get()
    if call is None or call.adapt is None or call.router is None or not ctx.belongs_to(call.router.litellm):
        return found  # another Router's call
    model = call.router.deployments.get(str((deployment.get("model_info") or {}).get("id")))
    if model is None:
        return found
    call.tried.append(model)
    call.litellm_model = str(found.get("model") or model.litellm_model)  # a wildcard's, filled in
    kwargs = dict(found)
    call.adapt(model, kwargs)
    return kwargs


def _relayed_error(trigger: BaseException) -> BaseException | None:
    """The error a gateway call's stream ends with when part of it already reached the client, else None."""
    call = CALL.get()
    if call is None or not call.relayed:
        return None
    if isinstance(trigger, MidStreamFallbackError) and trigger.original_exception is not None:
        return trigger.original_exception
    return trigger


async def _stream_fallback(attempt: Any, trigger: BaseException, *args: Any, **kwargs: Any) -> object:
    """LiteLLM's fallback walk for a broken stream, unless the client already holds part of it."""
    relayed = _relayed_error(trigger)
    if relayed is not None:
        raise relayed
    original = _SEAM.originals[(streaming.StreamAttempt, "fallback")]
    return await original(attempt, trigger, *args, **kwargs)


async def _stream_retry(attempt: Any, trigger: BaseException, *args: Any, **kwargs: Any) -> object:
    """LiteLLM's same-group retry of a broken stream, unless the client already holds part of it (a retry
    that fails answers with the newest failure: here, the trigger itself)."""
    if _relayed_error(trigger) is not None:
        return trigger
    original = _SEAM.originals[(streaming.StreamAttempt, "retry")]
    return await original(attempt, trigger, *args, **kwargs)


def _install() -> None:
    handler_cls, openai_cls, cache = _targets()
    rust.python_only()  # LITELLM_RUST still wins: providers.unservable refuses what it turns on
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

    replacements: list[tuple[Any, str, Any]] = [
        (handler_cls, "create_client", create_client),
        (handler_cls, "create_async_transport", staticmethod(create_async_transport)),
        (handler_cls, "_create_async_transport", staticmethod(create_async_transport)),
        (openai_cls, "_get_async_http_client", staticmethod(get_async_http_client)),
        (endpoints, "compact_to_fit", _adapted_attempt),
        (streaming.StreamAttempt, "fallback", _stream_fallback),
        (streaming.StreamAttempt, "retry", _stream_retry),
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
    # Looked up at call time, as LiteLLM's modules call it.
    handler = http_handler.get_async_httpx_client(llm_provider=SELF_CHECK_PROVIDER)
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
    rust.back_to_default()
    with contextlib.suppress(SeamError):
        _forget_clients(_targets()[2], litellm)  # clients holding Dispatch must not outlive the seam


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
    """Cleanup context: LiteLLM hands out our transport, and adapts the Router's attempts, while this app
    runs."""
    with installed():
        log.debug("litellm_seam_installed", litellm=LITELLM_VERSION, verified_on=VERIFIED_ON)
        yield


def count_cooldowns(router: Any, counted: Callable[[str], None]) -> None:
    """``counted(deployment_id)`` each time ``router`` puts a deployment in cooldown: its core's
    ``cooldown_event`` runs once per cooldown written (``router_rust/core.py``), and LiteLLM's own cooldown
    event reaches only a global Prometheus logger of its own."""
    core = router._core
    event = core.cooldown_event

    def counting(model_id: str, *args: Any, **kwargs: Any) -> Any:
        result = event(model_id, *args, **kwargs)
        counted(model_id)
        return result

    core.cooldown_event = counting


def keep_own_price_map(router: Any) -> None:
    """Out of LiteLLM's replay of every live Router's price-map registrations when its map is refreshed
    (``register_model`` among others), which would undo ``pricing.kept_price_map``."""
    untrack_live_registry(router._core._registry_state)


def forget_price_lookups() -> None:
    """What LiteLLM calls after changing its price map (``register_model``): its lookups are cached
    (``get_model_info``'s among them) and would go on answering from the map as it was."""
    litellm.utils._invalidate_model_cost_lowercase_map()
