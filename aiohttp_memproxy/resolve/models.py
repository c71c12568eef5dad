"""Model resolution: exact ``model_name``, ``router_settings.model_group_alias``, dated ids, wildcards.

Order: exact name; alias; the same two for a dated id with its ``-YYYYMMDD`` suffix removed (Claude Code
sends ``claude-sonnet-4-5-20250929``); then wildcard ``model_name``s (``claude-*``, ``*``), the most
specific first. A wildcard's ``*`` captures are substituted into the ``*`` of its ``litellm_params.model``,
as LiteLLM's own pattern router does.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from aiohttp_memproxy.config.schema import wildcard_regex
from aiohttp_memproxy.config.settings import Alias, ModelConfig
from aiohttp_memproxy.errors import InvalidRequest, ModelDisabled, ModelNotFound

DATE_SUFFIX = re.compile(r"-\d{8}$")
# What a client's model id may not hold where a wildcard puts it into a deployment's model: LiteLLM builds
# upstream URLs from that model (Gemini's /models/<model>:generateContent, Bedrock's /model/<model>/...), and
# these would steer them (a query, a fragment, an encoding, a separator, a header-breaking character). A '/'
# stays allowed: openrouter/, hosted_vllm/ and Fireworks ids have them.
URL_STEERING = re.compile(r"[?#%\\\s\x00-\x1f\x7f]")
DOT_SEGMENTS = frozenset({".", ".."})
STEERING_REFUSED = (
    "model: an id with a '.' or '..' segment, '?', '#', '%', '\\', whitespace or a control character cannot "
    "stand for a wildcard model"
)
_SHOWN_NAME = 200  # a client's model string is echoed in errors, capped


@dataclass(frozen=True)
class ResolvedModel:
    requested: str
    config: ModelConfig  # the model group's first enabled deployment
    litellm_model: str  # the provider/name LiteLLM is called with
    router_model: str = ""  # the name the Router is called with: the group's, or what matched a wildcard


@dataclass(frozen=True)
class _Wildcard:
    regex: re.Pattern[str]
    config: ModelConfig


class ModelTable:
    def __init__(self, models: Sequence[ModelConfig], aliases: Mapping[str, Alias]) -> None:
        self.models = tuple(models)
        self.aliases = dict(aliases)
        # A model_name listed several times is one model group (LiteLLM's deployments): its first enabled
        # entry stands for it here (what a direct call or a token count uses; the Router picks among all).
        self._exact: dict[str, ModelConfig] = {}
        self._groups: dict[str, ModelConfig] = {}
        for model in models:
            table = self._groups if model.is_wildcard else self._exact
            first = table.get(model.name)
            if first is None or (not first.enabled and model.enabled):
                table[model.name] = model
        # Most specific first: more literal characters wins; a bare `*` comes last.
        ordered = sorted(
            self._groups.values(),
            key=lambda model: len(model.name.replace("*", "")),
            reverse=True,
        )
        self._wildcards = tuple(_Wildcard(re.compile(wildcard_regex(model.name)), model) for model in ordered)

    def resolve(self, name: str) -> ResolvedModel:
        """The model ``name`` designates; ModelNotFound (404) or ModelDisabled (503) otherwise."""
        resolved = self._lookup(name)
        if resolved is None:
            shown = name[:_SHOWN_NAME]
            raise ModelNotFound(
                f"model {shown!r} is not configured on this gateway; GET /v1/models lists its models",
                param="model",
            )
        if not resolved.config.enabled:
            raise ModelDisabled(
                f"model {resolved.config.name!r} is disabled: environment variable "
                f"{', '.join(resolved.config.missing_env)} is not set on the gateway",
                param="model",
            )
        return resolved

    def listing(self) -> list[tuple[str, ModelConfig]]:
        """(id, model) for every enabled concrete model, then every visible alias that resolves to one."""
        listed = [(model.name, model) for model in self._exact.values() if model.enabled]
        for alias, spec in self.aliases.items():
            target = self._lookup(alias)
            if not spec.hidden and target is not None and target.config.enabled:
                listed.append((alias, target.config))
        return listed

    @property
    def disabled(self) -> list[ModelConfig]:
        """Disabled deployments (a group may still serve through its enabled ones)."""
        return [model for model in self.models if not model.enabled]

    def _lookup(self, name: str) -> ResolvedModel | None:
        found = self._named(name, name)
        if found is None and DATE_SUFFIX.search(name):
            found = self._named(DATE_SUFFIX.sub("", name), name)
        return found or self._wildcard(name, name)

    def _named(self, name: str, requested: str) -> ResolvedModel | None:
        model = self._exact.get(name)
        if model is not None:
            return ResolvedModel(requested, model, model.litellm_model, model.name)
        alias = self.aliases.get(name)
        if alias is None:
            return None
        model = self._exact.get(alias.target)
        if model is not None:
            return ResolvedModel(requested, model, model.litellm_model, model.name)
        return self._wildcard(alias.target, requested)

    def _wildcard(self, name: str, requested: str) -> ResolvedModel | None:
        for wildcard in self._wildcards:
            match = wildcard.regex.fullmatch(name)
            if match is None:
                continue
            litellm_model = wildcard.config.litellm_model
            for captured in match.groups():
                if "*" not in litellm_model:
                    break
                litellm_model = litellm_model.replace("*", captured, 1)
            if steers_url(name) or steers_url(litellm_model):
                raise InvalidRequest(STEERING_REFUSED, param="model", code="invalid_model_id")
            return ResolvedModel(requested, wildcard.config, litellm_model, name)
        return None


def steers_url(model: str) -> bool:
    """Whether a model id would change the URL it is put into beyond its own path segments."""
    return URL_STEERING.search(model) is not None or any(part in DOT_SEGMENTS for part in model.split("/"))
