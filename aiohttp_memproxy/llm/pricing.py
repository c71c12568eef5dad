"""LiteLLM's price map: what it knows of a model, what a config adds to it, and the price of a usage.

The price map (``litellm.model_cost``) is process-wide. The gateway registers each deployment's
``model_info`` in it as LiteLLM's Router does, keeps what the map already knows, and marks what it assumed
for a model the map lacks (``ASSUMED``), so that such a model is never taken for a known one and never asked
its price.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import litellm
from litellm.types.utils import shared_backend_model_info

from aiohttp_memproxy.config.settings import ModelConfig
from aiohttp_memproxy.llm import patches
from aiohttp_memproxy.llm.providers import family
from aiohttp_memproxy.usage.outcome import Outcome

# model_info keys a config may set over LiteLLM's map (custom prices, as on a LiteLLM proxy);
# shared_backend_model_info strips them before register_model_info sees them, so none arrives yet.
PRICE_SUFFIXES = ("_cost_per_token", "_cost_per_second", "_cost_per_request", "_token_cost")
# Marks a price-map entry this gateway registered for a model LiteLLM did not know (LiteLLM ignores the key).
ASSUMED = "memproxy_assumed"


def assumed(litellm_model: str) -> bool:
    """Whether the price map's entry for this model is one we registered for a model LiteLLM does not know."""
    return bool((litellm.model_cost.get(litellm_model) or {}).get(ASSUMED))


def known_info(litellm_model: str) -> dict[str, Any] | None:
    """What LiteLLM's price map says of this model, or None when it does not know it (an entry we registered
    for an unknown model, in this process, by any app, is not knowledge)."""
    if assumed(litellm_model):
        return None
    if family(litellm_model.partition("/")[0]).asks_server:  # it would ask the model's server, blocking
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
    lacks; ``mode: chat`` is assumed only for an unknown model. Its prices do not get here:
    ``shared_backend_model_info`` keeps per-deployment prices out of the shared entry (LiteLLM's Router
    registers them under the deployment's id, which the gateway takes back: ``kept_price_map``).
    """
    if model.is_wildcard:
        return
    info = shared_backend_model_info(dict(model.info))
    known = known_info(model.litellm_model)
    if known is None:
        entry: dict[str, Any] = {"litellm_provider": model.provider, "mode": "chat", **info, ASSUMED: True}
        if assumed(model.litellm_model):
            # Ours already (another deployment of the model, an earlier config): replaced as is. Registered
            # again, LiteLLM would merge it into a generalized entry of ~165 empty fields, which its
            # zero-cost diagnostic then scans after every call of the model.
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


@contextmanager
def kept_price_map(deployments: Sequence[ModelConfig]) -> Iterator[None]:
    """LiteLLM's price map as it was before the block (a Router being built) registered its deployments.

    LiteLLM's Router registers each deployment's model_info under its id and its ``provider/name``, filling
    every field it has (~165, mostly empty) into the entry: LiteLLM's zero-cost diagnostic then scans that
    entry after every call of that model, routed or not, and the entry overrides what ``register_model_info``
    kept (a responses-only model's mode). The gateway registers the config's model_info itself, so what the
    Router added is taken back.
    """
    keys = set(litellm.model_cost)
    names = {name for model in deployments for name in (model.litellm_model, model.id)}
    names |= {model.litellm_model.partition("/")[2] for model in deployments}
    saved = {name: copy.deepcopy(litellm.model_cost[name]) for name in names if name in litellm.model_cost}
    try:
        yield
    finally:
        for added in set(litellm.model_cost) - keys:
            del litellm.model_cost[added]
        litellm.model_cost.update(saved)
        patches.forget_price_lookups()


# The model_info keys that give a model LiteLLM's map does not know a price and a context window.
FILLING_KEYS = ("input_cost_per_token", "output_cost_per_token", "max_input_tokens", "max_output_tokens")


def map_in_use() -> dict[str, Any]:
    """Which LiteLLM and which price map this process uses: the map bundled with that release (the gateway
    never fetches one), and how many models it knows."""
    return {
        "litellm_version": patches.LITELLM_VERSION,
        "price_map": "bundled" if os.environ.get("LITELLM_LOCAL_MODEL_COST_MAP") == "True" else "fetched",
        "models_known": len(litellm.model_cost),
    }


def unknown(models: Sequence[ModelConfig]) -> list[ModelConfig]:
    """The configured models LiteLLM's map does not know (no price, no context window) and whose
    model_info does not fill both in; wildcards and mock models aside."""
    return [
        model
        for model in models
        if not model.is_wildcard
        and "mock_response" not in model.params
        and known_info(model.litellm_model) is None
        and not (
            any(key in model.info for key in FILLING_KEYS[:2])
            and any(key in model.info for key in FILLING_KEYS[2:])
        )
    ]


def answer_cost(answer: Any) -> float | None:
    """LiteLLM's own price of a whole answer: it sets one on every answer it returns (``response_cost`` in
    ``_hidden_params``, ``update_response_metadata``), so the ledger need not ask its cost function again."""
    hidden = getattr(answer, "_hidden_params", None)
    cost = hidden.get("response_cost") if isinstance(hidden, dict) else None
    return float(cost) if isinstance(cost, int | float) and not isinstance(cost, bool) else None


def cost(outcome: Outcome) -> float | None:
    """LiteLLM's price of this usage for the model that answered; None where its price map has none."""
    tokens = outcome.tokens
    if not tokens.known or not outcome.litellm_model:
        return None
    if assumed(outcome.litellm_model):
        # No price known (we registered the model for LiteLLM): not asked, since LiteLLM explains a zero cost
        # by scanning its whole price map (zero_cost_diagnostic) on every call.
        return None
    if outcome.litellm_cost is not None:  # LiteLLM priced the whole answer itself as it returned it
        return outcome.litellm_cost
    try:
        prompt, completion = litellm.cost_per_token(
            model=outcome.litellm_model,
            custom_llm_provider=outcome.provider or None,
            prompt_tokens=tokens.input or 0,
            completion_tokens=tokens.output or 0,
            cache_read_input_tokens=tokens.cache_read or 0,
            cache_creation_input_tokens=tokens.cache_write or 0,
        )
    except Exception:  # a model LiteLLM has no price for (ModelNotMappedError and kin)
        return None
    return float(prompt) + float(completion)
