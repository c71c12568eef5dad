"""What a client asked, made right for the deployment about to answer it: a direct call's one deployment,
or each deployment LiteLLM's Router tries (``patches`` calls ``Adapter.adapt`` on every attempt, so a retry
or a fallback gets its own headers, client and translation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import litellm
from litellm.llms.openai.common_utils import is_openai_backed_api_base
from openai.types.chat.completion_create_params import CompletionCreateParamsStreaming
from openai.types.responses.response_create_params import ResponseCreateParamsStreaming

from aiohttp_memproxy.config.settings import ModelConfig, Settings
from aiohttp_memproxy.llm import pricing
from aiohttp_memproxy.llm.clients import ClientPool
from aiohttp_memproxy.llm.memo import Memo
from aiohttp_memproxy.llm.providers import speaks_openai
from aiohttp_memproxy.outbound.call import Call
from aiohttp_memproxy.resolve.memory import MemoryDecision, memory_headers
from aiohttp_memproxy.resolve.models import ResolvedModel

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
# What a client may set in a Gemini generateContent request (Google's REST fields); the model is the path's.
GEMINI_PARAMS = frozenset(
    {
        "contents",
        "generationConfig",
        "systemInstruction",
        "tools",
        "toolConfig",
        "safetySettings",
        "cachedContent",
    }
)
# Forwarded byte for byte to an Anthropic upstream (LiteLLM would sort and merge the betas).
ANTHROPIC_CLIENT_HEADERS = ("anthropic-version", "anthropic-beta")
# litellm_params we hand over ourselves, or that LiteLLM must not see as kwargs.
OWN_PARAMS = frozenset({"model", "extra_headers"})
# Model ids whose LiteLLM knowledge is remembered (a wildcard resolves to any name a client sends).
MAX_KNOWN_MEMO = 1024


@dataclass(frozen=True)
class Asked:
    """What the client asked, whichever deployment answers it: the route, the parameters handed to LiteLLM,
    the memory user, and the client's own Anthropic headers."""

    route: Literal["chat", "messages", "responses", "gemini"]
    given: Mapping[str, Any]
    decision: MemoryDecision | None = None
    client_headers: Mapping[str, str] = field(default_factory=dict)
    usage_for_ledger: bool = False  # a chat stream whose client did not ask for usage: asked for it here


class Adapter:
    def __init__(self, settings: Settings, clients: ClientPool) -> None:
        self._settings = settings
        self._clients = clients
        # Whether LiteLLM's map knows a model (an entry the gateway registered for an unknown one is marked,
        # and is not knowledge: pricing.known_info).
        self._known: Memo[str, bool] = Memo(MAX_KNOWN_MEMO)
        self._stream_options: Memo[tuple[str, str], bool] = Memo(MAX_KNOWN_MEMO)

    def direct(self, resolved: ResolvedModel, asked: Asked, call: Call) -> dict[str, Any]:
        """The kwargs of a direct call: the one deployment's litellm_params and defaults, what the client
        asked, adapted to that deployment."""
        model = resolved.config
        params = {key: value for key, value in model.params.items() if key not in OWN_PARAMS}
        kwargs: dict[str, Any] = {
            "timeout": self._settings.litellm.request_timeout,
            "num_retries": self._settings.litellm.num_retries,
            **params,
            **asked.given,
            "model": resolved.litellm_model,
        }
        self.adapt(model, asked, kwargs, call)
        return kwargs

    def adapt(self, model: ModelConfig, asked: Asked, kwargs: dict[str, Any], call: Call) -> None:
        """``kwargs`` made right for ``model``, the deployment about to be called (in place): its headers
        (memory headers only where it is served through Supermemory), the client its provider takes, and a
        Messages request made translatable for a provider that is not Anthropic."""
        litellm_model = str(kwargs.get("model") or model.litellm_model)
        if asked.route != "messages":  # Messages to Anthropic passes through; to others, _translatable
            kwargs.setdefault("drop_params", self._settings.litellm.drop_params)
        extra_headers = {
            **model.params.get("extra_headers", {}),
            **(memory_headers(model, asked.decision) if asked.decision is not None else {}),
        }
        client = self._clients.for_deployment(model, litellm_model)
        if asked.route == "messages" and model.provider == "anthropic":
            exact = tuple(
                (name, asked.client_headers[name])
                for name in ANTHROPIC_CLIENT_HEADERS
                if name in asked.client_headers
            )
            extra_headers.update(exact)
            if exact:
                client = self._clients.pinned(exact)
        elif asked.route == "messages":
            self._translatable(model, litellm_model, kwargs)
        # The transport takes the usage chunk it asked for out of this attempt's answer, and reads it.
        call.take_usage = asked.usage_for_ledger and self._ask_stream_usage(model, kwargs)
        if asked.route == "responses" and "mock_response" in model.params:
            # LiteLLM's mock answers whole and cannot stream it: a stream is made of the answer.
            kwargs["stream"] = False
        if extra_headers:
            kwargs["extra_headers"] = extra_headers
        else:
            kwargs.pop("extra_headers", None)
        if client is not None:
            kwargs["client"] = client
        else:
            kwargs.pop("client", None)  # not one the Router cached for another purpose: the seam's

    def _translatable(self, model: ModelConfig, litellm_model: str, kwargs: dict[str, Any]) -> None:
        """A Messages request for another provider, as its client sent it (Claude Code cannot adapt its
        request to the model behind an alias): what the target cannot take is dropped or mapped, never a
        failure. Read in LiteLLM's Messages adapter (llms/anthropic/pass_through/adapters)."""
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
            and not self._known.get(litellm_model, _is_known)
            and model.info.get("supports_reasoning") is not True
        ):
            del kwargs["thinking"]

    def _ask_stream_usage(self, model: ModelConfig, kwargs: dict[str, Any]) -> bool:
        """A chat stream's usage, for the ledger, from a client that did not ask for it (in place); True
        where the upstream is asked in OpenAI's own way, its usage chunk then taken out by the transport.

        An upstream that speaks OpenAI's API is asked in the request body itself (``extra_body``), so that
        LiteLLM does not take it as its caller's wish: asked through ``stream_options``, LiteLLM rebuilds the
        whole answer at the end to report usage (~2.5 ms of CPU a stream). The usage chunk is then taken out
        of the answer's bytes (``dialects.openai_chat.ChatUsageTap``) before the OpenAI SDK and LiteLLM would
        parse it, and LiteLLM sees the stream it sees with the ledger off. Other providers report usage in
        their own stream, which LiteLLM turns into a final chunk only when ``stream_options`` asks.
        """
        options = {**(kwargs.get("stream_options") or {}), "include_usage": True}
        if speaks_openai(model.provider):
            if _litellm_asks_openai(model):
                return False  # LiteLLM asks, and relays a usage chunk: the stream keeps it from the client
            kwargs.pop("stream_options", None)
            kwargs["extra_body"] = {**(kwargs.get("extra_body") or {}), "stream_options": options}
            return True
        litellm_model = str(kwargs.get("model") or model.litellm_model)
        if self._stream_options.get((litellm_model, model.provider), _takes_stream_options):
            kwargs["stream_options"] = options
        return False


def _is_known(litellm_model: str) -> bool:
    return pricing.known_info(litellm_model) is not None


def _takes_stream_options(key: tuple[str, str]) -> bool:
    """Whether LiteLLM takes ``stream_options`` for this model (its final chunk then carries usage)."""
    litellm_model, provider = key
    try:
        supported = litellm.get_supported_openai_params(
            model=litellm_model.partition("/")[2] or litellm_model, custom_llm_provider=provider
        )
    except Exception:  # LiteLLM's own lookup failing: no usage asked for, the stream unchanged
        supported = None
    return "stream_options" in (supported or ())


def _litellm_asks_openai(model: ModelConfig) -> bool:
    """Whether LiteLLM asks this OpenAI-compatible deployment for a chat stream's usage itself: its OpenAI
    handler does for OpenAI's own API (``get_stream_options`` in ``llms/openai/openai.py``: no ``api_base``,
    or one on api.openai.com), and then relays a usage chunk of its own, built from the upstream's. Taking the
    upstream's out there would leave LiteLLM counting the prompt with a tokenizer, and the ledger with its
    estimate. (No ``api_base`` in the config but OPENAI_BASE_URL in the service's environment: LiteLLM asks
    only if that is OpenAI's; the ledger then has no tokens for such a stream, never wrong ones.)"""
    api_base = model.params.get("api_base")
    if api_base is None:
        return model.provider == "openai"
    return is_openai_backed_api_base(str(api_base))
