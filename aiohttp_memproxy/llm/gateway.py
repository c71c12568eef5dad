"""The gateway's one door into LiteLLM: a method per API call (chat completions, Messages, count_tokens,
Responses), each one call that LiteLLM makes over our transport.

A call is one ``outbound.call.Call``, set while LiteLLM runs for it (``_call``): the clients LiteLLM builds
send through its transport (``patches.Dispatch``), the transport counts its attempts into the request's
outcome, and its failures become GatewayError through ``llm.errors``, which is told whether anything left the
gateway. A group served through LiteLLM's Router (``router``) has each attempt adapted to its deployment; any
other call goes to its one deployment directly. Streams come back as the client's dialect reads them
(``streams``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, Awaitable, Callable, Collection, Iterator, Mapping
from typing import Any

import litellm
import structlog
from litellm import google_genai
from litellm.anthropic_interface import messages as anthropic_messages
from litellm.google_genai.adapters.transformation import GoogleGenAIAdapter
from litellm.llms.anthropic.messages.adapters.transformation import LiteLLMAnthropicMessagesAdapter

from aiohttp_memproxy.config.settings import ConfigError, ModelConfig, Settings
from aiohttp_memproxy.dialects import anthropic, gemini, openai_chat, responses
from aiohttp_memproxy.errors import InvalidRequest
from aiohttp_memproxy.llm import pricing, providers, router, streams
from aiohttp_memproxy.llm.adapt import (
    CLIENT_PARAMS,
    GEMINI_PARAMS,
    MESSAGES_PARAMS,
    RESPONSES_PARAMS,
    Adapter,
    Asked,
)
from aiohttp_memproxy.llm.clients import ClientPool
from aiohttp_memproxy.llm.errors import UPSTREAM_ERRORS, cooling_down, to_gateway_error
from aiohttp_memproxy.llm.upstream_message import environment_secrets, secrets_of
from aiohttp_memproxy.outbound.call import CALL, Call
from aiohttp_memproxy.outbound.session import Exchange
from aiohttp_memproxy.outbound.transport import AiohttpTransport
from aiohttp_memproxy.resolve.memory import MemoryDecision, memory_headers
from aiohttp_memproxy.resolve.models import ResolvedModel
from aiohttp_memproxy.usage.outcome import Outcome, read_later

log = structlog.get_logger()

DEFAULT_ANTHROPIC_BASE = "https://api.anthropic.com"
# LiteLLM's own translations to chat completions (what a model of another provider receives).
GEMINI_TO_CHAT = GoogleGenAIAdapter()
MESSAGES_TO_CHAT = LiteLLMAnthropicMessagesAdapter()


class Gateway:
    def __init__(self, settings: Settings, transport: AiohttpTransport) -> None:
        self.settings = settings
        self._transport = transport
        self.clients = ClientPool(transport, settings.litellm.request_timeout)
        # LiteLLM reads a provider's key from the environment where litellm_params name none: an upstream's
        # message may echo it, so it is a secret to remove like the config's.
        self._secrets = frozenset(environment_secrets(os.environ))
        self._adapter = Adapter(settings, self.clients)
        self.closed = False
        if not settings.models and settings.gateway.mode == "sdk":
            log.warning("model_list_empty", detail="no model is configured: every model request gets a 404")
        problems = providers.unservable(settings)
        if problems:
            raise ConfigError(str(settings.source), problems)
        for model in settings.models:
            if not model.enabled or "mock_response" in model.params:
                continue
            pricing.register_model_info(model)
            if providers.family(model.provider).client == "openai_sdk":
                self.clients.openai_sdk(model)
        self.routed = router.routed_groups(settings)
        self._alternatives = router.with_alternatives(settings)
        try:
            self.router: router.DeploymentRouter | None = router.build(settings)
        except (ValueError, TypeError) as exc:  # LiteLLM's judgment of router_settings, its text not echoed
            refused = f"router_settings: LiteLLM's Router refuses them ({type(exc).__name__})"
            raise ConfigError(str(settings.source), [refused]) from None

    async def chat(
        self,
        resolved: ResolvedModel,
        request: Mapping[str, Any],
        decision: MemoryDecision,
        outcome: Outcome | None = None,
        exchanges: list[Exchange] | None = None,
    ) -> str | AsyncGenerator[str, None]:
        """``acompletion``: the answer as OpenAI JSON, or, for a stream, its chunks as they come."""
        outcome = outcome or Outcome()
        streaming = request.get("stream") is True
        # A stream's usage comes as its last chunk only when asked for: asked for here, and that chunk kept
        # from a client that did not ask (the ledger needs the tokens; the client gets what it asked for).
        hide_usage = streaming and outcome.metered and not _asked_usage(request)
        given = {key: value for key, value in request.items() if key in CLIENT_PARAMS}
        asked = Asked("chat", given, decision, usage_for_ledger=hide_usage)
        with self._call(resolved, given, outcome, exchanges) as call:
            answer = await self._ask(resolved, asked, call, "acompletion", litellm.acompletion)
        if streaming:
            return streams.chat_chunks(answer, call, hide_usage)
        if outcome.metered:
            outcome.later = read_later(openai_chat.usage, getattr(answer, "usage", None))
            outcome.litellm_cost = pricing.answer_cost(answer)
        text: str = answer.model_dump_json(exclude_none=True, warnings=False)
        return text

    async def messages(
        self,
        resolved: ResolvedModel,
        request: Mapping[str, Any],
        decision: MemoryDecision,
        client_headers: Mapping[str, str],
        outcome: Outcome | None = None,
        exchanges: list[Exchange] | None = None,
    ) -> dict[str, Any] | AsyncGenerator[bytes, None]:
        """``litellm.anthropic.messages.acreate``: the message, or, for a stream, its SSE bytes as they come.

        Anthropic upstreams get the client's ``anthropic-version``/``anthropic-beta`` unchanged and their
        events pass through as bytes; other upstreams go through LiteLLM's translation (to chat completions,
        or to the Responses API for an OpenAI reasoning or responses-only model).
        """
        outcome = outcome or Outcome()
        given = {key: value for key, value in request.items() if key in MESSAGES_PARAMS}
        given["max_tokens"] = request["max_tokens"]
        asked = Asked("messages", given, decision, client_headers)
        with self._call(resolved, given, outcome, exchanges) as call:
            answer = await self._ask(resolved, asked, call, "aanthropic_messages", anthropic_messages.acreate)
        if isinstance(answer, dict):
            answer.pop("_hidden_params", None)  # the Router's bookkeeping, not part of the message
        if request.get("stream") is True:
            return streams.messages_events(answer, call)
        if outcome.metered:
            found = answer.get("usage") if isinstance(answer, dict) else None
            outcome.later = read_later(anthropic.usage, found)
        message: dict[str, Any] = answer
        return message

    async def responses(
        self, resolved: ResolvedModel, request: Mapping[str, Any], decision: MemoryDecision, outcome: Outcome
    ) -> str | AsyncGenerator[bytes, None]:
        """``aresponses``: the response as JSON, or, for a stream, its events as SSE. Native where LiteLLM
        has the upstream's Responses API (openai/, azure/, xai/, openrouter/, hosted_vllm/, ...), bridged to
        chat completions or Messages elsewhere; either way over our transport."""
        given = {key: value for key, value in request.items() if key in RESPONSES_PARAMS}
        if given.get("previous_response_id") is not None:
            self._holding_conversations(resolved)
        asked = Asked("responses", given, decision)
        with self._call(resolved, given, outcome) as call:
            answer = await self._ask(resolved, asked, call, "aresponses", litellm.aresponses)
        if request.get("stream") is True:
            return streams.responses_events(answer, call)
        if outcome.metered:
            outcome.later = read_later(responses.usage, getattr(answer, "usage", None))
        text: str = answer.model_dump_json(exclude_none=True, warnings=False)
        return text

    async def generate_content(
        self,
        resolved: ResolvedModel,
        request: Mapping[str, Any],
        decision: MemoryDecision,
        outcome: Outcome,
        stream: bool,
    ) -> dict[str, Any] | AsyncGenerator[bytes, None]:
        """Google's ``generateContent`` (``litellm.google_genai``): the response, or, for
        ``streamGenerateContent``, its SSE frames as they come. Native to gemini/ and vertex_ai/, translated
        to chat completions for every other provider."""
        given = {key: value for key, value in request.items() if key in GEMINI_PARAMS}
        asked = Asked("gemini", given, decision)
        method, direct = (
            ("agenerate_content_stream", google_genai.agenerate_content_stream)
            if stream
            else ("agenerate_content", google_genai.agenerate_content)
        )
        with self._call(resolved, given, outcome) as call:
            answer = await self._ask(resolved, asked, call, method, direct)
        if stream:
            return streams.gemini_frames(answer, call)
        dump = getattr(answer, "model_dump", None)
        whole: dict[str, Any] = (
            dump(mode="json", exclude_none=True, warnings=False) if callable(dump) else dict(answer)
        )
        whole.pop("_hidden_params", None)  # the Router's bookkeeping (LiteLLM's own error texts among it)
        if outcome.metered:
            outcome.later = read_later(gemini.usage, whole.get("usageMetadata"))
        return whole

    async def count_gemini_tokens(
        self, resolved: ResolvedModel, request: Mapping[str, Any], decision: MemoryDecision, outcome: Outcome
    ) -> dict[str, Any]:
        """Google's ``countTokens``, counted here for every provider: the request translated as LiteLLM
        translates it to chat completions (contents, systemInstruction, tools), counted by LiteLLM's
        tokenizer for the model."""
        given = {key: value for key, value in request.items() if key in GEMINI_PARAMS}
        with self._call(resolved, list(given), outcome):
            rest = {key: value for key, value in given.items() if key not in ("contents", "generationConfig")}
            translated = GEMINI_TO_CHAT.translate_generate_content_to_completion(
                resolved.litellm_model, given.get("contents") or [], given.get("generationConfig"), **rest
            )
            counted = litellm.token_counter(
                model=resolved.litellm_model,
                messages=translated.get("messages") or [],
                tools=translated.get("tools"),
                use_default_image_token_count=True,
            )
        return {"totalTokens": int(counted)}

    async def count_tokens(
        self,
        resolved: ResolvedModel,
        request: Mapping[str, Any],
        decision: MemoryDecision,
        client_headers: Mapping[str, str],
        outcome: Outcome,
    ) -> dict[str, Any]:
        """Anthropic upstreams count (forwarded, same session and jar); others are counted here by LiteLLM.
        A group of several deployments counts with its first one not in cooldown: a count is an estimate of
        the input, the same for every deployment of one model."""
        model = self._counting(resolved.config)
        litellm_model = resolved.litellm_model if model is resolved.config else model.litellm_model
        if model.provider != "anthropic":
            with self._call(resolved, list(request), outcome):
                return {"input_tokens": _count_here(request, model, litellm_model)}
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
            **memory_headers(model, decision),
        }
        if model.params.get("api_key"):
            upstream_headers["x-api-key"] = str(model.params["api_key"])
        body = {**request, "model": litellm_model.partition("/")[2] or litellm_model}
        with self._call(resolved, list(request), outcome) as call:
            call.tried.append(model)  # its key and headers are what an upstream's message must not show
            response = await self.clients.handler.post(url, json=body, headers=upstream_headers)
        result: dict[str, Any] = response.json()
        return result

    @contextlib.contextmanager
    def _call(
        self,
        resolved: ResolvedModel,
        sent: Collection[str],
        outcome: Outcome,
        exchanges: list[Exchange] | None = None,
    ) -> Iterator[Call]:
        """One call into LiteLLM: the call in progress while LiteLLM runs, and its failures as ours.
        ``sent``: the parameters of the client's request that were handed to LiteLLM.

        What LiteLLM raises before any request left is said as such (``llm.errors.local_error``: the
        client's request, or the gateway's own failure). After a request left, LiteLLM's and httpx's errors
        are the upstream's; anything else is a bug of ours or LiteLLM's, left to aiohttp's 500.
        """
        name = resolved.config.name
        call = Call(self._transport, resolved.config, outcome, exchanges=exchanges, secrets=self._secrets)
        before = outcome.attempts
        token = CALL.set(call)
        try:
            yield call
        except Exception as exc:
            cooling = cooling_down(exc, name)
            if cooling is not None:
                raise cooling from exc
            left = outcome.attempts > before
            if left and not isinstance(exc, UPSTREAM_ERRORS):
                raise
            secrets = secrets_of([call.group, *call.tried]) | call.secrets
            raise to_gateway_error(exc, name, left=left, sent=sent, secrets=secrets) from exc
        finally:
            CALL.reset(token)

    async def _ask(
        self,
        resolved: ResolvedModel,
        asked: Asked,
        call: Call,
        routed: str,
        direct: Callable[..., Awaitable[Any]],
    ) -> Any:
        """The answer of LiteLLM's Router (its method ``routed``) for a routed group, else of ``direct``."""
        if self._through_router(resolved):
            return await self._routed(resolved, asked, routed, call)
        return await direct(**self._direct(resolved, asked, call))

    def _direct(self, resolved: ResolvedModel, asked: Asked, call: Call) -> dict[str, Any]:
        call.tried.append(resolved.config)
        call.litellm_model = resolved.litellm_model
        streams.answered(call)
        return self._adapter.direct(resolved, asked, call)

    async def _routed(self, resolved: ResolvedModel, asked: Asked, method: str, call: Call) -> Any:
        """A call through the Router: each attempt is adapted to its deployment (``patches``)."""
        assert self.router is not None
        call.router = self.router
        call.adapt = lambda model, kwargs: self._adapter.adapt(model, asked, kwargs, call)
        if resolved.config.name in self._alternatives:
            call.backoff = False
        try:
            return await self.router.call(method, model=resolved.router_model, **asked.given)
        finally:
            streams.answered(call)

    def _holding_conversations(self, resolved: ResolvedModel) -> None:
        """``previous_response_id`` goes only where every deployment that may answer holds conversations:
        else a 400 that says what to send instead (a bridged turn has no upstream that remembers it)."""
        deployments = [resolved.config]
        if self._through_router(resolved) and self.router is not None:
            deployments = [d for d in self.router.deployments.values() if d.name == resolved.config.name]
        for model in deployments:
            litellm_model = resolved.litellm_model if model is resolved.config else model.litellm_model
            if not providers.holds_conversations(model, litellm_model):
                raise InvalidRequest(
                    f"previous_response_id: model {resolved.config.name!r} is served through a provider "
                    "that keeps no conversation; send the conversation's items in `input` (as Codex does "
                    "with store: false)",
                    param="previous_response_id",
                    code="previous_response_not_supported",
                )

    def _through_router(self, resolved: ResolvedModel) -> bool:
        return self.router is not None and resolved.config.name in self.routed

    @staticmethod
    def price(outcome: Outcome) -> float | None:
        """LiteLLM's price of a request's usage (the ledger asks, in its batch)."""
        return pricing.cost(outcome)

    @staticmethod
    def litellm_info() -> dict[str, Any]:
        """Which LiteLLM and price map answer (/health)."""
        return pricing.map_in_use()

    def cooldown_rows(self) -> list[Mapping[str, Any]]:
        """The deployments LiteLLM's Router skips for now (allowed_fails / cooldown_time), and until when."""
        return router.cooldown_rows(self.router)

    def _counting(self, model: ModelConfig) -> ModelConfig:
        if self.router is None or model.name not in self.routed:
            return model
        cooling = {cooled.id for cooled, _ in self.router.cooldowns()}
        group = [d for d in self.router.deployments.values() if d.name == model.name]
        return next((d for d in group if d.id not in cooling), model)

    async def aclose(self) -> None:
        self.closed = True
        if self.router is not None:
            self.router.discard()
        await self.clients.aclose()


def _count_here(request: Mapping[str, Any], model: ModelConfig, litellm_model: str) -> int:
    """A Messages request's input tokens as the model will see them: translated as LiteLLM translates it
    for this provider (system, every content kind, tool definitions, tool calls and results), then counted
    by LiteLLM's tokenizer for the model. An image counts LiteLLM's default, never fetched."""
    translated, _ = MESSAGES_TO_CHAT.translate_anthropic_to_openai(
        {**request, "model": litellm_model},  # type: ignore[typeddict-item]
        custom_llm_provider=model.provider,
    )
    return int(
        litellm.token_counter(
            model=litellm_model,
            messages=translated["messages"],
            tools=translated.get("tools"),
            # LiteLLM's own translation's choice; token_counter's annotation is narrower than what it reads
            tool_choice=translated.get("tool_choice"),  # type: ignore[arg-type]
            use_default_image_token_count=True,
        )
    )


def _asked_usage(request: Mapping[str, Any]) -> bool:
    options = request.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True
