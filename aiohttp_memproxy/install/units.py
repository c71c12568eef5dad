"""``memproxy service install|uninstall|status``: the gateway as a service of the user's session, or the
system's.

On Linux, a systemd unit (the hardened ones shipped in ``files/``), pointing at the running installation's
``memproxy`` and the config it reads, with the env file beside that config as its ``EnvironmentFile=``. On
macOS, a LaunchAgent (``~/Library/LaunchAgents``): started at login and kept alive, its logs under
``~/Library/Logs``, the env file read at start (``serve --env-file``), loaded with ``launchctl bootstrap``.
Every step is a ``Plan``: ``--dry-run`` prints it, otherwise it is carried out.
"""

from __future__ import annotations

import os
import plistlib
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from aiohttp_memproxy.install.paths import APP, ENV_NAME, home
from aiohttp_memproxy.install.starter import shipped

UNIT = f"{APP}.service"
LABEL = f"io.github.{APP}"  # launchd's reverse-DNS label
SYSTEM_UNITS = Path("/etc/systemd/system")


@dataclass
class Plan:
    """What an action writes, removes and runs, in that order."""

    directories: list[Path] = field(default_factory=list)  # made (0700) before anything is written
    write: list[tuple[Path, str]] = field(default_factory=list)  # (path, content), mode 0644
    remove: list[Path] = field(default_factory=list)
    run: list[list[str]] = field(default_factory=list)
    tolerate: set[int] = field(default_factory=set)  # indexes of commands whose failure is expected
    retry: set[int] = field(default_factory=set)  # indexes of commands tried again (3 times, 1 s apart)
    notes: list[str] = field(default_factory=list)


def executable() -> list[str]:
    """The running installation's ``memproxy`` (pipx, uv tool, a venv), else its Python with ``-m``."""
    script = Path(sys.executable).parent / "memproxy"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "aiohttp_memproxy"]


def _systemd_word(word: str) -> str:
    """One ExecStart= argument as systemd reads it back: quoted, its specifiers (%) and variables ($) kept
    literal."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"' if escaped != word or any(char.isspace() for char in word) else word


def _unit(template: str, command: list[str], config: Path, env_file: Path) -> str:
    exec_start = " ".join(_systemd_word(word) for word in [*command, "serve", "--config", str(config)])
    lines = []
    for line in template.splitlines():
        if line.startswith("ExecStart="):
            line = f"ExecStart={exec_start}"
        elif line.startswith("EnvironmentFile="):
            line = f"EnvironmentFile=-{str(env_file).replace('%', '%%')}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def _user_units(environ: Mapping[str, str]) -> Path:
    return Path(environ.get("XDG_CONFIG_HOME") or home(environ) / ".config") / "systemd" / "user"


def _plist_path(environ: Mapping[str, str]) -> Path:
    return home(environ) / "Library" / "LaunchAgents" / f"{LABEL}.plist"


def _logs(environ: Mapping[str, str]) -> Path:
    return home(environ) / "Library" / "Logs" / APP


def plist(command: list[str], config: Path, env_file: Path, environ: Mapping[str, str]) -> bytes:
    logs = _logs(environ)
    return plistlib.dumps(
        {
            "Label": LABEL,
            # The env file as it is at install (launchd has no optional file: a missing one would fail
            # every start).
            "ProgramArguments": [
                *command,
                "serve",
                "--config",
                str(config),
                *(["--env-file", str(env_file)] if env_file.is_file() else []),
            ],
            "RunAtLoad": True,
            "KeepAlive": True,
            "ProcessType": "Interactive",  # answers the user's editor: not throttled as background work
            "StandardOutPath": str(logs / "memproxy.log"),
            "StandardErrorPath": str(logs / "memproxy.err.log"),
            "EnvironmentVariables": {"LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            "Umask": 0o077,
        }
    )


def plan(
    action: str, platform: str, system: bool, config: Path, environ: Mapping[str, str], uid: int
) -> Plan:
    """What ``action`` (install, uninstall, status) does on ``platform`` for the user's or the system's
    service of ``config``."""
    command = executable()
    env_file = config.with_name(ENV_NAME)
    found = Plan()
    if platform == "darwin":
        if system:
            raise ValueError("on macOS the gateway runs as the user's LaunchAgent: use --user")
        path, target = _plist_path(environ), f"gui/{uid}"
        if action == "install":
            logs = _logs(environ)
            found.directories.append(logs)
            found.write.append((path, plist(command, config, env_file, environ).decode()))
            found.run.append(["launchctl", "bootout", f"{target}/{LABEL}"])
            found.tolerate.add(0)  # not loaded yet: nothing to take out
            found.run.append(["launchctl", "bootstrap", target, str(path)])
            found.retry.add(1)  # launchd may still be taking the old one down
            found.notes.append(f"logs: {logs}")
        elif action == "uninstall":
            found.run.append(["launchctl", "bootout", f"{target}/{LABEL}"])
            found.tolerate.add(0)
            found.remove.append(path)
        else:
            found.run.append(["launchctl", "print", f"{target}/{LABEL}"])
        return found
    scope = [] if system else ["--user"]
    path = (SYSTEM_UNITS if system else _user_units(environ)) / UNIT
    if action == "install":
        template = shipped(UNIT if system else f"{APP}-user.service")
        found.write.append((path, _unit(template, command, config, env_file)))
        found.run += [["systemctl", *scope, "daemon-reload"], ["systemctl", *scope, "enable", "--now", UNIT]]
        hidden = [part for part in (command[0], str(config)) if part.startswith(("/home/", "/root/"))]
        if system and hidden:
            raise ValueError(
                f"{hidden[0]} is under a home directory, which the system unit hides (ProtectHome=yes): "
                "install the gateway and its config outside (sudo make install-service: /opt and /etc), "
                "or use --user"
            )
    elif action == "uninstall":
        found.run.append(["systemctl", *scope, "disable", "--now", UNIT])
        found.tolerate.add(0)
        found.remove.append(path)
        found.run.append(["systemctl", *scope, "daemon-reload"])
    else:
        found.run.append(["systemctl", *scope, "--no-pager", "status", UNIT])
    return found


def describe(found: Plan, out: TextIO) -> None:
    """The plan as ``--dry-run`` prints it: each file between markers, then each command."""
    for directory in found.directories:
        print(f"# would make: {directory} (mode 0700)", file=out)
    for path, content in found.write:
        print(f"# would write: {path} (mode 0644)", file=out)
        print(content.rstrip("\n"), file=out)
        print(f"# end of {path}", file=out)
    for path in found.remove:
        print(f"# would remove: {path}", file=out)
    for command in found.run:
        print(f"# would run: {' '.join(command)}", file=out)
    for note in found.notes:
        print(f"# note: {note}", file=out)


def carry_out(
    found: Plan,
    out: TextIO,
    err: TextIO,
    runner: Callable[[list[str]], int] = lambda command: subprocess.call(command),  # noqa: S603  # our own plan
) -> int:
    """Write, remove, then run, stopping at the first command that fails (and is not expected to)."""
    for directory in found.directories:
        directory.mkdir(parents=True, mode=0o700, exist_ok=True)
    for path, content in found.write:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
        path.chmod(0o644)
        print(f"wrote: {path}", file=out)
    for path in found.remove:
        if path.exists():
            path.unlink()
            print(f"removed: {path}", file=out)
    for index, command in enumerate(found.run):
        for attempt in range(3 if index in found.retry else 1):
            if attempt:
                time.sleep(1)
            try:
                code = runner(command)
            except FileNotFoundError:
                code = 127
            if code == 0:
                break
        if code != 0 and index not in found.tolerate:
            print(f"memproxy service: `{' '.join(command)}` exited {code}", file=err)
            return code
    for note in found.notes:
        print(f"note: {note}", file=out)
    return 0
