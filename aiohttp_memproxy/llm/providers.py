"""What the gateway knows of the provider families LiteLLM serves: one record per family that needs one.

Read at startup (which providers this gateway can serve) and per call (which client a deployment takes).
A family without a record takes LiteLLM's own path, whose clients come from the seam (``patches``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import litellm
from litellm.constants import openai_compatible_providers
from litellm.responses.main import provider_stores_the_conversation

from aiohttp_memproxy.config.settings import ModelConfig, Settings
from aiohttp_memproxy.llm import rust
from aiohttp_memproxy.llm.patches import LITELLM_VERSION

# The per-call client LiteLLM honours for a family (read in litellm/main.py): the OpenAI SDK path takes an
# AsyncOpenAI, the base_llm_http_handler path an AsyncHTTPHandler.
ClientKind = Literal["openai_sdk", "http_handler"]


@dataclass(frozen=True)
class Family:
    client: ClientKind | None = None  # handed to LiteLLM per call; None: LiteLLM builds one, from the seam
    package: tuple[str, str] | None = None  # (module, distribution) LiteLLM needs and does not require
    # LiteLLM serves the family through an HTTP session of its own, around any transport (it would drop the
    # cookie jar): refused, naming the family that serves the same API.
    refused_for: str | None = None
    asks_server: bool = False  # LiteLLM asks the model's own server for its model info (a blocking request)


PLAIN = Family()
FAMILIES: Mapping[str, Family] = {
    "openai": Family(client="openai_sdk"),
    "anthropic": Family(client="http_handler"),
    "hosted_vllm": Family(client="http_handler"),
    "vertex_ai": Family(package=("google.auth", "google-auth")),  # and vertex_ai_beta, ...
    "aiohttp_openai": Family(refused_for="openai"),
    "ollama": Family(asks_server=True),
    "ollama_chat": Family(asks_server=True),
}
PREFIXED = ("vertex_ai",)  # families whose record covers every provider name it begins


def family(provider: str) -> Family:
    found = FAMILIES.get(provider)
    if found is not None:
        return found
    return next((FAMILIES[name] for name in PREFIXED if provider.startswith(name)), PLAIN)


def speaks_openai(provider: str) -> bool:
    """An upstream that speaks OpenAI's API (a chat stream's usage is asked in the request body)."""
    return provider == "openai" or provider in openai_compatible_providers


def holds_conversations(model: ModelConfig, litellm_model: str) -> bool:
    """Whether a Responses request to this deployment reaches its own Responses API, which holds the
    conversation a ``previous_response_id`` names. LiteLLM bridges the rest to chat completions or Messages,
    and its proxy would replay such a turn from its spend logs, which the gateway does not keep."""
    params = {
        "api_base": model.params.get("api_base"),
        "model_info": dict(model.info),
        "use_chat_completions_api": model.params.get("use_chat_completions_api"),
    }
    return bool(provider_stores_the_conversation(litellm_model, model.provider, params))


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package is missing
        return False


def unservable(settings: Settings) -> list[str]:
    """Models whose provider LiteLLM cannot serve here: refused at startup, named by their key path."""
    return [problem for index, model in enumerate(settings.models) if (problem := _problem(index, model))]


def _problem(index: int, model: ModelConfig) -> str | None:
    where = f"model_list[{index}].litellm_params.model"
    found = family(model.provider)
    if found.refused_for is not None:
        return (
            f"{where}: LiteLLM sends {model.provider}/ through an HTTP session of its own, around the cookie "
            f"jar: use {found.refused_for}/ (model {model.name!r})"
        )
    if found.package is not None and not _installed(found.package[0]):
        return (
            f"{where}: LiteLLM serves {model.provider}/ only with the {found.package[1]} package, which is "
            f"not installed here (model {model.name!r})"
        )
    try:
        litellm.get_llm_provider(
            model=model.litellm_model.replace("*", "x"),
            custom_llm_provider=model.params.get("custom_llm_provider"),
        )
    except Exception:  # LiteLLM's BadRequestError, whose text we do not echo
        return f"{where}: LiteLLM {LITELLM_VERSION} has no provider {model.provider!r} (model {model.name!r})"
    try:
        native = rust.native_routes(model.provider, model.litellm_model)
    except rust.CatalogMoved as exc:
        return (
            f"{where}: LiteLLM {LITELLM_VERSION}: {exc}, so its HTTP cannot be known (model {model.name!r})"
        )
    if native:
        routes = "; ".join(f"{route} ({why})" for route, why in native)
        return (
            f"{where}: LiteLLM {LITELLM_VERSION} would send {model.provider}/ requests through its Rust HTTP "
            f"client, around the cookie jar: {routes} (model {model.name!r})"
        )
    return None
