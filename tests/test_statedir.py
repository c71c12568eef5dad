"""The state directory is the user's alone: created 0700, refused at start when others may write it or own it
(symlinks resolved), and a cookie jar or ledger others may write is set aside unread."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from yarl import URL

from aiohttp_memproxy import statedir
from aiohttp_memproxy.app import create_app
from aiohttp_memproxy.config.settings import ConfigError, Settings
from aiohttp_memproxy.keys import LEDGER
from aiohttp_memproxy.usage import ledger
from tests.conftest import MESSAGES, LogLines, base_config, models_at, post
from tests.fake_upstream import CLEARANCE, FakeUpstream
from tests.test_cli import memproxy


def settings_at(make_settings: Callable[..., Settings], state: Path, url: str) -> Settings:
    return make_settings(base_config(model_list=models_at(url), memproxy={"state_dir": str(state)}))


def test_a_new_state_dir_is_created_private(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        made = statedir.prepare(tmp_path / "new" / "state")
    finally:
        os.umask(old)
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702, 0o720])
def test_a_state_dir_others_may_write_is_refused(tmp_path: Path, mode: int) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(mode)
    with pytest.raises(ConfigError) as raised:
        statedir.prepare(state)
    (error,) = raised.value.errors
    assert str(state) in error
    assert f"chmod 700 {state}" in error


def test_a_symlink_to_a_shared_dir_is_judged_by_its_target(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    link = tmp_path / "state"
    link.symlink_to(shared)
    with pytest.raises(ConfigError) as raised:
        statedir.prepare(link)
    assert str(shared) in raised.value.errors[0]


def test_a_state_dir_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("giving a directory to another user needs root")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    with pytest.raises(ConfigError) as raised:
        statedir.prepare(state)
    assert "belongs to uid 65534" in raised.value.errors[0]


def test_serve_refuses_to_start_on_a_shared_state_dir(tmp_path: Path, child_env: dict[str, str]) -> None:
    state = tmp_path / "state"
    state.mkdir()
    state.chmod(0o777)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base_config()))
    result = memproxy("serve", "--config", str(config), "--state-dir", str(state), "--log-format", "json",
                      env=child_env, timeout=120)  # fmt: skip
    assert result.returncode == 1
    assert "refusing_to_start" in result.stdout
    assert f"chmod 700 {state}" in result.stdout


async def test_the_app_does_not_start_on_a_shared_state_dir(
    make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str], tmp_path: Path
) -> None:
    _, url = upstream
    state = tmp_path / "shared-state"
    state.mkdir()
    state.chmod(0o777)
    runner = web.AppRunner(create_app(settings_at(make_settings, state, url)))
    try:
        with pytest.raises(ConfigError):
            await runner.setup()
        assert not (state / "cookies.json").exists()  # nothing was read from it, nor written to it
    finally:
        await runner.cleanup()


def state_with_jar(tmp_path: Path, url: str, mode: int) -> Path:
    """A private state directory holding a cookie jar with a clearance cookie for ``url``, of ``mode``."""
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    jar = aiohttp.CookieJar(unsafe=True)
    jar.update_cookies({CLEARANCE: "planted-by-another-user"}, URL(url))
    jar.save(state / "cookies.json")
    (state / "cookies.json").chmod(mode)
    return state


@pytest.mark.parametrize("mode", [0o666, 0o620])
async def test_a_cookie_jar_others_may_write_is_not_loaded(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
    log_lines: LogLines,
    mode: int,
) -> None:
    fake, url = upstream
    fake.gate = True
    state = state_with_jar(tmp_path, url, mode)
    client = await aiohttp_client(create_app(settings_at(make_settings, state, url)))
    response = await post(client, {"model": "gpt-up", "messages": MESSAGES})
    assert response.status == 200
    assert fake.seen[0].cookies.get(CLEARANCE) is None  # the planted cookie was never sent
    assert fake.challenges == 1
    assert [entry["path"] for entry in log_lines.named("state_file_untrusted")] == [
        str(state / "cookies.json")
    ]
    assert [p.name.split(".untrusted-")[0] for p in state.glob("*.untrusted-*")] == ["cookies.json"]


async def test_a_private_cookie_jar_is_loaded(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
) -> None:
    fake, url = upstream
    fake.gate = True
    state = state_with_jar(tmp_path, url, 0o600)
    client = await aiohttp_client(create_app(settings_at(make_settings, state, url)))
    assert (await post(client, {"model": "gpt-up", "messages": MESSAGES})).status == 200
    assert fake.seen[0].cookies.get(CLEARANCE) == "planted-by-another-user"
    assert fake.challenges == 0


async def test_a_ledger_others_may_write_is_set_aside_and_a_new_one_kept(
    aiohttp_client: Any,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
    log_lines: LogLines,
) -> None:
    _, url = upstream
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    planted = state / ledger.FILE_NAME
    planted.write_bytes(b"not a database: only its journal gives it away")
    planted.chmod(0o600)
    wal = state / f"{ledger.FILE_NAME}-wal"
    wal.write_bytes(b"planted journal")
    wal.chmod(0o666)
    client = await aiohttp_client(create_app(settings_at(make_settings, state, url)))
    assert (await post(client, {"model": "gpt-up", "messages": MESSAGES})).status == 200
    await client.server.app[LEDGER].flush()
    assert len(ledger.read(planted, 0)) == 1  # a new ledger, with this request's row
    aside = sorted(p.name.split(".untrusted-")[0] for p in state.glob("*.untrusted-*"))
    assert aside == [ledger.FILE_NAME, f"{ledger.FILE_NAME}-wal"]  # the whole set, not half of it
    assert len(log_lines.named("state_file_untrusted")) == 1


def test_usage_reads_no_ledger_another_user_could_have_planted(
    tmp_path: Path, child_env: dict[str, str]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(base_config()))
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    planted = state / ledger.FILE_NAME
    planted.write_bytes(b"")
    planted.chmod(0o666)
    result = memproxy("usage", "--config", str(config), "--state-dir", str(state), env=child_env)
    assert result.returncode == 1
    assert "may be written by others" in result.stderr
    planted.chmod(0o600)
    state.chmod(0o777)
    result = memproxy("usage", "--config", str(config), "--state-dir", str(state), env=child_env)
    assert result.returncode == 1
    assert f"chmod 700 {state}" in result.stderr
    state.chmod(0o700)
    planted.unlink()
    assert (
        memproxy("usage", "--config", str(config), "--state-dir", str(state), env=child_env).returncode == 0
    )
