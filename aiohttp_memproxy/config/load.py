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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from aiohttp_memproxy.config.schema import (
    LITELLM_ROUTING_KEYS,
    ROUTING_KEYS,
    ConfigFile,
    ModelEntry,
    error_lines,
    wildcard_regex,
)
from aiohttp_memproxy.config.settings import Alias, ConfigError, ConfigWarning, ModelConfig, Settings
from aiohttp_memproxy.outbound.egress import Egress, EgressConfigError

ENV_PREFIX = "os.environ/"


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


FALLBACK_KEYS = ("fallbacks", "context_window_fallbacks", "content_policy_fallbacks")


KNOWN_LITELLM = (
    frozenset({"drop_params", "num_retries", "request_timeout", "ssl_verify"}) | LITELLM_ROUTING_KEYS
)


KNOWN_ROUTER = frozenset({"model_group_alias"}) | ROUTING_KEYS


KNOWN_ENTRY = frozenset({"model_name", "litellm_params", "model_info"})


def default_state_dir(environ: Mapping[str, str]) -> Path:
    """``$STATE_DIRECTORY`` (systemd), else under ``$XDG_STATE_HOME``, else under ``~/.local/state``."""
    if environ.get("STATE_DIRECTORY"):
        # systemd may pass several directories separated by colons; ours is the first.
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    if environ.get("XDG_STATE_HOME"):
        return Path(environ["XDG_STATE_HOME"]) / "aiohttp-memproxy"
    home = environ.get("HOME")
    return (Path(home) if home else Path.home()) / ".local" / "state" / "aiohttp-memproxy"


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
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as exc:
        errors.extend(error_lines(exc))
        raise ConfigError(str(source), errors) from None
    errors.extend(_cross_checks(parsed))
    if errors:
        raise ConfigError(str(source), errors)

    models = [
        _model_config(entry, tuple(missing), deployment_id)
        for entry, missing, deployment_id in zip(
            parsed.model_list, models_missing, _deployment_ids(parsed), strict=True
        )
    ]
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
    except EgressConfigError as exc:
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


def _deployment_ids(parsed: ConfigFile) -> list[str]:
    """Each entry's deployment id: its model_info.id, else its model_name and its ordinal among the entries
    of that name (several entries under one model_name are the deployments of one model group)."""
    ordinals: dict[str, int] = {}
    ids = []
    for entry in parsed.model_list:
        ordinal = ordinals[entry.model_name] = ordinals.get(entry.model_name, -1) + 1
        explicit = entry.model_info.model_dump(exclude_none=True).get("id")
        ids.append(str(explicit or f"{entry.model_name}/{ordinal}"))
    return ids


def _model_config(entry: ModelEntry, missing: tuple[str, ...], deployment_id: str) -> ModelConfig:
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
        id=deployment_id,
    )


def _router_arguments(parsed: ConfigFile) -> dict[str, Any]:
    """litellm.Router's arguments: litellm_settings' routing defaults, then router_settings over them."""
    arguments = parsed.litellm_settings.model_dump(include=set(LITELLM_ROUTING_KEYS), exclude_none=True)
    arguments.update(parsed.router_settings.model_dump(include=set(ROUTING_KEYS), exclude_none=True))
    return arguments


def _cross_checks(parsed: ConfigFile) -> list[str]:
    errors: list[str] = []
    # Each deployment's id must be its own (LiteLLM's Router keys its deployments by it).
    ids: dict[str, int] = {}
    for index, deployment_id in enumerate(_deployment_ids(parsed)):
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
