"""What a loaded config is: frozen settings, one ``ModelConfig`` per ``model_list`` entry, and the errors
and warnings loading reports (never a value that could be a secret)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import (
    ValidationError,
)

from aiohttp_memproxy.config.schema import GatewaySettings, LitellmSettings, RoutingConfig, error_lines
from aiohttp_memproxy.outbound.egress import Egress


class ConfigError(Exception):
    """The config cannot be used. ``errors`` are ``key.path: message`` lines, safe to print."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.source = source
        self.errors = tuple(errors)
        super().__init__(f"{source}: " + "; ".join(self.errors))


@dataclass(frozen=True)
class ConfigWarning:
    """Something to log once at startup: a snake_case event and its fields (never a secret)."""

    event: str
    fields: Mapping[str, Any]


@dataclass(frozen=True)
class ModelConfig:
    """One ``model_list`` entry, resolved. ``missing_env`` non-empty means disabled (not fatal)."""

    name: str
    params: Mapping[str, Any] = field(repr=False)  # litellm_params, os.environ/ resolved: holds secrets
    info: Mapping[str, Any]
    supermemory: bool
    missing_env: tuple[str, ...] = ()
    id: str = ""  # the deployment's id: model_info.id, else the model_name and its ordinal in the list

    @property
    def where(self) -> str:
        """The deployment as a log line or /health may show it: provider and api_base host (with its port),
        never a path, user or key."""
        url = urlsplit(str(self.params.get("api_base") or ""))
        try:
            host = f"{url.hostname}:{url.port}" if url.port else url.hostname
        except ValueError:  # a port that is not one: the host alone
            host = url.hostname
        return f"{self.provider}/{host}" if host else self.provider

    @property
    def enabled(self) -> bool:
        return not self.missing_env

    @property
    def litellm_model(self) -> str:
        return str(self.params["model"])

    @property
    def provider(self) -> str:
        explicit = self.params.get("custom_llm_provider")
        return str(explicit) if explicit else self.litellm_model.partition("/")[0]

    @property
    def is_wildcard(self) -> bool:
        return "*" in self.name


@dataclass(frozen=True)
class Alias:
    target: str
    hidden: bool = False


@dataclass(frozen=True)
class Settings:
    source: Path
    models: tuple[ModelConfig, ...]
    aliases: Mapping[str, Alias]
    litellm: LitellmSettings
    routing: RoutingConfig
    gateway: GatewaySettings  # the memproxy: section
    master_key: str | None = field(default=None, repr=False)
    # litellm.Router's arguments from router_settings over litellm_settings (only the keys the file sets).
    router: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[ConfigWarning, ...] = ()
    digest: str = ""
    loaded_at: float = 0.0
    egress: Egress = field(
        default_factory=Egress
    )  # proxies and CA files, from the config and the environment

    def with_overrides(self, **overrides: Any) -> Settings:
        """CLI flags over ``memproxy:``; ``None`` means "not given"."""
        given = {key: value for key, value in overrides.items() if value is not None}
        if not given:
            return self
        try:
            gateway = GatewaySettings.model_validate({**self.gateway.model_dump(), **given})
        except ValidationError as exc:
            raise ConfigError("command line", error_lines(exc, prefix="--")) from None
        return replace(self, gateway=gateway)
