"""Whether a config may serve where it listens: a master key, strong enough, beyond loopback. Checked at
start and at every reload (a reload that fails them keeps the old config)."""

from __future__ import annotations

from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.outbound.egress import is_loopback

# Keys that LiteLLM's docs and examples publish: a gateway reachable from elsewhere must not use them.
PUBLIC_DEFAULT_KEYS = frozenset(
    {"sk-1234", "sk-12345", "sk-123456", "sk-1234567890", "sk-master-key", "sk-admin", "changeme", "password"}
)


MIN_KEY_LENGTH = 16


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
