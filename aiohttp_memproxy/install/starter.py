"""``memproxy init``: a starter config and an env file in the user's config directory, never overwriting one.

The config is the shipped starter (every model behind ``os.environ/NAME``, the demo model needing none); the
env file (mode 0600) carries the keys found in the environment for the variables that config names, and a
generated master key, so that the service, which does not inherit the shell's environment, has them too.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import TextIO

from aiohttp_memproxy.config.load import load_settings
from aiohttp_memproxy.config.settings import ConfigError
from aiohttp_memproxy.install.paths import CONFIG_NAME, ENV_NAME, read_env_file

MASTER_KEY = "MEMPROXY_MASTER_KEY"
STRONG = 16  # characters: what the gateway asks of a master key beyond loopback
VARIABLE = re.compile(r"os\.environ/([A-Za-z_][A-Za-z0-9_]*)")
UNQUOTABLE = re.compile(r"[\"'\\\n\r$`]")


def shipped(name: str) -> str:
    """A file shipped in the package: the starter config, the env example, a service template."""
    return (resources.files("aiohttp_memproxy.install") / "files" / name).read_text()


def variables(config_text: str) -> list[str]:
    """The environment variables a config names (``os.environ/NAME``), in order, once each."""
    return list(dict.fromkeys(VARIABLE.findall(config_text)))


def _create(path: Path, text: str, mode: int) -> bool:
    """``text`` written to a new file of ``mode``; False, and nothing written, when ``path`` exists."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        return False
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
    return True


def env_text(template: str, values: Mapping[str, str]) -> str:
    """The env example with ``values`` filled in on their ``NAME=`` lines (at the end where it has none)."""
    lines, done = [], set()
    for line in template.splitlines():
        name, sep, rest = line.partition("=")
        if sep and not rest and name in values:
            line = f'{name}="{values[name]}"' if " " in values[name] else f"{name}={values[name]}"
            done.add(name)
        lines.append(line)
    lines += [f"{name}={value}" for name, value in values.items() if name not in done]
    return "\n".join(lines) + "\n"


def init(directory: Path, environ: Mapping[str, str], out: TextIO, err: TextIO) -> int:
    directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    config, env = directory / CONFIG_NAME, directory / ENV_NAME
    starter = shipped("config.yaml")
    # No secret is in it (os.environ/NAME only): readable by a system service's own user.
    wrote_config = _create(config, starter, 0o644)
    print(f"{'wrote' if wrote_config else 'kept (exists, not overwritten)'}: {config}", file=out)
    if env.exists():
        print(f"kept (exists, not overwritten): {env}", file=out)
    else:
        names = variables(config.read_text())
        found, skipped = {}, []
        for name in names:
            value = environ.get(name, "")
            if name == MASTER_KEY or not value:
                continue
            if UNQUOTABLE.search(value):
                skipped.append(name)
            else:
                found[name] = value
        key = environ.get(MASTER_KEY, "")
        generated = len(key) < STRONG or bool(UNQUOTABLE.search(key)) or " " in key
        found[MASTER_KEY] = "sk-memproxy-" + secrets.token_urlsafe(32) if generated else key
        if not _create(env, env_text(shipped("memproxy.env.example"), found), 0o600):
            print(f"memproxy init: {env} appeared meanwhile: kept, not overwritten", file=err)
            return 1
        print(f"wrote: {env} (mode 0600)", file=out)
        keys = [name for name in found if name != MASTER_KEY]
        print(f"  keys found in the environment: {', '.join(keys) if keys else 'none'}", file=out)
        for name in skipped:
            print(f"  not copied: {name} (quotes, $ or a backslash in its value): add it by hand", file=err)
        how = "generated" if generated else f"taken from ${MASTER_KEY}"
        print(
            f"  {MASTER_KEY}: {how} (clients send it; `memproxy env <client>` prints what they need)",
            file=out,
        )
    try:
        settings = load_settings(config, {**read_env_file(env), **environ})
    except ConfigError as exc:
        print(f"memproxy init: {exc.source}: {'; '.join(exc.errors)}", file=err)
        return 1
    enabled = [model.name for model in settings.models if model.enabled]
    print(f"models enabled: {', '.join(enabled) if enabled else 'none'}", file=out)
    print(
        "next: `memproxy serve` (or `memproxy service install` to run it as a service), then "
        "`memproxy env claude` (or codex, gemini, pycharm, opencode)",
        file=out,
    )
    return 0
