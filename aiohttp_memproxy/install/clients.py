"""``memproxy env <client>`` and ``memproxy run <client> -- ...``: a coding client pointed at this gateway.

What each client needs is what the README's "Point your IDE at it" says, filled in from the config the
gateway serves: its address and its master key. ``env`` prints it for a shell (``eval "$(memproxy env
claude)"``) or, for PyCharm, for a settings dialog; ``run`` starts the client with it, as claude-code-router's
``ccr code`` does, changing nothing of the user's shell or files.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.install.paths import home

CLIENTS = ("claude", "codex", "gemini", "pycharm", "opencode")
# What a client sends as its key to a gateway with no master key: any value passes on loopback.
NO_KEY = "memproxy-no-master-key"
KEY_VARIABLE = "MEMPROXY_MASTER_KEY"  # where Codex and opencode read the key from (their config names it)
CODEX_PROVIDER = "memproxy"
CODEX_KEY = f"model_providers.{CODEX_PROVIDER}"  # its table in Codex's config.toml
# Gemini CLI (0.61) given a base URL takes its auth type for a "gateway" it then refuses ("Invalid auth method
# selected") unless its settings choose the API key. Its settings files are the user's (and a system file
# must be root's all the way up): said, not written.
GEMINI_AUTH = (
    'Gemini CLI also needs, once, in ~/.gemini/settings.json: {"security": {"auth": {"selectedType": '
    '"gemini-api-key"}}}'
)


@dataclass(frozen=True)
class Setup:
    """What one client needs: variables to set, to unset, arguments to put first, and words for the user."""

    client: str
    binary: str | None
    exports: dict[str, str]
    unset: tuple[str, ...] = ()
    arguments: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


def base_url(settings: Settings) -> str:
    """The gateway's address as a client on this machine reaches it (a wildcard bind: on loopback)."""
    host, port = settings.gateway.host, settings.gateway.port
    if host in ("", "0.0.0.0", "::"):  # noqa: S104  # a wildcard bind, reached on loopback
        host = "127.0.0.1"
    try:
        if ipaddress.ip_address(host).version == 6:
            host = f"[{host}]"
    except ValueError:
        pass  # a name
    return f"http://{host}:{port}"


def _codex_provider(url: str) -> str:
    return f'{{name="aiohttp-memproxy", base_url="{url}/v1", env_key="{KEY_VARIABLE}", wire_api="responses"}}'


def setup(client: str, settings: Settings) -> Setup:
    url, key = base_url(settings), settings.master_key or NO_KEY
    if client == "claude":
        # A token (sent as Bearer) rather than ANTHROPIC_API_KEY: Claude Code asks no approval for it, and a
        # real Anthropic key in the shell is not sent along (both set is a conflict Claude Code warns of).
        return Setup(
            client,
            "claude",
            {"ANTHROPIC_BASE_URL": url, "ANTHROPIC_AUTH_TOKEN": key},
            unset=("ANTHROPIC_API_KEY",),
        )
    if client == "codex":
        return Setup(
            client,
            "codex",
            {KEY_VARIABLE: key},
            arguments=(
                "-c",
                f"model_provider={CODEX_PROVIDER}",
                "-c",
                f"{CODEX_KEY}={_codex_provider(url)}",
            ),
            notes=[
                "To make it Codex's default, in ~/.codex/config.toml:",
                f'model_provider = "{CODEX_PROVIDER}"',
                "",
                f"[{CODEX_KEY}]",
                'name = "aiohttp-memproxy"',
                f'base_url = "{url}/v1"',
                f'env_key = "{KEY_VARIABLE}"',
                'wire_api = "responses"',
            ],
        )
    if client == "gemini":
        return Setup(
            client,
            "gemini",
            {"GOOGLE_GEMINI_BASE_URL": url, "GEMINI_API_KEY": key},
            notes=[GEMINI_AUTH],
        )
    if client == "opencode":
        config = {
            "$schema": "https://opencode.ai/config.json",
            "provider": {
                "memproxy": {
                    "npm": "@ai-sdk/openai-compatible",
                    "name": "aiohttp-memproxy",
                    "options": {"baseURL": f"{url}/v1", "apiKey": f"{{env:{KEY_VARIABLE}}}"},
                    "models": {model.name: {} for model in settings.models if model.enabled},
                }
            },
        }
        return Setup(
            client,
            "opencode",
            {KEY_VARIABLE: key},
            notes=[
                "In opencode.json (your project's, or ~/.config/opencode/opencode.json):",
                *json.dumps(config, indent=2).splitlines(),
            ],
        )
    if client == "pycharm":
        return Setup(
            client,
            None,
            {},
            notes=[
                "PyCharm: Settings > Tools > AI Assistant > Models: an OpenAI-compatible provider with",
                f"  URL:     {url}/v1",
                f"  API key: {key}",
            ],
        )
    raise ValueError(client)


def _comment(text: str) -> str:
    """One comment line, whatever ``text`` holds (a config's host is the user's to write)."""
    return "# " + "".join(char if char.isprintable() else "?" for char in text) if text else "#"


def shell_text(found: Setup, url: str) -> str:
    """``found`` as lines a POSIX shell can ``eval``: exports quoted, everything else a comment."""
    lines = [_comment(f"{found.client} through aiohttp-memproxy at {url}")]
    if found.binary:
        lines.append(_comment(f'eval "$(memproxy env {found.client})", then run {found.binary}'))
    lines += [f"unset {name}" for name in found.unset]
    lines += [f"export {name}={shlex.quote(value)}" for name, value in found.exports.items()]
    if found.arguments:
        quoted = " ".join(shlex.quote(argument) for argument in found.arguments)
        lines.append(_comment(f"or per run: {found.binary} {quoted} ..."))
    lines += [_comment(note) for note in found.notes]
    return "\n".join(lines)


def child_environment(
    found: Setup, environ: Mapping[str, str], withheld: Iterable[str] = ()
) -> dict[str, str]:
    """The environment ``memproxy run`` starts the client with: the user's, set up for the gateway, without
    ``withheld`` (the provider keys the gateway's config reads)."""
    dropped = {*found.unset, *withheld} - set(found.exports)
    child = {name: value for name, value in environ.items() if name not in dropped}
    child.update(found.exports)
    return child


def child_arguments(found: Setup, arguments: list[str]) -> list[str]:
    """The client's arguments with the gateway's first (after a Codex subcommand, where its options go)."""
    if found.client == "codex" and arguments and not arguments[0].startswith("-"):
        return [arguments[0], *found.arguments, *arguments[1:]]
    return [*found.arguments, *arguments]


def gemini_auth_missing(environ: Mapping[str, str]) -> bool:
    """Whether the user's Gemini CLI settings leave its auth type to the environment (which fails here)."""
    gemini_home = Path(environ["GEMINI_CLI_HOME"]) if environ.get("GEMINI_CLI_HOME") else home(environ)
    try:
        settings = json.loads((gemini_home / ".gemini" / "settings.json").read_text())
        chosen = settings["security"]["auth"]["selectedType"]
    except (OSError, ValueError, KeyError, TypeError):
        return True
    return bool(chosen != "gemini-api-key")
