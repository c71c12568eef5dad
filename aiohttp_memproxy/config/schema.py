"""The sections of config.yaml as pydantic models: each value checked where it is read, each error
named by its key path (``error_lines``). What a LiteLLM config may carry and the gateway implements."""

from __future__ import annotations

import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

USER_ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")


USER_ID_RULE = "1-128 characters of A-Z a-z 0-9 . _ : @ -"


# LiteLLM's routing keys (its Router's arguments), passed to litellm.Router as a LiteLLM proxy passes them.
ROUTING_KEYS = frozenset(
    {
        "routing_strategy",
        "routing_strategy_args",
        "num_retries",
        "max_fallbacks",
        "timeout",
        "stream_timeout",
        "retry_after",
        "allowed_fails",
        "allowed_fails_policy",
        "cooldown_time",
        "disable_cooldowns",
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "default_fallbacks",
        "retry_policy",
        "model_group_retry_policy",
        "enable_pre_call_checks",
    }
)


# litellm_settings keys a LiteLLM proxy sets as litellm globals that its Router reads as defaults.
LITELLM_ROUTING_KEYS = frozenset(
    {
        "fallbacks",
        "context_window_fallbacks",
        "content_policy_fallbacks",
        "default_fallbacks",
        "allowed_fails",
    }
)


# A Host header's value as allowed_hosts and allowed_origins name it: a name or an address, an optional port.
HOST_RE = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:[0-9]{1,5})?")


# An origin's scheme (RFC 3986): http and https, and those of editors' and desktop apps' web views
# (vscode-webview, app, tauri, chrome-extension, ...).
SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]{0,31}")


DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _custom(message: str) -> PydanticCustomError:
    return PydanticCustomError("config", message)


def _user_id(value: str) -> str:
    if not USER_ID_RE.fullmatch(value):
        raise _custom(f"invalid user id: expected {USER_ID_RULE}")
    return value


def _lower(value: str) -> str:
    return value.strip().lower()


UserId = Annotated[str, AfterValidator(_user_id)]


HeaderName = Annotated[str, Field(min_length=1), AfterValidator(_lower)]


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class PatternRule(_Section):
    """One ``user_id_mappings.header_patterns`` entry: the regex *searches* the header's value."""

    header: HeaderName
    pattern: str
    user_id: UserId

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value, re.IGNORECASE)
        except re.error as exc:
            raise _custom(f"invalid regular expression: {exc.msg} at position {exc.pos}") from None
        return value

    @cached_property
    def regex(self) -> re.Pattern[str]:
        return re.compile(self.pattern, re.IGNORECASE)


class RoutingConfig(_Section):
    """``user_id_mappings``: how a request is attributed to a memory user."""

    custom_header: HeaderName = "x-memory-user-id"
    header_patterns: tuple[PatternRule, ...] = ()
    default_user_id: UserId = "default-dev"


class GatewaySettings(_Section):
    """``memproxy:``, the gateway settings. CLI flags override them."""

    host: str = "127.0.0.1"
    port: int = Field(default=8764, ge=1, le=65535)
    state_dir: Path | None = None
    max_body_mb: float = Field(default=32, gt=0)
    connect_timeout_s: float = Field(default=10, gt=0)
    read_timeout_s: float = Field(default=600, gt=0)
    pool_limit: int = Field(default=100, ge=1)
    retry_attempts: int = Field(default=2, ge=0, le=10)
    retry_base_delay_s: float = Field(default=0.5, ge=0)
    retry_after_max_s: float = Field(default=30, ge=0)
    drain_timeout_s: float = Field(default=30, ge=0)
    cookie_save_interval_s: float = Field(default=60, gt=0)
    usage_ledger: bool = True  # a row per model request in <state_dir>/usage.sqlite3 (and token metrics)
    usage_retention_days: float = Field(default=90, gt=0)  # the usage ledger's rows are kept this long
    mode: Literal["sdk", "forward"] = "sdk"
    upstream: str | None = None  # forward mode: the base URL every /v1/* request is proxied to
    upstream_key: str | None = Field(default=None, repr=False)  # forward mode: replaces the client's key
    # Outbound proxy for every upstream request (wins over HTTPS_PROXY/HTTP_PROXY; NO_PROXY still applies).
    upstream_proxy: str | None = Field(default=None, repr=False)  # may hold credentials
    ca_bundle: Path | None = None  # a CA file trusted in addition to the system store
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # Admission (server/admission.py): Host names beyond loopback (a reverse proxy's, a LAN name; "*" only on
    # a non-loopback bind with a master key), and the browser origins allowed to call the API (CORS).
    allowed_hosts: tuple[str, ...] = ()
    allowed_origins: tuple[str, ...] = ()
    # Inbound connections (connections.py): one not running a request (idle, or still sending its headers)
    # is closed after idle_timeout_s; at most max_connections are open (fewer if the file limit says so).
    idle_timeout_s: float = Field(default=30, gt=0)
    max_connections: int = Field(default=1000, ge=1)

    @field_validator("allowed_hosts", mode="after")
    @classmethod
    def _hosts(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        hosts = tuple(host.strip().lower() for host in value)
        for host in hosts:
            if host != "*" and not HOST_RE.fullmatch(host):
                raise _custom(
                    f"expected a host name or address (with an optional :port) or '*', got {host!r}"
                )
        return hosts

    @field_validator("allowed_origins", mode="after")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        origins = []
        for given in value:
            origin = given.strip().lower().rstrip("/")
            scheme, _, host = origin.partition("://")
            if not SCHEME_RE.fullmatch(scheme) or not HOST_RE.fullmatch(host):
                raise _custom(
                    "expected an origin such as http://localhost:3000 or vscode-webview://<id> (scheme, "
                    f"host, port), got {origin!r}"
                )
            # As a browser sends it: without the scheme's default port.
            default = DEFAULT_PORTS.get(scheme)
            origins.append(origin.removesuffix(default) if default else origin)
        return tuple(origins)

    @field_validator("upstream_proxy")
    @classmethod
    def _proxy_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise _custom("expected an http:// or https:// proxy URL")
        return value

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise _custom("expected an http:// or https:// base URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _forward_needs_upstream(self) -> GatewaySettings:
        if self.mode == "forward" and not self.upstream:
            raise _custom("mode forward needs memproxy.upstream (or --upstream, or MEMPROXY_UPSTREAM)")
        return self

    @field_validator("log_level", mode="before")
    @classmethod
    def _level_lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value


# LiteLLM's fallback lists: [{"model group": ["fallback group", ...]}, ...], tried in order.
FallbackList = list[dict[str, list[str]]]


RoutingStrategy = Literal[
    "simple-shuffle",
    "least-busy",
    "usage-based-routing",
    "usage-based-routing-v2",
    "latency-based-routing",
    "cost-based-routing",
]


NonNegative = Annotated[int, Field(ge=0)]


class LitellmSettings(_Section):
    drop_params: bool = False
    ssl_verify: bool | str = True  # LiteLLM's: false, or a CA bundle's path (trusted with the system store)
    num_retries: int = Field(default=0, ge=0)
    request_timeout: float = Field(default=600, gt=0)
    # Routing defaults a LiteLLM proxy sets as litellm globals (router_settings wins over them).
    fallbacks: FallbackList | None = None
    context_window_fallbacks: FallbackList | None = None
    content_policy_fallbacks: FallbackList | None = None
    default_fallbacks: list[str] | None = None
    allowed_fails: NonNegative | None = None


class _Alias(_Section):
    model: str = Field(min_length=1)
    hidden: bool = False


def _alias(value: Any) -> Any:
    return {"model": value} if isinstance(value, str) else value


class _LitellmParams(BaseModel):
    """``litellm_params``: the keys we read are typed; every other LiteLLM kwarg is kept and passed on."""

    model_config = ConfigDict(frozen=True, extra="allow")

    custom_llm_provider: str | None = None
    model: str
    api_base: str | None = None
    api_key: str | None = Field(default=None, repr=False)
    extra_headers: dict[str, str] = Field(default_factory=dict, repr=False)

    @field_validator("model")
    @classmethod
    def _provider_name(cls, value: str, info: ValidationInfo) -> str:
        provider, _, name = value.partition("/")
        if (not provider or not name) and not info.data.get("custom_llm_provider"):
            raise _custom(f"expected 'provider/name', got {value!r}")
        return value


class _ModelInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow")

    supermemory: bool | None = None


class ModelEntry(_Section):
    model_name: str = Field(min_length=1)
    litellm_params: _LitellmParams
    model_info: _ModelInfo = Field(default_factory=_ModelInfo)


class _General(_Section):
    master_key: str | None = Field(default=None, repr=False)


class _Router(_Section):
    model_group_alias: dict[str, Annotated[_Alias, BeforeValidator(_alias)]] = Field(default_factory=dict)
    # LiteLLM's Router arguments, typed where a mistake would otherwise surface only at request time.
    routing_strategy: RoutingStrategy | None = None
    routing_strategy_args: dict[str, Any] | None = None
    num_retries: NonNegative | None = None
    max_fallbacks: NonNegative | None = None
    timeout: float | None = Field(default=None, gt=0)
    stream_timeout: float | None = Field(default=None, gt=0)
    retry_after: NonNegative | None = None
    allowed_fails: NonNegative | None = None
    allowed_fails_policy: dict[str, NonNegative] | None = None
    cooldown_time: float | None = Field(default=None, ge=0)
    disable_cooldowns: bool | None = None
    fallbacks: FallbackList | None = None
    context_window_fallbacks: FallbackList | None = None
    content_policy_fallbacks: FallbackList | None = None
    default_fallbacks: list[str] | None = None
    retry_policy: dict[str, NonNegative] | None = None
    model_group_retry_policy: dict[str, dict[str, NonNegative]] | None = None
    enable_pre_call_checks: bool | None = None


class ConfigFile(_Section):
    # May be empty, as for a LiteLLM proxy: forward mode needs no model (sdk mode warns at startup).
    model_list: list[ModelEntry] = Field(default_factory=list)
    general_settings: _General = Field(default_factory=_General)
    litellm_settings: LitellmSettings = Field(default_factory=LitellmSettings)
    router_settings: _Router = Field(default_factory=_Router)
    user_id_mappings: RoutingConfig = Field(default_factory=RoutingConfig)
    memproxy: GatewaySettings = Field(default_factory=GatewaySettings)


def wildcard_regex(name: str) -> str:
    """``claude-*`` -> ``claude\\-(.*)``: only ``*`` is special in a model_name."""
    return "(.*)".join(re.escape(part) for part in name.split("*"))


PYDANTIC_WORDS = {"missing": "required", "extra_forbidden": "unknown key"}


def error_lines(exc: ValidationError, prefix: str = "") -> list[str]:
    lines = []
    for error in exc.errors(include_url=False, include_input=False):
        path = prefix
        if not error["loc"]:
            path = "memproxy" if prefix == "--" else prefix
        for part in error["loc"]:
            if isinstance(part, int):
                path += f"[{part}]"
            else:
                path += f".{part}" if path and path != prefix else str(part)
        lines.append(f"{path}: {PYDANTIC_WORDS.get(error['type'], error['msg'])}")
    return lines
