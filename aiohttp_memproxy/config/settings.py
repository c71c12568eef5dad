"""Load a LiteLLM proxy ``config.yaml`` (unchanged) plus our own sections into frozen objects, once.

The file is the one a LiteLLM proxy reads: ``model_list``, ``general_settings``, ``litellm_settings``,
``router_settings``, ``environment_variables``; plus ``user_id_mappings`` (memory routing) and ``memproxy``
(this project's own settings). ``os.environ/NAME`` is resolved anywhere in the sections we use. What a LiteLLM
config may carry but we do not implement loads with one warning. Every error names its key path, and no
message the loader writes carries a value that could be a secret.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
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

from aiohttp_memproxy.outbound.egress import Egress, ProxyConfigError, is_loopback

ENV_PREFIX = "os.environ/"
USER_ID_RE = re.compile(r"[A-Za-z0-9._:@-]{1,128}")
USER_ID_RULE = "1-128 characters of A-Z a-z 0-9 . _ : @ -"
SUPERMEMORY_HOST = "supermemory.ai"

# Keys of the LiteLLM sections that we implement; everything else there is reported as ignored.
KNOWN_TOP = frozenset(
    {
        "model_list",
        "general_settings",
        "litellm_settings",
        "router_settings",
        "environment_variables",
        "user_id_mappings",
        "memproxy",
    }
)
KNOWN_GENERAL = frozenset({"master_key"})
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
FALLBACK_KEYS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")
KNOWN_LITELLM = (
    frozenset({"drop_params", "num_retries", "request_timeout", "ssl_verify"}) | LITELLM_ROUTING_KEYS
)
KNOWN_ROUTER = frozenset({"model_group_alias"}) | ROUTING_KEYS
KNOWN_ENTRY = frozenset({"model_name", "litellm_params", "model_info"})

# Keys that LiteLLM's docs and examples publish: a gateway reachable from elsewhere must not use them.
PUBLIC_DEFAULT_KEYS = frozenset(
    {"sk-1234", "sk-12345", "sk-123456", "sk-1234567890", "sk-master-key", "sk-admin", "changeme", "password"}
)
MIN_KEY_LENGTH = 16
# A Host header's value as allowed_hosts and allowed_origins name it: a name or an address, an optional port.
HOST_RE = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:[0-9]{1,5})?")
# An origin's scheme (RFC 3986): http and https, and those of editors' and desktop apps' web views
# (vscode-webview, app, tauri, chrome-extension, ...).
SCHEME_RE = re.compile(r"[a-z][a-z0-9+.-]{0,31}")
DEFAULT_PORTS = {"http": ":80", "https": ":443"}


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
    # Admission (admission.py): Host names beyond loopback (a reverse proxy's, a LAN name; "*" only on a
    # non-loopback bind with a master key), and the browser origins allowed to call the API (CORS).
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


class _ModelEntry(_Section):
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


class _Raw(_Section):
    # May be empty, as for a LiteLLM proxy: forward mode needs no model (sdk mode warns at startup).
    model_list: list[_ModelEntry] = Field(default_factory=list)
    general_settings: _General = Field(default_factory=_General)
    litellm_settings: LitellmSettings = Field(default_factory=LitellmSettings)
    router_settings: _Router = Field(default_factory=_Router)
    user_id_mappings: RoutingConfig = Field(default_factory=RoutingConfig)
    memproxy: GatewaySettings = Field(default_factory=GatewaySettings)


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
            raise ConfigError("command line", _format_errors(exc, prefix="--")) from None
        return replace(self, gateway=gateway)


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """``$STATE_DIRECTORY`` (systemd), else under ``$XDG_STATE_HOME``, else under ``~/.local/state``."""
    if environ.get("STATE_DIRECTORY"):
        # systemd may pass several directories separated by colons; ours is the first.
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    if environ.get("XDG_STATE_HOME"):
        return Path(environ["XDG_STATE_HOME"]) / "aiohttp-memproxy"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".local" / "state" / "aiohttp-memproxy"


def key_weakness(key: str) -> str | None:
    if key in PUBLIC_DEFAULT_KEYS:
        return "is a published default"
    if len(key) < MIN_KEY_LENGTH:
        return f"is shorter than {MIN_KEY_LENGTH} characters"
    return None


def exposure_problems(settings: Settings) -> tuple[list[str], list[str]]:
    """(errors, warnings) about serving on ``settings.gateway.host`` with this master key: checked at start
    and at every reload (a reload that fails them keeps the old config)."""
    host, key = settings.gateway.host, settings.master_key
    weakness = key_weakness(key) if key else None
    errors: list[str] = []
    warnings: list[str] = []
    if "*" in settings.gateway.allowed_hosts and (is_loopback(host) or key is None):
        errors.append(
            "memproxy.allowed_hosts: '*' turns the Host check off, which is allowed only on a non-loopback "
            "host with general_settings.master_key set: list the names instead"
        )
    if is_loopback(host):
        if key is None:
            warnings.append(f"no master_key: any local process can use this gateway on {host}")
        elif weakness:
            warnings.append(f"general_settings.master_key {weakness}")
    elif key is None:
        errors.append(f"refusing to listen on non-loopback {host} without general_settings.master_key")
    elif weakness:
        errors.append(f"refusing to listen on non-loopback {host}: general_settings.master_key {weakness}")
    return errors, warnings


def load_settings(path: str | Path, environ: Mapping[str, str]) -> Settings:
    """Read, resolve and validate ``path``; raise ConfigError listing every problem found."""
    source = Path(path)
    try:
        text = source.read_bytes()
    except OSError as exc:
        raise ConfigError(str(source), [f"cannot read the file: {exc.strerror}"]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(str(source), [_yaml_problem(exc)]) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(str(source), [f"expected a mapping at the top level, got {type(doc).__name__}"])
    return _build(source, doc, environ, hashlib.sha256(text).hexdigest())


def _yaml_problem(exc: yaml.YAMLError) -> str:
    # Only the position and the parser's words: the offending line itself may hold a key.
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or "not valid YAML"
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{where}: {problem}"


def _resolve(value: Any, env: Mapping[str, str], path: str, missing: list[tuple[str, str]]) -> Any:
    """Replace ``os.environ/NAME`` strings anywhere in ``value``; record (path, NAME) for unset ones."""
    if isinstance(value, str) and value.startswith(ENV_PREFIX):
        name = value[len(ENV_PREFIX) :]
        resolved = env.get(name)
        if not resolved:  # unset and empty alike: an empty key is no key
            missing.append((path, name))
            return ""  # type-valid, so a disabled model still validates; it is never called
        return resolved
    if isinstance(value, dict):
        return {key: _resolve(item, env, f"{path}.{key}", missing) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, env, f"{path}[{index}]", missing) for index, item in enumerate(value)]
    return value


def _known(doc: dict[str, Any], name: str, known: frozenset[str], ignored: list[str]) -> Any:
    section = doc.get(name)
    if not isinstance(section, dict):
        return section
    ignored.extend(f"{name}.{key}" for key in section if key not in known)
    return {key: value for key, value in section.items() if key in known}


def _build(source: Path, doc: dict[str, Any], environ: Mapping[str, str], digest: str) -> Settings:
    ignored = [key for key in doc if key not in KNOWN_TOP]
    extra_env = doc.get("environment_variables") or {}
    if not isinstance(extra_env, dict):
        raise ConfigError(str(source), ["environment_variables: expected a mapping"])
    # As the LiteLLM proxy does, environment_variables from the file win over the process environment.
    env: dict[str, str] = {**environ, **{str(k): str(v) for k, v in extra_env.items() if v is not None}}

    errors: list[str] = []
    warnings: list[ConfigWarning] = []
    fatal_missing: list[tuple[str, str]] = []
    raw: dict[str, Any] = {}
    for name, known in (
        ("general_settings", KNOWN_GENERAL),
        ("litellm_settings", KNOWN_LITELLM),
        ("router_settings", KNOWN_ROUTER),
    ):
        if name in doc:
            raw[name] = _known(doc, name, known, ignored)
    for name in ("user_id_mappings", "memproxy"):
        if name in doc:
            raw[name] = doc[name]

    general = raw.get("general_settings")
    if isinstance(general, dict) and "master_key" in general:
        key_missing: list[tuple[str, str]] = []
        general = {**general, "master_key": _resolve(general["master_key"], env, "", key_missing) or None}
        raw["general_settings"] = general
        for _, variable in key_missing:
            warnings.append(ConfigWarning("master_key_unset", {"variable": variable}))
    for name in ("litellm_settings", "router_settings", "user_id_mappings", "memproxy"):
        if name in raw:
            raw[name] = _resolve(raw[name], env, name, fatal_missing)
    if fatal_missing:
        raise ConfigError(
            str(source), [f"{path}: environment variable {name} is not set" for path, name in fatal_missing]
        )

    models_missing: list[list[str]] = []
    entries = doc.get("model_list")
    if isinstance(entries, list):
        resolved_entries = []
        for index, entry in enumerate(entries):
            if isinstance(entry, dict):
                ignored.extend(f"model_list[{index}].{key}" for key in entry if key not in KNOWN_ENTRY)
                entry = {key: value for key, value in entry.items() if key in KNOWN_ENTRY}
            entry_missing: list[tuple[str, str]] = []
            resolved_entries.append(_resolve(entry, env, f"model_list[{index}]", entry_missing))
            models_missing.append(sorted({name for _, name in entry_missing}))
        raw["model_list"] = resolved_entries
    elif entries is not None:
        raw["model_list"] = entries

    try:
        parsed = _Raw.model_validate(raw)
    except ValidationError as exc:
        errors.extend(_format_errors(exc))
        raise ConfigError(str(source), errors) from None
    errors.extend(_cross_checks(parsed))
    if errors:
        raise ConfigError(str(source), errors)

    ordinals: dict[str, int] = {}
    models = []
    for entry, missing in zip(parsed.model_list, models_missing, strict=True):
        ordinal = ordinals[entry.model_name] = ordinals.get(entry.model_name, -1) + 1
        models.append(_model_config(entry, tuple(missing), f"{entry.model_name}/{ordinal}"))
    for model in models:
        if model.missing_env:
            warnings.append(
                ConfigWarning("model_disabled", {"model": model.name, "missing_env": list(model.missing_env)})
            )
    if ignored:
        warnings.insert(0, ConfigWarning("config_keys_ignored", {"keys": ignored}))

    gateway = parsed.memproxy
    if gateway.state_dir is None:
        gateway = gateway.model_copy(update={"state_dir": default_state_dir(environ)})
    try:
        egress = Egress.configure(
            environ, gateway.upstream_proxy, gateway.ca_bundle, parsed.litellm_settings.ssl_verify
        )
    except ProxyConfigError as exc:
        raise ConfigError(str(source), [str(exc)]) from None
    unreadable = [
        f"{source}: CA file {path} cannot be read" for source, path in egress.ca_files if not path.is_file()
    ]
    if unreadable:
        raise ConfigError(str(source), unreadable)
    if not egress.verify:
        warnings.append(
            ConfigWarning(
                "tls_verification_disabled",
                {"detail": "litellm_settings.ssl_verify is false: upstream certificates are NOT checked"},
            )
        )
    return Settings(
        source=source,
        models=tuple(models),
        aliases={
            name: Alias(target=alias.model, hidden=alias.hidden)
            for name, alias in parsed.router_settings.model_group_alias.items()
        },
        litellm=parsed.litellm_settings,
        routing=parsed.user_id_mappings,
        gateway=gateway,
        master_key=parsed.general_settings.master_key,
        router=_router_arguments(parsed),
        warnings=tuple(warnings),
        digest=digest,
        loaded_at=time.time(),
        egress=egress,
    )


def _model_config(entry: _ModelEntry, missing: tuple[str, ...], default_id: str) -> ModelConfig:
    params = entry.litellm_params.model_dump(exclude_none=True)
    if not params.get("extra_headers"):
        params.pop("extra_headers", None)
    info = entry.model_info.model_dump(exclude_none=True)
    flag = entry.model_info.supermemory
    supermemory = flag if flag is not None else SUPERMEMORY_HOST in (entry.litellm_params.api_base or "")
    return ModelConfig(
        name=entry.model_name,
        params=params,
        info=info,
        supermemory=supermemory,
        missing_env=missing,
        id=str(info.get("id") or default_id),
    )


def _router_arguments(parsed: _Raw) -> dict[str, Any]:
    """litellm.Router's arguments: litellm_settings' routing defaults, then router_settings over them."""
    arguments = parsed.litellm_settings.model_dump(include=set(LITELLM_ROUTING_KEYS), exclude_none=True)
    arguments.update(parsed.router_settings.model_dump(include=set(ROUTING_KEYS), exclude_none=True))
    return arguments


def _cross_checks(parsed: _Raw) -> list[str]:
    errors: list[str] = []
    # Several entries under one model_name are the deployments of one model group (LiteLLM's load
    # balancing); each deployment's id (model_info.id, else model_name/ordinal) must be its own.
    ids: dict[str, int] = {}
    ordinals: dict[str, int] = {}
    for index, entry in enumerate(parsed.model_list):
        ordinal = ordinals[entry.model_name] = ordinals.get(entry.model_name, -1) + 1
        explicit = getattr(entry.model_info, "id", None)
        deployment_id = str(explicit) if explicit is not None else f"{entry.model_name}/{ordinal}"
        if deployment_id in ids:
            errors.append(
                f"model_list[{index}].model_info.id: deployment id {deployment_id!r} is already "
                f"model_list[{ids[deployment_id]}]'s"
            )
        ids.setdefault(deployment_id, index)
    names = {entry.model_name for entry in parsed.model_list}
    wildcards = [re.compile(wildcard_regex(name)) for name in names if "*" in name]
    aliases = parsed.router_settings.model_group_alias

    def unknown(model: str) -> str | None:
        """Why a fallback rule cannot name ``model``: LiteLLM's Router knows model groups, not our aliases."""
        if model in names or any(w.fullmatch(model) for w in wildcards):
            return None
        if model in aliases:
            return f"{model!r} is an alias: name the model_name it stands for"
        return f"unknown model {model!r}"

    for alias, spec in aliases.items():
        where = f"router_settings.model_group_alias.{alias}"
        if alias in names:
            errors.append(f"{where}: the alias shadows a model_list entry of the same name")
        elif spec.model not in names and not any(w.fullmatch(spec.model) for w in wildcards):
            errors.append(f"{where}: unknown model {spec.model!r}")
    for section in ("litellm_settings", "router_settings"):
        settings = getattr(parsed, section)
        for key in FALLBACK_KEYS:
            for index, rule in enumerate(getattr(settings, key) or ()):
                for group, targets in rule.items():
                    where = f"{section}.{key}[{index}].{group}"
                    problem = unknown(group) if group != "*" else None
                    if problem:
                        errors.append(f"{where}: {problem}")
                    errors.extend(
                        f"{where}: fallback {problem}" for target in targets if (problem := unknown(target))
                    )
        for target in settings.default_fallbacks or ():
            if problem := unknown(target):
                errors.append(f"{section}.default_fallbacks: {problem}")
    seen_rules: dict[tuple[str, str], int] = {}
    for index, rule in enumerate(parsed.user_id_mappings.header_patterns):
        rule_key = (rule.header, rule.pattern)
        if rule_key in seen_rules:
            errors.append(
                f"user_id_mappings.header_patterns[{index}]: duplicate (header, pattern) "
                f"of header_patterns[{seen_rules[rule_key]}]"
            )
        seen_rules.setdefault(rule_key, index)
    return errors


def wildcard_regex(name: str) -> str:
    """``claude-*`` -> ``claude\\-(.*)``: only ``*`` is special in a model_name."""
    return "(.*)".join(re.escape(part) for part in name.split("*"))


_PYDANTIC_WORDS = {"missing": "required", "extra_forbidden": "unknown key"}


def _format_errors(exc: ValidationError, prefix: str = "") -> list[str]:
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
        lines.append(f"{path}: {_PYDANTIC_WORDS.get(error['type'], error['msg'])}")
    return lines
