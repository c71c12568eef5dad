"""The only module that imports litellm: per-provider clients over our transport, calls, error mapping.

LiteLLM blocks cookies on every client it builds and caches clients per provider, so it must never build one:
each call gets ours. ``anthropic/`` and ``hosted_vllm/`` (LiteLLM's base_llm_http_handler path) take
``client=AsyncHTTPHandler(transport=...)``; ``openai/`` takes an ``AsyncOpenAI`` whose ``http_client``
uses our transport and whose own ``base_url``/``api_key`` are used: one per (api_base, api_key),
built at startup, closed at shutdown.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # never fetch the price map at import

import asyncio
from collections import OrderedDict
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import httpx
import litellm
import openai
import structlog
from litellm.anthropic_interface import messages as anthropic_messages
from litellm.exceptions import (
    APIConnectionError,
    ContentPolicyViolationError,
    ContextWindowExceededError,
    MidStreamFallbackError,
    Timeout,
)
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler
from litellm.types.utils import shared_backend_model_info
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming

from aiohttp_memproxy import errors, logs, sse
from aiohttp_memproxy.models import ResolvedModel
from aiohttp_memproxy.settings import ModelConfig, Settings
from aiohttp_memproxy.transport import UPSTREAM_STATUS_HEADER, AiohttpTransport, PinnedHeaders

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

# Which client each provider's LiteLLM code path accepts (read in litellm/main.py, proven by the cookie-gate
# tests): the OpenAI SDK path takes an AsyncOpenAI, the base_llm_http_handler path an AsyncHTTPHandler. Any
# other provider would make LiteLLM build its own cookie-less client, so it is refused, never silently used.
CLIENT_KIND = {"openai": "openai_sdk", "anthropic": "http_handler", "hosted_vllm": "http_handler"}
# What a client may set in a chat request: OpenAI's own parameters (from the SDK, so new ones follow it),
# plus LiteLLM extensions IDE clients use. Never api_key/api_base/client: a client must not redirect our key.
CLIENT_PARAMS = (frozenset(CompletionCreateParamsStreaming.__annotations__) | {"thinking", "top_k"}) - {
    "model"
}
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


def client_kind(provider: str) -> str | None:
    return CLIENT_KIND.get(provider)


def register_model_info(model: ModelConfig) -> None:
    """What LiteLLM's Router does with each deployment of a config: its ``model_info`` (the fields the price
    map knows) into ``litellm.model_cost`` under its ``provider/name``. A model the map lacks then costs a
    lookup, not a raised and logged exception in LiteLLM's bookkeeping after every call (and its
    ``model_info`` prices apply, as on a LiteLLM proxy).
    """
    if model.is_wildcard:
        return
    info = shared_backend_model_info(dict(model.info))
    litellm.register_model(
        model_cost={model.litellm_model: {"litellm_provider": model.provider, "mode": "chat", **info}},
        persist_across_reloads=False,
    )


class LLMClients:
    def __init__(self, settings: Settings, transport: AiohttpTransport) -> None:
        self.settings = settings
        self._transport = transport
        self._http_handler = AsyncHTTPHandler(transport=transport, timeout=settings.litellm.request_timeout)
        self._openai: dict[tuple[str | None, str], openai.AsyncOpenAI] = {}
        self._pinned: OrderedDict[tuple[tuple[str, str], ...], AsyncHTTPHandler] = OrderedDict()
        self.closed = False
        for model in settings.models:
            if not model.enabled or "mock_response" in model.params:
                continue
            register_model_info(model)
            if client_kind(model.provider) == "openai_sdk":
                self._openai_client(model)
            elif client_kind(model.provider) is None:
                log.warning("provider_unsupported", model=model.name, provider=model.provider)

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
                # Timeouts are the aiohttp session's (connect, sock_read); none of httpx's on top.
                http_client=httpx.AsyncClient(transport=self._transport, timeout=None),  # noqa: S113
            )
        return self._openai[key]

    def _client(self, model: ModelConfig) -> Any:
        if "mock_response" in model.params:
            return None  # answered inside LiteLLM, no HTTP
        match client_kind(model.provider):
            case "openai_sdk":
                return self._openai_client(model)
            case "http_handler":
                return self._http_handler
        raise errors.NotSupported(
            f"model {model.name!r}: provider {model.provider!r} is not supported by this gateway yet"
        )

    def _kwargs(
        self, resolved: ResolvedModel, request: Mapping[str, Any], headers: Mapping[str, str]
    ) -> dict[str, Any]:
        model = resolved.config
        params = {key: value for key, value in model.params.items() if key not in OWN_PARAMS}
        given = {key: value for key, value in request.items() if key in CLIENT_PARAMS}
        kwargs: dict[str, Any] = {
            "timeout": self.settings.litellm.request_timeout,
            "num_retries": self.settings.litellm.num_retries,
            "drop_params": self.settings.litellm.drop_params,
            **params,
            **given,
            "model": resolved.litellm_model,
        }
        extra_headers = {**model.params.get("extra_headers", {}), **headers}
        if extra_headers:
            kwargs["extra_headers"] = extra_headers
        client = self._client(model)
        if client is not None:
            kwargs["client"] = client
        return kwargs

    async def chat(
        self, resolved: ResolvedModel, request: Mapping[str, Any], headers: Mapping[str, str]
    ) -> Any:
        """``litellm.acompletion``: a ModelResponse, or a CustomStreamWrapper when ``stream`` is set."""
        kwargs = self._kwargs(resolved, request, headers)
        try:
            return await litellm.acompletion(**kwargs)
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise to_proxy_error(exc, resolved.config.name) from exc

    async def messages(
        self,
        resolved: ResolvedModel,
        request: Mapping[str, Any],
        headers: Mapping[str, str],
        client_headers: Mapping[str, str],
    ) -> Any:
        """``litellm.anthropic.messages.acreate``: the message as a dict, or an iterator of SSE bytes.

        Anthropic upstreams get the client's ``anthropic-version``/``anthropic-beta`` unchanged and their
        events pass through as bytes; other upstreams go through LiteLLM's translation to chat completions.
        """
        model = resolved.config
        kwargs = self._kwargs(resolved, {}, headers)
        kwargs.pop("drop_params", None)
        kwargs.update({key: value for key, value in request.items() if key in MESSAGES_PARAMS})
        kwargs["max_tokens"] = request["max_tokens"]
        if model.provider == "anthropic":
            exact = tuple(
                (name, client_headers[name]) for name in ANTHROPIC_CLIENT_HEADERS if name in client_headers
            )
            kwargs["extra_headers"] = {**kwargs.get("extra_headers", {}), **dict(exact)}
            if exact:
                kwargs["client"] = self._pinned_handler(exact)
        try:
            return await anthropic_messages.acreate(**kwargs)
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise to_proxy_error(exc, model.name) from exc

    @staticmethod
    async def events(stream: Any, model: ModelConfig) -> AsyncGenerator[bytes, None]:
        """The SSE bytes of a Messages stream as they arrive; errors mid-stream become ProxyError.

        From an Anthropic upstream every event passes as is, its own ``event: error`` included. LiteLLM's
        translation reports a failure as an ``event: error`` of its own whose text is LiteLLM's: that one
        becomes our error.
        """
        translated = model.provider != "anthropic"
        if isinstance(stream, dict):  # answered whole (mock_response): the client still gets events
            for frame in sse.anthropic_message_events(stream):
                yield frame
            return
        try:
            async for data in stream:
                frame = data if isinstance(data, bytes) else str(data).encode()
                if translated and frame.startswith(b"event: error"):
                    raise errors.UpstreamUnreachable(
                        f"model {model.name!r}: the upstream could not be reached or broke off"
                    )
                yield frame
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise to_proxy_error(exc, model.name) from exc
        finally:
            close = getattr(stream, "aclose", None)
            if close is not None:
                await close()

    async def count_tokens(
        self,
        resolved: ResolvedModel,
        request: Mapping[str, Any],
        headers: Mapping[str, str],
        client_headers: Mapping[str, str],
    ) -> dict[str, Any]:
        """Anthropic upstreams count (forwarded, same session and jar); others are counted here by LiteLLM."""
        model = resolved.config
        if model.provider != "anthropic":
            messages = list(request.get("messages") or [])
            if isinstance(request.get("system"), str):
                messages.insert(0, {"role": "system", "content": request["system"]})
            count = litellm.token_counter(model=resolved.litellm_model, messages=messages)
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
        body = {**request, "model": resolved.litellm_model.partition("/")[2] or resolved.litellm_model}
        try:
            response = await self._http_handler.post(url, json=body, headers=upstream_headers)
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise to_proxy_error(exc, model.name) from exc
        result: dict[str, Any] = response.json()
        return result

    @staticmethod
    async def chunks(stream: Any, model_name: str) -> AsyncGenerator[str, None]:
        """Each chunk of a LiteLLM stream as OpenAI JSON; errors mid-stream become ProxyError."""
        try:
            async for chunk in stream:
                yield chunk.model_dump_json(exclude_none=True)
        except (openai.OpenAIError, httpx.HTTPError) as exc:
            raise to_proxy_error(exc, model_name) from exc
        finally:
            await stream.aclose()

    async def aclose(self) -> None:
        self.closed = True
        for handler in (self._http_handler, *self._pinned.values()):
            await handler.close()  # type: ignore[no-untyped-call]  # litellm leaves it untyped
        await asyncio.gather(*(client.close() for client in self._openai.values()))


def _retry_after(exc: BaseException) -> dict[str, str]:
    """The upstream's Retry-After, wherever LiteLLM kept it; only that header is passed on."""
    response = getattr(exc, "response", None)
    for headers in (
        getattr(exc, "litellm_response_headers", None),
        response.headers if isinstance(response, httpx.Response) else None,
        getattr(exc, "headers", None),
    ):
        if headers:
            value = {str(k).lower(): v for k, v in dict(headers).items()}.get("retry-after")
            if value:
                return {"Retry-After": str(value)}
    return {}


def _chain(exc: BaseException) -> list[BaseException]:
    found: list[BaseException] = []
    seen: BaseException | None = exc
    while seen is not None and len(found) < 16:
        found.append(seen)
        seen = seen.__cause__ or seen.__context__
    return found


def _upstream_status(exc: BaseException) -> int | None:
    """The upstream's own status. LiteLLM re-raises some (a 529, an HTML 502) as 500, but keeps the response
    headers, where our transport wrote the real one; else the deepest status in the exception chain."""
    for error in _chain(exc):
        for headers in (getattr(error, "litellm_response_headers", None), getattr(error, "headers", None)):
            if headers:
                value = {str(k).lower(): v for k, v in dict(headers).items()}.get(UPSTREAM_STATUS_HEADER)
                if value and str(value).isdigit():
                    return int(value)
    found: int | None = None
    for error in _chain(exc):
        status = error.response.status_code if isinstance(error, httpx.HTTPStatusError) else None
        status = status or getattr(error, "status_code", None)
        if isinstance(status, int):
            found = status
    return found


def to_proxy_error(exc: BaseException, model: str) -> errors.ProxyError:
    """One table, most specific first. Messages are ours: LiteLLM's text can carry URLs and keys."""
    # The class and status only: enough to diagnose, nothing that could carry a key.
    log.warning(
        "upstream_error",
        error=type(exc).__name__,
        upstream_status=getattr(exc, "status_code", None),
        cause=type(exc.__cause__).__name__ if exc.__cause__ else None,
    )
    where = f"model {model!r}"
    original = getattr(exc, "original_exception", None)
    if isinstance(exc, MidStreamFallbackError) and isinstance(original, BaseException):
        return to_proxy_error(original, model)  # what broke the stream, not LiteLLM's wrapper
    # Our transport's own errors are the truth about the connection, however LiteLLM wrapped them.
    for error in _chain(exc):
        if isinstance(error, httpx.TimeoutException):
            return errors.UpstreamTimeout(f"{where}: the upstream timed out")
        if isinstance(error, httpx.TransportError):
            return errors.UpstreamUnreachable(f"{where}: the upstream could not be reached or broke off")
    match exc:
        case ContextWindowExceededError():
            return errors.InvalidRequest(
                f"{where}: the request exceeds the model's context window", code="context_length_exceeded"
            )
        case ContentPolicyViolationError():
            return errors.InvalidRequest(f"{where}: the upstream refused the content", code="content_policy")
        case Timeout() | httpx.TimeoutException():
            return errors.UpstreamTimeout(f"{where}: the upstream timed out")
        case APIConnectionError() | httpx.TransportError():
            return errors.UpstreamUnreachable(f"{where}: the upstream could not be reached or broke off")
    # LiteLLM's class does not always match the upstream's status (a 401 can come as BadRequestError):
    # the status decides.
    status = _upstream_status(exc)
    match status:
        case 400 | 422:
            return errors.InvalidRequest(f"{where}: the upstream rejected the request as invalid")
        case 401:
            return errors.AuthenticationFailed(
                f"{where}: the upstream rejected the gateway's credentials", code="upstream_authentication"
            )
        case 403:
            return errors.PermissionDenied(f"{where}: the upstream denied access")
        case 404:
            return errors.NotFound(f"{where}: the upstream does not know this model")
        case 408 | 504:
            return errors.UpstreamTimeout(f"{where}: the upstream timed out")
        case 413:
            return errors.RequestTooLarge(f"{where}: the upstream refused the request as too large")
        case 429:
            return errors.RateLimited(f"{where}: the upstream is rate limiting", headers=_retry_after(exc))
        case 503 | 529:
            return errors.ServiceUnavailable(
                f"{where}: the upstream is unavailable", headers=_retry_after(exc)
            )
    if isinstance(status, int) and 500 <= status <= 599:  # the upstream's own server error, as it was
        return errors.ProxyError(
            f"{where}: the upstream failed (status {status})", status=status, code="upstream_error"
        )
    return errors.UpstreamUnreachable(f"{where}: the upstream failed", code="upstream_error")
