"""The state directory (the cookie jar, the usage ledger) is the user's alone, and so is what is read from it.

A cookie planted in ``cookies.json`` is sent upstream with every request to its host; a planted ledger is
what ``/ui`` and ``memproxy usage`` show. So the directory is created ``0700``; an existing one (its symlinks
resolved) that another user owns, or that group or others may write, is refused at start with its path and
the fix; and a file in it that group or others may write, or another user owns, is set aside unread (one
warning), as if it were not there.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import structlog
from aiohttp import web

from aiohttp_memproxy.config.settings import ConfigError
from aiohttp_memproxy.keys import SETTINGS

log = structlog.get_logger()

SHARED_WRITE = stat.S_IWGRP | stat.S_IWOTH


def prepare(directory: Path) -> Path:
    """The state directory, created 0700 if missing, its symlinks resolved; ConfigError if it is not the
    user's alone."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    return check(directory)


def check(directory: Path) -> Path:
    """An existing state directory, its symlinks resolved; ConfigError if it is not the user's alone."""
    resolved = directory.resolve()
    found = resolved.stat()
    if found.st_uid != os.geteuid():
        raise ConfigError(
            str(resolved),
            [
                f"the state directory {resolved} belongs to uid {found.st_uid}, not to this user (uid "
                f"{os.geteuid()}): choose one of your own (memproxy.state_dir or --state-dir)"
            ],
        )
    if found.st_mode & SHARED_WRITE:
        raise ConfigError(
            str(resolved),
            [
                f"the state directory {resolved} may be written by others (mode "
                f"{stat.S_IMODE(found.st_mode):04o}): run `chmod 700 {resolved}`, or choose another "
                "(memproxy.state_dir or --state-dir)"
            ],
        )
    return resolved


def trust(path: Path, companions: Sequence[str] = ()) -> bool:
    """Whether ``path`` (and the files beside it named ``path`` + each of ``companions``) may be loaded: True
    when none of them is writable by others or owned by another user, or none exists. Otherwise they are
    renamed aside (``<name>.untrusted-<time>``), one warning says so, and False."""
    files = with_companions(path, companions)
    if not untrusted(files):
        return True
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for file in files:
        if file.exists() or file.is_symlink():
            os.replace(file, file.with_name(f"{file.name}.untrusted-{stamp}"))
    log.warning(
        "state_file_untrusted",
        path=str(path),
        detail="writable by others, owned by another user, or a symlink: set aside unread",
        moved_to=str(path.with_name(f"{path.name}.untrusted-{stamp}")),
    )
    return False


def with_companions(path: Path, companions: Sequence[str]) -> list[Path]:
    """``path`` and the files beside it named ``path`` + each suffix (SQLite's ``-wal``, ``-shm``, ...)."""
    return [path, *(path.with_name(path.name + suffix) for suffix in companions)]


def untrusted(files: Sequence[Path]) -> list[Path]:
    """Those of ``files`` that group or others may write, that another user owns, or that are symlinks."""
    found = []
    for file in files:
        try:
            info = file.lstat()
        except FileNotFoundError:
            continue
        if info.st_uid != os.geteuid() or info.st_mode & SHARED_WRITE or stat.S_ISLNK(info.st_mode):
            found.append(file)
    return found


async def state_dir(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context, first: the state directory is checked before anything is loaded from it."""
    gateway = app[SETTINGS].gateway
    assert gateway.state_dir is not None  # load_settings always resolves it
    prepare(gateway.state_dir)
    yield
