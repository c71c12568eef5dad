"""LiteLLM's Router over the config's deployments: load balancing, fallbacks, retries and cooldowns.

The Router is LiteLLM's reference implementation of a config's routing keys (several deployments under one
``model_name``, ``routing_strategy``, ``fallbacks`` and their context-window and content-policy kinds,
``num_retries``/``retry_policy``, ``allowed_fails``/``cooldown_time``); a LiteLLM proxy serves the same
file through it. It is used for a model group with several deployments, and for every group once the config
sets a routing key. A group of one deployment in a config without routing keys answers through one direct
LiteLLM call instead: the Router costs ~2 ms of CPU per call (measured on litellm 1.106.2 with a mocked
answer: 4.6 ms against 2.4 ms), and it would route nowhere.

Each attempt is adapted to the deployment the Router picked, just before it is sent (LiteLLM's
``async_pre_call_deployment_hook``): memory headers only for a Supermemory deployment, the client that
deployment's provider takes, a Messages request made translatable for a provider that is not Anthropic.
The gateway call in progress is a ContextVar (``CALL``), so the hook, registered in LiteLLM's global
callback list, acts on this Router's calls only. Verified on litellm 1.106.2.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import litellm
import structlog
from litellm.exceptions import MidStreamFallbackError
from litellm.integrations.custom_logger import CustomLogger
from litellm.router import Router
from litellm.router_strategy.least_busy import LeastBusyLoggingHandler

from aiohttp_memproxy.settings import ModelConfig, Settings

log = structlog.get_logger()

# Router arguments that do not change how one deployment alone is called (its call gets the same retries
# and timeouts without the Router): a config setting only these keeps plain groups on the direct path.
PLAIN_KEYS = frozenset({"num_retries", "timeout", "stream_timeout"})
# LiteLLM's AllowedFailsPolicy fields (types/router.py, 1.106.2): one per error class.
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


@dataclass
class Call:
    """One gateway call through the Router: what the per-deployment hook needs, and what it learned."""

    router: GatewayRouter
    group: str  # the model group the client's model resolved to
    adapt: Callable[[ModelConfig, dict[str, Any]], None]  # the call's kwargs for one deployment, in place
    tried: list[ModelConfig] = field(default_factory=list)  # deployments in the order the Router tried them
    relayed: bool = False  # something of the answer reached the client: no fallback from here on
    outer: str | None = None  # LiteLLM's call type of the Router's attempts (inner calls have another)
    litellm_model: str = ""  # what the last deployment tried was called as (its usage is priced as that)

    @property
    def deployment(self) -> ModelConfig | None:
        """The deployment that answered (the last one tried)."""
        return self.tried[-1] if self.tried else None

    @property
    def fallback(self) -> bool:
        """Whether the answer came from another model group than the one asked for."""
        return any(model.name != self.group for model in self.tried)


CALL: ContextVar[Call | None] = ContextVar("memproxy_router_call", default=None)


class _DeploymentHook(CustomLogger):
    """LiteLLM calls this after the Router picked a deployment, before the request is built."""

    def __init__(self, router: GatewayRouter) -> None:
        super().__init__()
        self.router = router

    async def async_pre_call_deployment_hook(
        self, kwargs: dict[str, Any], call_type: Any
    ) -> dict[str, Any] | None:
        call = CALL.get()
        if call is None or call.router is not self.router:
            return None  # another Router's call, or a direct one
        deployment = self.router.deployments.get(str((kwargs.get("model_info") or {}).get("id")))
        if deployment is None:
            return None
        # An inner call of LiteLLM's (Messages or Responses translated to chat completions) carries the same
        # model_info: adapted again (the adaptation is idempotent), counted once, by the outer call's type.
        kind = str(getattr(call_type, "value", call_type))
        call.outer = call.outer or kind
        if kind == call.outer:
            call.tried.append(deployment)
            call.litellm_model = str(
                kwargs.get("model") or deployment.litellm_model
            )  # a wildcard's, filled in
        adapted = dict(kwargs)
        call.adapt(deployment, adapted)
        return adapted


class GatewayRouter(Router):
    """LiteLLM's Router, with these changes (verified on litellm 1.106.2):

    - A stream falls back only before anything of it reached the client. LiteLLM's Router also falls back in
      the middle of a stream, continuing the answer with another model (Responses: after content; chat
      completions: after a role-only first chunk). A client that already holds part of one answer must not
      be handed the rest of another: the error is theirs, as it happened.
    - Its routing-strategy selector is registered by identity and removed by ``discard``: LiteLLM's own
      registration skips an object equal to one already there (an old Router's, during a reload), and its
      ``discard`` leaves the selector behind.
    - ``allowed_fails`` is honoured as written: LiteLLM takes a value equal to its default (3) for "unset",
      and then never cools down a group of one deployment. It is passed as the same number for every error
      class (``allowed_fails_policy``), which LiteLLM honours whatever the number.
    """

    def __init__(self, deployments: Sequence[ModelConfig], **arguments: Any) -> None:
        self.deployments = {model.id: model for model in deployments}
        if "allowed_fails" in arguments and "allowed_fails_policy" not in arguments:
            arguments["allowed_fails_policy"] = dict.fromkeys(
                ALLOWED_FAILS_CLASSES, arguments["allowed_fails"]
            )
        try:
            super().__init__(
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
        except Exception:
            with contextlib.suppress(Exception):  # whatever it registered before it failed
                super().discard()  # type: ignore[no-untyped-call]  # litellm leaves it untyped
            raise
        for selector in self._selectors():
            if not any(callback is selector for callback in litellm.callbacks):
                litellm.callbacks.append(selector)
            if isinstance(selector, LeastBusyLoggingHandler) and not any(
                callback is selector for callback in litellm.input_callback
            ):
                litellm.input_callback.append(selector)
        self.on_cooldown: Callable[[ModelConfig], None] = lambda model: None
        add = self.cooldown_cache.add_deployment_to_cooldown

        def counted(model_id: str, *args: Any, **kwargs: Any) -> Any:
            result = add(model_id, *args, **kwargs)
            model = self.deployments.get(model_id)
            if model is not None:
                log.warning("deployment_cooldown", model=model.name, deployment=model.id, where=model.where)
                self.on_cooldown(model)
            return result

        # The Router's one way into cooldown (router_utils/cooldown_handlers.py), counted per instance:
        # LiteLLM's cooldown event reaches only a global Prometheus logger of its own.
        self.cooldown_cache.add_deployment_to_cooldown = counted  # type: ignore[method-assign]
        self._hook = _DeploymentHook(self)
        litellm.callbacks.append(self._hook)

    async def async_function_with_fallbacks_common_utils(
        self, e: Exception, *args: Any, **kwargs: Any
    ) -> Any:
        call = CALL.get()
        if call is not None and call.relayed:  # LiteLLM unwraps some mid-stream errors before this point
            if isinstance(e, MidStreamFallbackError) and e.original_exception is not None:
                raise e.original_exception
            raise e
        return await super().async_function_with_fallbacks_common_utils(e, *args, **kwargs)

    def _selectors(self) -> list[CustomLogger]:
        """This Router's routing-strategy selector, if its strategy has one (simple-shuffle has none)."""
        attributes = sorted(set(self._DEFAULT_SELECTOR_ATTR_BY_STRATEGY.values()))
        found = [getattr(self, name, None) for name in attributes]
        return [selector for selector in found if isinstance(selector, CustomLogger)]

    def cooldowns(self) -> list[tuple[ModelConfig, float]]:
        """The deployments in cooldown, and until when (epoch seconds)."""
        active = self.cooldown_cache.get_active_cooldowns(list(self.deployments), None)
        return [
            (self.deployments[model_id], float(value["timestamp"]) + float(value["cooldown_time"]))
            for model_id, value in active
            if model_id in self.deployments
        ]

    def discard(self) -> None:
        """Out of LiteLLM's global callback lists (its own, and our hook)."""
        with contextlib.suppress(ValueError):
            litellm.callbacks.remove(self._hook)
        self._unregister_router_selectors(self._selectors())
        super().discard()  # type: ignore[no-untyped-call]  # litellm leaves it untyped


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


def build(settings: Settings) -> GatewayRouter | None:
    """The Router over every enabled deployment (fallback targets included), or None when no group needs
    one. LiteLLM's own validation of the arguments surfaces as ValueError/TypeError."""
    if not routed_groups(settings):
        return None
    arguments = dict(settings.router)
    arguments.setdefault("num_retries", settings.litellm.num_retries)
    arguments.setdefault("timeout", settings.litellm.request_timeout)
    return GatewayRouter([model for model in settings.models if model.enabled], **arguments)


def cooldown_rows(router: GatewayRouter | None) -> list[Mapping[str, Any]]:
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
