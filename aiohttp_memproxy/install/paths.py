"""Where an installed gateway keeps its config and env file, and which config a command reads.

A ``pipx``/``uv tool``/``pip`` install has no checkout around it: ``memproxy init`` writes a config and an env
file into the user's config directory, and every command finds them there when no ``--config`` is given.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp_memproxy.config.settings import ConfigError

APP = "aiohttp-memproxy"
CONFIG_NAME = "config.yaml"
ENV_NAME = "env"  # beside the config; the systemd units of a source install read the same file
CHECKOUT_CONFIG = Path("conf") / CONFIG_NAME
SYSTEM_DIR = Path("/etc") / APP


def home(environ: Mapping[str, str] = os.environ) -> Path:
    """The user's home as the environment names it (a test's, a service's), else the account's."""
    return Path(environ.get("HOME") or Path.home())


def config_dir(platform: str = sys.platform, environ: Mapping[str, str] = os.environ) -> Path:
    """The user's config directory for this gateway: XDG on Linux, Application Support on macOS."""
    home_dir = home(environ)
    if platform == "darwin":
        return home_dir / "Library" / "Application Support" / APP
    return Path(environ.get("XDG_CONFIG_HOME") or home_dir / ".config") / APP


@dataclass(frozen=True)
class Found:
    """The config a command reads, and why that one."""

    path: Path
    why: str
    env_file: Path | None  # the env file read with it (values from the real environment win)


def candidates(environ: Mapping[str, str] = os.environ, cwd: Path | None = None) -> list[tuple[Path, str]]:
    """The configs looked for when no ``--config`` is given, in order."""
    found = []
    if environ.get("MEMPROXY_CONFIG"):
        found.append((Path(environ["MEMPROXY_CONFIG"]), "$MEMPROXY_CONFIG"))
    here = cwd or Path.cwd()
    if is_checkout(here):
        found.append((here / CHECKOUT_CONFIG, "a checkout's conf/"))
    found += [
        (config_dir(environ=environ) / CONFIG_NAME, "the user config directory"),
        (SYSTEM_DIR / CONFIG_NAME, "the system config directory"),
    ]
    return found


def is_checkout(directory: Path) -> bool:
    """Whether ``directory`` is a checkout of this project. Only then is its conf/config.yaml a candidate: a
    config found in whatever directory the user stands in (a repository just cloned) could send the keys of
    the environment to any host it names."""
    try:
        return f"name = {APP}\n" in (directory / "setup.cfg").read_text()
    except (OSError, UnicodeDecodeError):
        return False


def find_config(
    explicit: str | None, environ: Mapping[str, str] = os.environ, cwd: Path | None = None
) -> Found:
    """``--config`` as given, else the first of ``candidates`` that exists; ConfigError naming every place
    looked when none does, or when the one found is writable by others or belongs to another user. The env
    file beside the config is read with it, except beside a checkout's (a developer's shell has the keys)
    and the system's (its service reads it as root)."""
    if explicit:
        path = Path(explicit)
        return Found(path, "--config", _env_beside(path))
    looked = candidates(environ, cwd)
    for path, why in looked:
        if path.is_file():
            if not _trusted(path.stat(), 0):  # root's: /etc's
                raise ConfigError(str(path), ["the config is writable by others or not yours: not read"])
            return Found(path, why, None if why == "a checkout's conf/" else _env_beside(path))
    places = ", ".join(str(path) for path, _ in looked)
    raise ConfigError(
        "config.yaml", [f"no config found (looked in {places}): run `memproxy init`, or pass --config"]
    )


def _env_beside(config: Path) -> Path | None:
    env_file = config.with_name(ENV_NAME)
    if config.parent.absolute() == SYSTEM_DIR or not env_file.is_file():
        return None
    return env_file


def _trusted(info: os.stat_result, *owners: int) -> bool:
    """Yours (or one of ``owners``'), and nobody else may write it: as ``statedir`` trusts its files (that
    module serves the running gateway, and stays out of these commands' imports)."""
    return info.st_uid in (os.geteuid(), *owners) and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def read_env_file(path: Path) -> dict[str, str]:
    """``NAME=value`` lines as systemd's EnvironmentFile= reads them (``#`` and ``;`` comments, single or
    double quotes, ``\\`` and ``\\"`` inside double quotes). Refused (ConfigError) when another user owns it
    or others may write it: it decides where the keys go (HTTPS_PROXY, SSL_CERT_FILE)."""
    try:
        with path.open(encoding="utf-8") as file:  # one open: what is checked is what is read
            info = os.fstat(file.fileno())
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), [f"cannot read the env file ({type(exc).__name__})"]) from None
    if not _trusted(info):
        raise ConfigError(str(path), ["the env file is writable by others or not yours: not read"])
    values: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if name.startswith("export ") or name.startswith("export\t"):
            raise ConfigError(
                str(path), [f"line {number}: no `export` (systemd's EnvironmentFile= ignores it)"]
            )
        if not sep or not name.isidentifier():
            raise ConfigError(str(path), [f"line {number}: expected NAME=value"])
        values[name] = _unquoted(value.strip())
    return values


def _unquoted(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        inner, out, escaped = value[1:-1], [], False
        for char in inner:
            if escaped:
                out.append(char if char in '"\\$`' else "\\" + char)
                escaped = False
            elif char == "\\":
                escaped = True
            else:
                out.append(char)
        return "".join(out)
    return value


def load_env_file(path: Path | None, environ: MutableMapping[str, str]) -> list[str]:
    """The env file's values put in ``environ`` where it has none of its own; the names set."""
    if path is None:
        return []
    values = read_env_file(path)
    added = [name for name in values if name not in environ]
    for name in added:
        environ[name] = values[name]
    return added
