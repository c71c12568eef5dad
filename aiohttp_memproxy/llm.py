"""The calls into LiteLLM: chat completions, Messages, count_tokens, and the clients they get.

Every HTTP request LiteLLM makes goes through our transport: the clients LiteLLM builds for itself get it
from the seam (``litellm_seam``), which sends through the transport this module makes current before each
call. Per-call clients stay where LiteLLM honours them and they add something: ``openai/`` gets an
``AsyncOpenAI`` (one per api_base and key, ``max_retries=0``: retries are the transport's), ``anthropic/``
a handler that restores the client's own ``anthropic-beta`` bytes. Failures become ProxyError through
``llm_errors``, which is told whether anything left the gateway.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map at import

import asyncio
import contextlib
import importlib.util
from collections import OrderedDict
from collections.abc import AsyncGenerator, Collection, Iterator, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Literal

import httpx
import litellm
import openai
import structlog
from litellm.anthropic_interface import messages as anthropic_messages
from litellm.constants import openai_compatible_providers
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, blocked_cookie_jar
from litellm.llms.openai.common_utils import is_openai_backed_api_base
from litellm.types.utils import shared_backend_model_info
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming

from aiohttp_memproxy import errors, llm_router, logs, sse, usage
from aiohttp_memproxy.litellm_seam import CURRENT
from aiohttp_memproxy.llm_errors import UPSTREAM_ERRORS, cooling_down, to_proxy_error, untranslatable_stream
from aiohttp_memproxy.llm_router import CALL, Call, GatewayRouter
from aiohttp_memproxy.models import ResolvedModel
from aiohttp_memproxy.routing import MemoryRouter, RoutingDecision
from aiohttp_memproxy.settings import ConfigError, ModelConfig, Settings
from aiohttp_memproxy.transport import (
    OUTBOUND,
    TAKE_USAGE_HEADER,
    AiohttpTransport,
    Outbound,
    PinnedHeaders,
)

log = structlog.get_logger()

logs.adopt_library_loggers()
# LiteLLM prints a "Give Feedback" banner to stdout on every exception: our log line says what happened.
litellm.suppress_debug_info = True
# /v1/messages to an OpenAI upstream: translate to chat completions (what OpenAI-compatible servers speak),
# not to the Responses API that LiteLLM picks for openai/ by default.
litellm.use_chat_completions_url_for_anthropic_messages = True
# LiteLLM submits every stream chunk to a thread pool for its success callbacks; this gateway registers
# none (its own log line and metrics say what happened), so that is CPU and GIL time for nothing.
litellm.disable_streaming_logging = True
# Token counting for some models (groq/, together_ai/ llama) would download a HuggingFace tokenizer on the
# request path (retrying ~23 s offline); LiteLLM's own offline switch makes it use its bundled tiktoken.
litellm.disable_hf_tokenizer_download = True
# Messages to gemini/: LiteLLM would turn Claude Code's cache_control into a call to Gemini's context-caching
# API (creating cached content, another endpoint) before the request; Gemini caches prefixes implicitly.
litellm.disable_anthropic_gemini_context_caching_transform = True

# Providers given a per-call client (read in litellm/main.py): the OpenAI SDK path takes an AsyncOpenAI, the
# base_llm_http_handler path an AsyncHTTPHandler. Every other provider gets its client from the seam.
CLIENT_KIND = {"openai": "openai_sdk", "anthropic": "http_handler", "hosted_vllm": "http_handler"}
# Providers LiteLLM 1.106.2 serves only with a package it does not require (module, distribution).
NEEDS_PACKAGE = {"vertex_ai": ("google.auth", "google-auth")}
# Providers whose LiteLLM path opens an HTTP session of its own, around any transport (1.106.2): serving them
# would drop the cookie jar, so they are refused, naming the provider that serves the same API.
OWN_SESSION = {"aiohttp_openai": "openai"}
# LiteLLM's own test for an azure/ api_base on Cloudflare AI Gateway (llms/azure/azure.py, 1.106.2).
CLOUDFLARE_AI_GATEWAY = "gateway.ai.cloudflare.com"
# What a client may set in a chat request: OpenAI's own parameters (from the SDK, so new ones follow it),
# plus LiteLLM extensions IDE clients use. Never api_key/api_base/client: a client must not redirect our key.
CLIENT_PARAMS = (frozenset(CompletionCreateParamsStreaming.__annotations__) | {"thinking", "top_k"}) - {
    "model"
}
# What a client may set in a Responses request: the SDK's own parameters (input included), never the model's
# credentials or client.
RESPONSES_PARAMS = frozenset(ResponseCreateParamsStreaming.__annotations__) - {"model"}
# What a client may set in a Messages request (Anthropic's API reference), model and max_tokens aside.
MESSAGES_PARAMS = frozenset(
    {
        "messages",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "top_k",
        "tools",
        "tool_choice",
        "thinking",
        "service_tier",
        "container",
        "context_management",
        "mcp_servers",
        "output_format",
        "output_config",
    }
)
# Forwarded byte for byte to an Anthropic upstream (LiteLLM would sort and merge the betas).
ANTHROPIC_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")
DEFAULT_ANTHROPIC_BASE = "https://api.anthropic.com"
MAX_PINNED_HANDLERS = 32
# litellm_params we hand over ourselves, or that LiteLLM must not see as kwargs.
OWN_PARAMS = frozenset({"model", "extra_headers"})
# model_info keys a config may set over LiteLLM's map (custom prices, as on a LiteLLM proxy); LiteLLM
# 1.106.2's shared_backend_model_info strips them before (register_model_info), so none arrives yet.
PRICE_SUFFIXES = ("_cost_per_token", "_cost_per_second", "_cost_per_request", "_token_cost")
LITELLM_VERSION = metadata.version("litellm")
# Providers whose model info LiteLLM asks the model's own server for (a blocking request).
ASKS_SERVER = ("ollama/", "ollama_chat/")
# Marks a price-map entry this gateway registered for a model LiteLLM did not know (LiteLLM ignores the key).
ASSUMED = "memproxy_assumed"
# Models whose LiteLLM knowledge is remembered (wildcards resolve to any name a client sends): bounded.
MAX_KNOWN_MEMO = 1024


def client_kind(provider: str) -> str | None:
    return CLIENT_KIND.get(provider)


def _assumed(litellm_model: str) -> bool:
    """Whether the price map's entry for this model is one we registered for a model LiteLLM does not know."""
    return bool((litellm.model_cost.get(litellm_model) or {}).get(ASSUMED))


def _known_info(litellm_model: str) -> dict[str, Any] | None:
    """What LiteLLM's price map says of this model, or None when it does not know it (an entry we registered
    for an unknown model, in this process, by any app, is not knowledge)."""
    if _assumed(litellm_model):
        return None
    if litellm_model.startswith(ASKS_SERVER):  # LiteLLM would ask the model's server, blocking, at startup
        return None
    try:
        info = litellm.get_model_info(litellm_model)
    except Exception:  # LiteLLM raises a bare Exception for a model its map lacks
        return None
    # A guess from the name (LiteLLM's capability rules: "o3-...", "gpt-5...") is not knowledge of a model.
    return None if litellm.utils.is_generalized_model_info(info) else dict(info)


def register_model_info(model: ModelConfig) -> None:
    """What LiteLLM's Router does with each deployment of a config: its ``model_info`` (the fields the price
    map knows) into ``litellm.model_cost`` under its ``provider/name``. A model the map lacks then costs a
    lookup, not a raised and logged exception in LiteLLM's bookkeeping after every call.

    What the map already says is kept: a responses-only model (``mode: responses``) must stay one, or
    LiteLLM sends it to chat completions, which its upstream refuses. The config fills in what the map
    lacks; ``mode: chat`` is assumed only for an unknown model. Its prices do not get here: LiteLLM 1.106.2's
    ``shared_backend_model_info`` keeps per-deployment prices out of the shared entry (its Router registers
    them under the deployment's id, which the gateway takes back: llm_router._PriceMap).
    """
    if model.is_wildcard:
        return
    info = shared_backend_model_info(dict(model.info))
    known = _known_info(model.litellm_model)
    if known is None:
        entry: dict[str, Any] = {"litellm_provider": model.provider, "mode": "chat", **info, ASSUMED: True}
        if _assumed(model.litellm_model):
            # Ours already (another deployment of the model, an earlier config): replaced as is. Registered
            # again, LiteLLM 1.106.2 would merge it into a generalized entry of ~165 empty fields, which its
            # zero-cost diagnostic then scans after every call of the model (~1.6 ms, measured).
            litellm.model_cost[model.litellm_model] = entry
            return
    else:
        entry = {
            key: value
            for key, value in info.items()
            if known.get(key) is None or key.endswith(PRICE_SUFFIXES)
        }
        if not entry:
            return
    litellm.register_model(model_cost={model.litellm_model: entry}, persist_across_reloads=False)


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def provider_errors(settings: Settings) -> list[str]:
    """Models whose provider LiteLLM cannot serve: refused at startup, named by their key path."""
    found = []
    for index, model in enumerate(settings.models):
        if model.provider in OWN_SESSION:
            found.append(
                f"model_list[{index}].litellm_params.model: LiteLLM sends {model.provider}/ through an HTTP "
                f"session of its own, around the cookie jar: use {OWN_SESSION[model.provider]}/ "
                f"(model {model.name!r})"
            )
            continue
        needs = next(
            (need for prefix, need in NEEDS_PACKAGE.items() if model.provider.startswith(prefix)), None
        )
        if needs is not None and not _installed(needs[0]):
            found.append(
                f"model_list[{index}].litellm_params.model: LiteLLM serves {model.provider}/ only with the "
                f"{needs[1]} package, which this gateway does not install (model {model.name!r})"
            )
            continue
        try:
            litellm.get_llm_provider(
                model=model.litellm_model.replace("*", "x"),
                custom_llm_provider=model.params.get("custom_llm_provider"),
            )
        except Exception:  # LiteLLM's BadRequestError, whose text we do not echo
            found.append(
                f"model_list[{index}].litellm_params.model: LiteLLM {LITELLM_VERSION} has no provider "
                f"{model.provider!r} (model {model.name!r})"
            )
    return found


@dataclass(frozen=True)
class Asked:
    """What the client asked, whichever deployment answers it: the route, the parameters handed to LiteLLM,
    the memory user, and the client's own Anthropic headers."""

    route: Literal["chat", "messages", "responses"]
    given: Mapping[str, Any]
    decision: RoutingDecision | None = None
    client_headers: Mapping[str, str] = field(default_factory=dict)
    usage_for_ledger: bool = False  # a chat stream whose client did not ask for usage: asked for it here


class LLMClients:
    def __init__(self, settings: Settings, transport: AiohttpTransport) -> None:
        self.settings = settings
        self._transport = transport
        self._http_handler = AsyncHTTPHandler(transport=transport, timeout=settings.litellm.request_timeout)
        self._openai: dict[tuple[str | None, str], openai.AsyncOpenAI] = {}  # AsyncAzureOpenAI is one
        self._pinned: OrderedDict[tuple[tuple[str, str], ...], AsyncHTTPHandler] = OrderedDict()
        self.closed = False
        if not settings.models and settings.proxy.mode == "sdk":
            log.warning("model_list_empty", detail="no model is configured: every model request gets a 404")
        problems = provider_errors(settings)
        if problems:
            raise ConfigError(str(settings.source), problems)
        # Whether LiteLLM's map knew a model before we registered it (registering makes every model known).
        self._known: dict[str, bool] = {}
        self._stream_options: dict[tuple[str, str], bool] = {}
        for model in settings.models:
            if not model.enabled or "mock_response" in model.params:
                continue
            if not model.is_wildcard:
                self._known[model.litellm_model] = _known_info(model.litellm_model) is not None
            register_model_info(model)
            if client_kind(model.provider) == "openai_sdk":
                self._openai_client(model)
        self.routed = llm_router.routed_groups(settings)
        self._alternatives = llm_router.with_alternatives(settings)
        try:
            self.router: GatewayRouter | None = llm_router.build(settings)
        except (ValueError, TypeError) as exc:  # LiteLLM's judgment of router_settings, its text not echoed
            refused = f"router_settings: LiteLLM's Router refuses them ({type(exc).__name__})"
            raise ConfigError(str(settings.source), [refused]) from None

    def _pinned_handler(self, exact: tuple[tuple[str, str], ...]) -> AsyncHTTPHandler:
        """A handler whose transport restores the client's Anthropic headers (LiteLLM sorts the betas).

        Kept per header set: Claude Code sends the same few sets all day, so this is built once each.
        """
        handler = self._pinned.get(exact)
        if handler is None:
            if len(self._pinned) >= MAX_PINNED_HANDLERS:
                # Bounded: a client that varies its betas endlessly must not grow this without end. A handler
                # holds no connection of its own (its transport is borrowed), so dropping it is enough, and a
                # request still using it finishes unharmed.
                self._pinned.popitem(last=False)
            transport = PinnedHeaders(self._transport, dict(exact))
            handler = AsyncHTTPHandler(transport=transport, timeout=self.settings.litellm.request_timeout)
            self._pinned[exact] = handler
        else:
            self._pinned.move_to_end(exact)
        return handler

    def _openai_client(self, model: ModelConfig) -> openai.AsyncOpenAI:
        api_base = model.params.get("api_base")
        # An OpenAI-compatible local server often needs no key; the SDK insists on one.
        api_key = str(model.params.get("api_key") or "no-key")
        key = (api_base, api_key)
        if key not in self._openai:
            self._openai[key] = openai.AsyncOpenAI(
                base_url=api_base,
                api_key=api_key,
                max_retries=0,  # retries are the transport's, and LiteLLM's num_retries
                http_client=self._httpx_client(),
            )
        return self._openai[key]

    def _azure_gateway_client(self, model: ModelConfig, litellm_model: str) -> openai.AsyncOpenAI:
        """``azure/`` through Cloudflare AI Gateway: LiteLLM 1.106.2 builds that client itself, around its
        factories (``_init_azure_client_for_cloudflare_ai_gateway`` in ``llms/azure/common_utils.py``),
        unless it is given one. Built as LiteLLM builds it (base URL + deployment), over our transport: one
        per base, deployment and key."""
        params = model.params
        base = str(params["api_base"]).rstrip("/")
        deployment = litellm_model.partition("/")[2]
        key = (f"{base}/{deployment}#azure", str(params.get("api_key") or ""))
        if key not in self._openai:
            self._openai[key] = openai.AsyncAzureOpenAI(
                base_url=f"{base}/{deployment}",
                api_version=str(params.get("api_version") or litellm.AZURE_DEFAULT_API_VERSION),
                api_key=key[1] or None,
                azure_ad_token=params.get("azure_ad_token"),
                max_retries=0,
                http_client=self._httpx_client(),
            )
        return self._openai[key]

    def _httpx_client(self) -> httpx.AsyncClient:
        """For an SDK client: our transport; cookies are the session's jar, so httpx keeps none of its own
        (LiteLLM's blocked jar); timeouts are the session's (connect, sock_read), none of httpx's on top."""
        return httpx.AsyncClient(transport=self._transport, timeout=None, cookies=blocked_cookie_jar())  # noqa: S113

    def _client(self, model: ModelConfig, litellm_model: str) -> Any:
        if "mock_response" in model.params:
            return None  # answered inside LiteLLM, no HTTP
        if model.provider == "azure" and CLOUDFLARE_AI_GATEWAY in str(model.params.get("api_base") or ""):
            return self._azure_gateway_client(model, litellm_model)
        match client_kind(model.provider):
            case "openai_sdk":
                return self._openai_client(model)
            case "http_handler":
                return self._http_handler
        return None  # LiteLLM builds one, from the seam: our transport all the same

    @contextlib.contextmanager
    def _call(self, model: str, sent: Collection[str]) -> Iterator[None]:
        """Around one call into LiteLLM: our transport current for its clients, and its failures as ours.
        ``sent``: the parameters of the client's request that were handed to LiteLLM.

        What LiteLLM raises before any request left is said as such (``llm_errors.local_error``: the
        client's request, or the gateway's own failure). After a request left, LiteLLM's and httpx's errors
        are the upstream's; anything else is a bug of ours or LiteLLM's, left to aiohttp's 500.
        """
        CURRENT.set(self._transport)
        CALL.set(None)  # a Router call sets its own
        outbound = Outbound()
        OUTBOUND.set(outbound)
        try:
            yield
        except Exception as exc:
            cooling = cooling_down(exc, model)
            if cooling is not None:
                raise cooling from exc
            if outbound.attempts and not isinstance(exc, UPSTREAM_ERRORS):
                raise
            raise to_proxy_error(exc, model, left=outbound.attempts > 0, sent=sent) from exc

    def _direct(self, resolved: ResolvedModel, asked: Asked) -> dict[str, Any]:
        """The kwargs of a direct call: the one deployment's litellm_params and defaults, what the client
        asked, adapted to that deployment."""
        model = resolved.config
        structlog.contextvars.bind_contextvars(deployment=model.where, fallback=False)
        params = {key: value for key, value in model.params.items() if key not in OWN_PARAMS}
        kwargs: dict[str, Any] = {
            "timeout": self.settings.litellm.request_timeout,
            "num_retries": self.settings.litellm.num_retries,
            **params,
            **asked.given,
            "model": resolved.litellm_model,
        }
        self._adapt(model, asked, kwargs)
        return kwargs

    def _adapt(self, model: ModelConfig, asked: Asked, kwargs: dict[str, Any]) -> None:
        """``kwargs`` made right for ``model``, the deployment about to be called (in place): its headers
        (memory headers only where it is served through Supermemory), the client its provider takes, and a
        Messages request made translatable for a provider that is not Anthropic. The Router's attempts call
        this for each deployment it tries, so a fallback or another deployment gets its own."""
        litellm_model = str(kwargs.get("model") or model.litellm_model)
        if asked.route != "messages":  # Messages to Anthropic passes through; to others, _translatable
            kwargs.setdefault("drop_params", self.settings.litellm.drop_params)
        extra_headers = {
            **model.params.get("extra_headers", {}),
            **(MemoryRouter.memory_headers(model, asked.decision) if asked.decision is not None else {}),
        }
        client = self._client(model, litellm_model)
        if asked.route == "messages" and model.provider == "anthropic":
            exact = tuple(
                (name, asked.client_headers[name])
                for name in ANTHROPIC_CLIENT_HEADERS
                if name in asked.client_headers
            )
            extra_headers.update(exact)
            if exact:
                client = self._pinned_handler(exact)
        elif asked.route == "messages":
            self._translatable(model, litellm_model, kwargs)
        if asked.usage_for_ledger and self._ask_stream_usage(model, kwargs):
            extra_headers[TAKE_USAGE_HEADER] = "1"  # the transport takes the usage chunk out, and reads it
        if asked.route == "responses" and "mock_response" in model.params:
            # LiteLLM's mock answers whole and cannot stream it (1.106.2): a stream is made of the answer.
            kwargs["stream"] = False
        if extra_headers:
            kwargs["extra_headers"] = extra_headers
        else:
            kwargs.pop("extra_headers", None)
        if client is not None:
            kwargs["client"] = client
        else:
            kwargs.pop("client", None)  # not one the Router cached for another purpose: the seam's

    async def _routed(
        self, resolved: ResolvedModel, asked: Asked, method: str, record: usage.Record | None
    ) -> Any:
        """A call through the Router: each attempt is adapted to its deployment (llm_router._AttemptSeam)."""
        assert self.router is not None
        call = Call(
            self.router, resolved.config.name, lambda model, attempt: self._adapt(model, asked, attempt)
        )
        # Left set for the rest of the request: the Router's stream may fall back while it is relayed (before
        # its first byte reaches the client), and the attempts and the guard look here.
        CALL.set(call)
        outbound = OUTBOUND.get()
        if outbound is not None and resolved.config.name in self._alternatives:
            outbound.backoff = False
        try:
            return await getattr(self.router, method)(
                model=resolved.router_model, **asked.given, **self.router.callbacks()
            )
        finally:
            self._attribute(call, record)

    @staticmethod
    def _attribute(call: Call | None, record: usage.Record | None = None) -> None:
        """The log line (and the ledger) names the deployment that answered, and whether a fallback
        happened; its model is what the usage is priced as."""
        if call is None or call.deployment is None:
            return
        answering = call.deployment
        structlog.contextvars.bind_contextvars(deployment=answering.where, fallback=call.fallback)
        if record is not None:
            record.litellm_model = call.litellm_model or answering.litellm_model
            record.provider = answering.provider

    def _through_router(self, resolved: ResolvedModel) -> bool:
        return self.router is not None and resolved.config.name in self.routed

    async def chat(
        self,
        resolved: ResolvedModel,
        request: Mapping[str, Any],
        decision: RoutingDecision,
        record: usage.Record | None = None,
        usage_for_ledger: bool = False,
    ) -> Any:
        """``acompletion``: a ModelResponse, or a CustomStreamWrapper when ``stream`` is set."""
        given = {key: value for key, value in request.items() if key in CLIENT_PARAMS}
        asked = Asked("chat", given, decision, usage_for_ledger=usage_for_ledger)
        with self._call(resolved.config.name, given):
            if self._through_router(resolved):
                return await self._routed(resolved, asked, "acompletion", record)
            return await litellm.acompletion(**self._direct(resolved, asked))

    async def responses(
        self,
        resolved: ResolvedModel,
        request: Mapping[str, Any],
        decision: RoutingDecision,
        record: usage.Record | None = None,
    ) -> Any:
        """``aresponses``: a ResponsesAPIResponse, or an iterator of its stream events. Native where
        LiteLLM has the upstream's Responses API (openai/, azure/, xai/, openrouter/, hosted_vllm/, ...),
        bridged to chat completions or Messages elsewhere; either way over our transport."""
        given = {key: value for key, value in request.items() if key in RESPONSES_PARAMS}
        asked = Asked("responses", given, decision)
        with self._call(resolved.config.name, given):
            if self._through_router(resolved):
                return await self._routed(resolved, asked, "aresponses", record)
            return await litellm.aresponses(**self._direct(resolved, asked))

    @staticmethod
    async def response_events(
        stream: Any, model_name: str, record: usage.Record | None = None
    ) -> AsyncGenerator[bytes, None]:
        """Each event of a Responses stream as SSE, as it arrives; errors mid-stream become ProxyError. The
        usage of ``response.completed`` goes to ``record``."""
        if not hasattr(stream, "__aiter__"):  # answered whole (mock_response): the client still gets events
            answer = stream.model_dump(mode="json", exclude_none=True)
            if record is not None:
                record.tokens = usage.responses(answer.get("usage"))
            for frame in sse.response_object_events(answer):
                yield frame
            return
        async with contextlib.aclosing(_items(stream, model_name, record)) as events:
            async for event in events:
                data = event.model_dump(mode="json", exclude_none=True)
                if record is not None and data.get("type") == "response.completed":
                    found = (data.get("response") or {}).get("usage")
                    record.later = usage.read_later(usage.responses, found)
                yield sse.responses_event(data)

    async def messages(
        self,
        resolved: ResolvedModel,
        request: Mapping[str, Any],
        decision: RoutingDecision,
        client_headers: Mapping[str, str],
        record: usage.Record | None = None,
    ) -> Any:
        """``litellm.anthropic.messages.acreate``: the message as a dict, or an iterator of SSE bytes.

        Anthropic upstreams get the client's ``anthropic-version``/``anthropic-beta`` unchanged and their
        events pass through as bytes; other upstreams go through LiteLLM's translation (to chat completions,
        or to the Responses API for an OpenAI reasoning or responses-only model).
        """
        given = {key: value for key, value in request.items() if key in MESSAGES_PARAMS}
        given["max_tokens"] = request["max_tokens"]
        asked = Asked("messages", given, decision, client_headers)
        with self._call(resolved.config.name, given):
            if self._through_router(resolved):
                result = await self._routed(resolved, asked, "aanthropic_messages", record)
            else:
                result = await anthropic_messages.acreate(**self._direct(resolved, asked))
        if isinstance(result, dict):
            result.pop("_hidden_params", None)  # the Router's bookkeeping, not part of the message
        return result

    def _translatable(self, model: ModelConfig, litellm_model: str, kwargs: dict[str, Any]) -> None:
        """A Messages request for another provider, as its client sent it (Claude Code cannot adapt its
        request to the model behind an alias): what the target cannot take is dropped or mapped, never a
        failure. Read in LiteLLM 1.106.2's Messages adapter (llms/anthropic/pass_through/adapters)."""
        # LiteLLM maps thinking to reasoning_effort, context_management to its own polyfill; the rest of
        # what a target lacks it drops instead of raising UnsupportedParamsError.
        kwargs["drop_params"] = True
        # Anthropic's metadata.user_id (Claude Code's device, account and session ids as JSON) would become
        # OpenAI's `user`, uncapped on the chat path: it is Anthropic's, and stays with Anthropic upstreams.
        kwargs.pop("metadata", None)
        # LiteLLM sends an openai/ model with thinking to the Responses API unless the map says it cannot
        # reason. An OpenAI-compatible server LiteLLM does not know speaks chat completions for certain: it
        # gets the request without thinking, unless its model_info says supports_reasoning: true.
        if (
            model.provider == "openai"
            and "thinking" in kwargs
            and not self._knows(litellm_model)
            and model.info.get("supports_reasoning") is not True
        ):
            del kwargs["thinking"]

    def _knows(self, litellm_model: str) -> bool:
        known = self._known.get(litellm_model)
        if known is None:
            known = _known_info(litellm_model) is not None
            if len(self._known) < MAX_KNOWN_MEMO:
                self._known[litellm_model] = known
        return known

    @staticmethod
    async def events(
        stream: Any, model: ModelConfig, record: usage.Record | None = None
    ) -> AsyncGenerator[bytes, None]:
        """The SSE bytes of a Messages stream as they arrive; errors mid-stream become ProxyError.

        From an Anthropic upstream every event passes as is, its own ``event: error`` included. LiteLLM's
        translation reports a failure as an ``event: error`` of its own whose text is LiteLLM's: that one
        becomes our error.
        """
        call = CALL.get()
        answering = call.deployment if call is not None and call.deployment is not None else model
        translated = answering.provider != "anthropic"
        if isinstance(stream, dict):  # answered whole (mock_response): the client still gets events
            if record is not None:
                record.tokens = usage.anthropic(stream.get("usage"))
            for frame in sse.anthropic_message_events(stream):
                yield frame
            return
        reader = usage.AnthropicStreamUsage() if record is not None else None
        if reader is not None and record is not None:
            record.later = reader.read  # what the stream said of its usage, read when the row is made
        async with contextlib.aclosing(_items(stream, model.name, record)) as items:
            async for data in items:
                frame = data if isinstance(data, bytes) else str(data).encode()
                if reader is not None:
                    reader.feed(frame)
                if translated and frame.startswith(b"event: error"):
                    raise errors.UpstreamUnreachable(
                        f"model {model.name!r}: the upstream could not be reached or broke off"
                    )
                yield frame

    async def count_tokens(
        self,
        resolved: ResolvedModel,
        request: Mapping[str, Any],
        decision: RoutingDecision,
        client_headers: Mapping[str, str],
    ) -> dict[str, Any]:
        """Anthropic upstreams count (forwarded, same session and jar); others are counted here by LiteLLM.
        A group of several deployments counts with its first one not in cooldown: a count is an estimate of
        the input, the same for every deployment of one model."""
        model = self._counting(resolved.config)
        litellm_model = resolved.litellm_model if model is resolved.config else model.litellm_model
        headers = MemoryRouter.memory_headers(model, decision)
        if model.provider != "anthropic":
            messages = list(request.get("messages") or [])
            if isinstance(request.get("system"), str):
                messages.insert(0, {"role": "system", "content": request["system"]})
            with self._call(model.name, ["messages", "system"]):
                count = litellm.token_counter(model=litellm_model, messages=messages)
            return {"input_tokens": int(count)}
        base = str(model.params.get("api_base") or DEFAULT_ANTHROPIC_BASE).rstrip("/")
        url = base if base.endswith("/v1/messages/count_tokens") else f"{base}/v1/messages/count_tokens"
        upstream_headers = {
            "content-type": "application/json",
            "anthropic-version": client_headers.get("anthropic-version", "2023-06-01"),
            **(
                {"anthropic-beta": client_headers["anthropic-beta"]}
                if "anthropic-beta" in client_headers
                else {}
            ),
            **model.params.get("extra_headers", {}),
            **headers,
        }
        if model.params.get("api_key"):
            upstream_headers["x-api-key"] = str(model.params["api_key"])
        body = {**request, "model": litellm_model.partition("/")[2] or litellm_model}
        with self._call(model.name, list(request)):
            response = await self._http_handler.post(url, json=body, headers=upstream_headers)
        result: dict[str, Any] = response.json()
        return result

    def _counting(self, model: ModelConfig) -> ModelConfig:
        if self.router is None or model.name not in self.routed:
            return model
        cooling = {cooled.id for cooled, _ in self.router.cooldowns()}
        group = [d for d in self.router.deployments.values() if d.name == model.name]
        return next((d for d in group if d.id not in cooling), model)

    @staticmethod
    async def chunks(
        stream: Any, model_name: str, record: usage.Record | None = None, hide_usage: bool = False
    ) -> AsyncGenerator[str, None]:
        """Each chunk of a LiteLLM stream as OpenAI JSON; errors mid-stream become ProxyError. Its usage goes
        to ``record``; with ``hide_usage`` (the gateway asked for it, the client did not) the usage chunk is
        not relayed, nor a usage field on any other."""
        async with contextlib.aclosing(_items(stream, model_name, record)) as chunks:
            async for chunk in chunks:
                found = getattr(chunk, "usage", None)
                if found is not None and record is not None:
                    record.tokens.merge(usage.openai_chat(found.model_dump()))
                if not hide_usage:
                    yield chunk.model_dump_json(exclude_none=True)
                elif found is None or any(map(_substantive, chunk.choices)):
                    yield chunk.model_dump_json(exclude_none=True, exclude={"usage"})
        if record is None or record.tokens.known:
            return
        outbound = OUTBOUND.get()
        if outbound is not None and outbound.stream_usage is not None and outbound.stream_usage.known:
            record.tokens.merge(outbound.stream_usage)  # the usage chunk the transport took out
            return
        for chunk in reversed(_kept_chunks(stream)):  # the usage-only chunk LiteLLM kept to itself
            found = getattr(chunk, "usage", None)
            if found is not None:
                record.tokens.merge(usage.openai_chat(found.model_dump()))
                return

    def _ask_stream_usage(self, model: ModelConfig, kwargs: dict[str, Any]) -> bool:
        """A chat stream's usage, for the ledger, from a client that did not ask for it (in place); True
        where the upstream is asked in OpenAI's own way, its usage chunk then taken out by the transport.

        An upstream that speaks OpenAI's API is asked in the request body itself (``extra_body``), so that
        LiteLLM does not take it as its caller's wish: asked through ``stream_options``, LiteLLM 1.106.2
        rebuilds the whole answer at the end to report usage (~2.5 ms of CPU a stream, measured). The usage
        chunk is then taken out of the answer's bytes (``usage.ChatUsageTap``) before the OpenAI SDK and
        LiteLLM would parse it, and LiteLLM sees the stream it sees with the ledger off. Other providers
        report usage in their own stream, which LiteLLM turns into a final chunk only when
        ``stream_options`` asks.
        """
        options = {**(kwargs.get("stream_options") or {}), "include_usage": True}
        if model.provider == "openai" or model.provider in openai_compatible_providers:
            if _litellm_asks_openai(model):
                return False  # LiteLLM asks, and relays a usage chunk: chunks() keeps it from the client
            kwargs.pop("stream_options", None)
            kwargs["extra_body"] = {**(kwargs.get("extra_body") or {}), "stream_options": options}
            return True
        if self._takes_stream_options(model, str(kwargs.get("model") or model.litellm_model)):
            kwargs["stream_options"] = options
        return False

    def _takes_stream_options(self, model: ModelConfig, litellm_model: str) -> bool:
        """Whether LiteLLM takes ``stream_options`` for this model (its final chunk then carries usage)."""
        key = (litellm_model, model.provider)
        known = self._stream_options.get(key)
        if known is None:
            try:
                supported = litellm.get_supported_openai_params(
                    model=litellm_model.partition("/")[2] or litellm_model, custom_llm_provider=model.provider
                )
            except Exception:  # LiteLLM's own lookup failing: no usage asked for, the stream unchanged
                supported = None
            known = "stream_options" in (supported or ())
            if len(self._stream_options) < MAX_KNOWN_MEMO:
                self._stream_options[key] = known
        return known

    @staticmethod
    def cost(record: usage.Record) -> float | None:
        """LiteLLM's price of this usage for the model that answered; None where its price map has none."""
        tokens = record.tokens
        if not tokens.known or not record.litellm_model:
            return None
        if _assumed(record.litellm_model):
            # No price known (we registered the model for LiteLLM): not asked, since LiteLLM 1.106.2 explains
            # a zero cost by scanning its price map (zero_cost_diagnostic), ~1.6 ms a request, measured.
            return None
        if record.litellm_cost is not None:  # LiteLLM priced the whole answer itself as it returned it
            return record.litellm_cost
        try:
            prompt, completion = litellm.cost_per_token(
                model=record.litellm_model,
                custom_llm_provider=record.provider or None,
                prompt_tokens=tokens.input or 0,
                completion_tokens=tokens.output or 0,
                cache_read_input_tokens=tokens.cache_read or 0,
                cache_creation_input_tokens=tokens.cache_write or 0,
            )
        except Exception:  # a model LiteLLM has no price for (ModelNotMappedError and kin)
            return None
        return float(prompt) + float(completion)

    async def aclose(self) -> None:
        self.closed = True
        if self.router is not None:
            self.router.discard()
        for handler in (self._http_handler, *self._pinned.values()):
            await handler.close()  # type: ignore[no-untyped-call]  # litellm leaves it untyped
        await asyncio.gather(*(client.close() for client in self._openai.values()))


def _litellm_asks_openai(model: ModelConfig) -> bool:
    """Whether LiteLLM asks this OpenAI-compatible deployment for a chat stream's usage itself: its OpenAI
    handler does for OpenAI's own API (``get_stream_options`` in ``llms/openai/openai.py``, LiteLLM 1.106.2:
    no ``api_base``, or one on api.openai.com), and then relays a usage chunk of its own, built from the
    upstream's. Taking the upstream's out there would leave LiteLLM counting the prompt with a tokenizer, and
    the ledger with its estimate. (No ``api_base`` in the config but OPENAI_BASE_URL in the service's
    environment: LiteLLM asks only if that is OpenAI's; the ledger then has no tokens for such a stream,
    never wrong ones.)"""
    api_base = model.params.get("api_base")
    if api_base is None:
        return model.provider == "openai"
    return is_openai_backed_api_base(str(api_base))


def _kept_chunks(stream: Any) -> list[Any]:
    """The chunks LiteLLM's stream wrapper kept (its own, or, behind the Router's, the wrapped one's)."""
    for holder in (stream, getattr(stream, "model_response", None)):
        chunks = getattr(holder, "chunks", None)
        if isinstance(chunks, list) and chunks:
            return chunks
    return []


def _substantive(choice: Any) -> bool:
    """A stream choice that says something: text, a tool call, a role, a finish reason (LiteLLM's final usage
    chunk has one choice with an empty delta)."""
    delta = getattr(choice, "delta", None)
    said = any(
        getattr(delta, name, None)
        for name in ("content", "tool_calls", "function_call", "role", "reasoning_content")
    )
    return said or getattr(choice, "finish_reason", None) is not None


async def _items(
    stream: Any, model_name: str, record: usage.Record | None = None
) -> AsyncGenerator[Any, None]:
    """The items of a LiteLLM stream as they arrive; a failure mid-stream becomes ProxyError (the upstream's,
    or the gateway's translation); the stream is closed however it ends, its connection given back."""
    call = CALL.get()
    attributed = None
    try:
        async for item in stream:
            if call is not None and call.deployment is not attributed:  # a fallback changed who answers
                attributed = call.deployment
                LLMClients._attribute(call, record)
            yield item
            if call is not None:
                call.relayed = True
    except UPSTREAM_ERRORS as exc:
        raise to_proxy_error(exc, model_name) from exc
    except Exception as exc:
        raise untranslatable_stream(exc, model_name) from exc
    finally:
        close = getattr(stream, "aclose", None)
        if close is not None:
            await close()
