"""The clients the gateway hands LiteLLM per call, all over the one transport, kept for a config's life.

Per-call clients go where LiteLLM honours them and they add something: ``openai/`` gets an ``AsyncOpenAI``
(LiteLLM uses its base_url and key, not the call's: one per api_base and key, ``max_retries=0``, since
retries are the transport's), ``anthropic/`` and ``hosted_vllm/`` a handler, and an Anthropic call whose
client sent its own ``anthropic-version``/``anthropic-beta`` a handler that restores those bytes (LiteLLM
sorts and merges the betas). Every other provider's client LiteLLM builds itself, from the seam.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import httpx
import litellm
import openai
from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler, blocked_cookie_jar

from aiohttp_memproxy.config.settings import ModelConfig
from aiohttp_memproxy.llm.memo import Memo
from aiohttp_memproxy.llm.providers import family
from aiohttp_memproxy.outbound.transport import PinnedHeaders

# LiteLLM's own test for an azure/ api_base on Cloudflare AI Gateway (llms/azure/azure.py).
CLOUDFLARE_AI_GATEWAY = "gateway.ai.cloudflare.com"
# Header sets with a handler of their own: Claude Code sends the same few all day; a client that varies its
# betas endlessly must not grow this without end. A handler holds no connection of its own (its transport
# is borrowed), so forgetting one is enough, and a request still using it finishes unharmed.
MAX_PINNED_HANDLERS = 32


class ClientPool:
    def __init__(self, transport: httpx.AsyncBaseTransport, timeout: float | None) -> None:
        self._transport = transport
        self._timeout = timeout
        self.handler = AsyncHTTPHandler(transport=transport, timeout=timeout)
        self._openai: dict[tuple[str | None, str], openai.AsyncOpenAI] = {}  # AsyncAzureOpenAI is one
        self._pinned: Memo[tuple[tuple[str, str], ...], AsyncHTTPHandler] = Memo(MAX_PINNED_HANDLERS)

    def for_deployment(self, model: ModelConfig, litellm_model: str) -> Any:
        """The client ``model``'s call gets, or None where LiteLLM builds its own (from the seam)."""
        if "mock_response" in model.params:
            return None  # answered inside LiteLLM, no HTTP
        if model.provider == "azure" and CLOUDFLARE_AI_GATEWAY in str(model.params.get("api_base") or ""):
            return self._azure_gateway(model, litellm_model)
        match family(model.provider).client:
            case "openai_sdk":
                return self.openai_sdk(model)
            case "http_handler":
                return self.handler
        return None

    def pinned(self, exact: tuple[tuple[str, str], ...]) -> AsyncHTTPHandler:
        """A handler whose transport sets these headers to these exact values on every request."""
        return self._pinned.get(exact, self._pin)

    def _pin(self, exact: tuple[tuple[str, str], ...]) -> AsyncHTTPHandler:
        return AsyncHTTPHandler(transport=PinnedHeaders(self._transport, dict(exact)), timeout=self._timeout)

    def openai_sdk(self, model: ModelConfig) -> openai.AsyncOpenAI:
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

    def _azure_gateway(self, model: ModelConfig, litellm_model: str) -> openai.AsyncOpenAI:
        """``azure/`` through Cloudflare AI Gateway: LiteLLM builds that client itself, around its factories
        (``_init_azure_client_for_cloudflare_ai_gateway`` in ``llms/azure/common_utils.py``), unless it is
        given one. Built as LiteLLM builds it (base URL + deployment), over our transport: one per base,
        deployment and key."""
        params: Mapping[str, Any] = model.params
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

    async def aclose(self) -> None:
        for handler in (self.handler, *self._pinned.values()):
            await handler.close()  # type: ignore[no-untyped-call]  # litellm leaves it untyped
        await asyncio.gather(*(client.close() for client in self._openai.values()))
