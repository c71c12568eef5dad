"""LiteLLM's Router over the config's deployments: load balancing, fallbacks, retries and cooldowns.

The Router is LiteLLM's reference implementation of a config's routing keys (several deployments under one
``model_name``, ``routing_strategy``, ``fallbacks`` and their context-window and content-policy kinds,
``num_retries``/``retry_policy``, ``allowed_fails``/``cooldown_time``); a LiteLLM proxy serves the same
file through it. It is used for a model group with several deployments, and for every group once the config
sets a routing key. A group of one deployment in a config without routing keys answers through one direct
LiteLLM call instead: the Router costs ~2 ms of CPU per call, and it would route nowhere.

Each attempt is adapted to the deployment the Router picked, just before it is sent (``patches`` wraps the
Router's ``compact_to_fit`` for that; the call in progress says how: ``outbound.call``). The Router records
its calls' outcomes (success counts, cooldowns) itself, with no callback in LiteLLM's global lists (1.110),
so no other LiteLLM call of the process pays for its bookkeeping.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import litellm
import structlog
from litellm.integrations.custom_logger import CustomLogger
from litellm.router import Router
from litellm.router_rust.steps.selection import SELECTOR_ATTRIBUTES
from litellm.router_strategy.least_busy import LeastBusyLoggingHandler

from aiohttp_memproxy.config.settings import ModelConfig, Settings
from aiohttp_memproxy.llm import patches, pricing

log = structlog.get_logger()

# Router arguments that do not change how one deployment alone is called (its call gets the same retries
# and timeouts without the Router): a config setting only these keeps plain groups on the direct path.
PLAIN_KEYS = frozenset({"num_retries", "timeout", "stream_timeout"})
# LiteLLM's global callback lists (litellm/__init__.py).
CALLBACK_LISTS = (
    "callbacks",
    "input_callback",
    "success_callback",
    "failure_callback",
    "_async_success_callback",
    "_async_failure_callback",
    "_async_input_callback",
)
# LiteLLM's AllowedFailsPolicy fields (types/router.py): one per error class.
ALLOWED_FAILS_CLASSES = tuple(
    f"{name}AllowedFails"
    for name in (
        "BadRequestError",
        "AuthenticationError",
        "TimeoutError",
        "RateLimitError",
        "ContentPolicyViolationError",
        "InternalServerError",
        "ServiceUnavailableError",
        "BadGatewayError",
        "NotFoundError",
    )
)


class DeploymentRouter:
    """LiteLLM's Router over the config's deployments, held here (LiteLLM's Router cannot be subclassed), with
    these changes:

    - A stream falls back only before anything of it reached the client (``patches`` guards LiteLLM's stream
      recovery). LiteLLM's Router also falls back in the middle of a stream, continuing the answer with
      another model. A client that already holds part of one answer must not be handed the rest of another:
      the error is theirs, as it happened.
    - Its routing-strategy selector is registered by identity and removed by ``discard``: LiteLLM's own
      registration skips an object equal to one already there (an old Router's, during a reload).
    - ``allowed_fails`` is honoured as written: LiteLLM never cools down a group of one deployment for a
      scalar ``allowed_fails``. It is passed as the same number for every error class
      (``allowed_fails_policy``), which LiteLLM honours whatever the number.
    - It keeps out of LiteLLM's replay of price-map registrations (``patches.keep_own_price_map``), which
      would undo ``pricing.kept_price_map``.
    """

    def __init__(self, deployments: Sequence[ModelConfig], **arguments: Any) -> None:
        self.deployments = {model.id: model for model in deployments}
        if "allowed_fails" in arguments and "allowed_fails_policy" not in arguments:
            arguments["allowed_fails_policy"] = dict.fromkeys(
                ALLOWED_FAILS_CLASSES, arguments["allowed_fails"]
            )
        with pricing.kept_price_map(deployments):
            self.litellm = Router(
                model_list=[
                    {
                        "model_name": model.name,
                        "litellm_params": dict(model.params),
                        "model_info": {**model.info, "id": model.id},
                    }
                    for model in deployments
                ],
                **arguments,
            )
        patches.keep_own_price_map(self.litellm)
        for selector in self._selectors():
            if not any(callback is selector for callback in litellm.callbacks):
                litellm.callbacks.append(selector)
            if isinstance(selector, LeastBusyLoggingHandler) and not any(
                callback is selector for callback in litellm.input_callback
            ):
                litellm.input_callback.append(selector)
        self.on_cooldown: Callable[[ModelConfig], None] = lambda model: None
        patches.count_cooldowns(self.litellm, self._cooled)
        self._discarded = False

    async def call(self, method: str, **kwargs: Any) -> Any:
        """LiteLLM's Router endpoint ``method`` (acompletion, aresponses, ...)."""
        return await getattr(self.litellm, method)(**kwargs)

    def _cooled(self, model_id: str) -> None:
        model = self.deployments.get(model_id)
        if model is not None:
            log.warning("deployment_cooldown", model=model.name, deployment=model.id, where=model.where)
            self.on_cooldown(model)

    def _selectors(self) -> list[CustomLogger]:
        """This Router's routing-strategy selector, if its strategy has one (simple-shuffle has none)."""
        found = [getattr(self.litellm, name, None) for name in sorted(set(SELECTOR_ATTRIBUTES.values()))]
        return [selector for selector in found if isinstance(selector, CustomLogger)]

    def cooldowns(self) -> list[tuple[ModelConfig, float]]:
        """The deployments in cooldown, and until when (epoch seconds)."""
        active = self.litellm.health().cooldowns.get_active_cooldowns(list(self.deployments), None)
        return [
            (self.deployments[model_id], float(value["timestamp"]) + float(value["cooldown_time"]))
            for model_id, value in active
            if model_id in self.deployments
        ]

    def discard(self) -> None:
        """Out of LiteLLM's global lists: what LiteLLM registered for it (``retire``), and the selector this
        class put in ``litellm.callbacks``, which LiteLLM's first call after copies into every other list
        (``function_setup``)."""
        if self._discarded:
            return
        ids = {id(selector) for selector in self._selectors()}
        self.litellm.retire()
        for name in CALLBACK_LISTS:
            found = getattr(litellm, name, None)
            if isinstance(found, list):
                found[:] = [callback for callback in found if id(callback) not in ids]
        self._discarded = True


def routed_groups(settings: Settings) -> frozenset[str]:
    """The model groups served through the Router: all once a routing key is set, else those with several
    enabled deployments."""
    enabled = [model for model in settings.models if model.enabled]
    names = [model.name for model in enabled]
    if set(settings.router) - PLAIN_KEYS:
        return frozenset(names)
    return frozenset(name for name in names if names.count(name) > 1)


def with_alternatives(settings: Settings) -> frozenset[str]:
    """The model groups whose throttled call the Router takes elsewhere at once: a generic fallback (their
    own, a ``*`` rule, default_fallbacks), or another deployment with retries to spend on it (LiteLLM tries
    another deployment of a group only as a retry). Context-window and content-policy fallbacks do not
    answer a 429."""
    names = [model.name for model in settings.models if model.enabled]
    router = settings.router
    keyed = {group for rule in router.get("fallbacks") or () for group, targets in rule.items() if targets}
    generic = bool(router.get("default_fallbacks")) or "*" in keyed
    retries = (router.get("num_retries", settings.litellm.num_retries) or 0) > 0 or bool(
        (router.get("retry_policy") or {}).get("RateLimitErrorRetries")
    )
    return frozenset(
        name for name in names if generic or name in keyed or (retries and names.count(name) > 1)
    )


def build(settings: Settings) -> DeploymentRouter | None:
    """The Router over every enabled deployment (fallback targets included), or None when no group needs
    one. LiteLLM's own validation of the arguments surfaces as ValueError/TypeError."""
    if not routed_groups(settings):
        return None
    arguments = dict(settings.router)
    arguments.setdefault("num_retries", settings.litellm.num_retries)
    arguments.setdefault("timeout", settings.litellm.request_timeout)
    return DeploymentRouter([model for model in settings.models if model.enabled], **arguments)


def cooldown_rows(router: DeploymentRouter | None) -> list[Mapping[str, Any]]:
    """/health's view of the deployments in cooldown."""
    if router is None:
        return []
    now = time.time()
    return [
        {
            "model": model.name,
            "deployment": model.id,
            "where": model.where,
            "until": until,
            "remaining_s": round(max(0.0, until - now), 1),
        }
        for model, until in router.cooldowns()
    ]
