"""``memproxy [serve] [...]``, ``check``, ``usage``, ``init``, ``service``, ``env`` and ``run``. Other tools
drive this contract: keep it stable."""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

import structlog

from aiohttp_memproxy import __version__, logs
from aiohttp_memproxy.config.exposure import exposure_problems
from aiohttp_memproxy.config.load import load_settings
from aiohttp_memproxy.config.settings import ConfigError, Settings
from aiohttp_memproxy.install import paths

log = structlog.get_logger()

COMMANDS = ("serve", "check", "usage", "init", "service", "env", "run")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memproxy", description="Local LLM gateway: LiteLLM in-process, cookies kept, memory routing."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{" + ",".join(COMMANDS) + "}")
    config_help = (
        "LiteLLM-format config.yaml (default: $MEMPROXY_CONFIG, else ./conf/config.yaml in a checkout, "
        "else the user config directory's, else /etc/aiohttp-memproxy/config.yaml; the env file beside it "
        "is read too)"
    )

    serve = commands.add_parser("serve", help="serve the gateway (the default command)")
    serve.add_argument("--config", help=config_help)
    serve.add_argument(
        "--env-file", type=Path, help="KEY=VALUE lines read into the environment first (it wins over them)"
    )
    serve.add_argument("--host", help="address to listen on (default: memproxy.host, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: memproxy.port, 8764)")
    serve.add_argument(
        "--state-dir",
        type=Path,
        help="where the cookie jar lives (default: memproxy.state_dir, else $STATE_DIRECTORY, "
        "else $XDG_STATE_HOME/aiohttp-memproxy, else ~/.local/state/aiohttp-memproxy)",
    )
    serve.add_argument(
        "--log-format",
        choices=("console", "json"),
        help="default: memproxy.log_format; auto is console on a TTY, JSON otherwise",
    )
    serve.add_argument("--log-level", type=str.lower, choices=("debug", "info", "warning", "error"))
    serve.add_argument(
        "--mode",
        choices=("sdk", "forward"),
        help="sdk: call upstreams through LiteLLM in-process (default); "
        "forward: proxy /v1/* raw to --upstream (also USE_SDK_PROXY=false)",
    )
    serve.add_argument(
        "--upstream", help="forward mode: base URL, e.g. http://127.0.0.1:4000 (also MEMPROXY_UPSTREAM)"
    )

    check = commands.add_parser("check", help="validate the config and list each model with its status")
    check.add_argument("--config", help=config_help)
    check.add_argument(
        "--probe",
        action="store_true",
        help="also call each model's upstream once through the gateway's session and cookie jar (real "
        "network) and report status, latency, cookies and memory headers; exit 1 if any call fails",
    )
    check.add_argument(
        "--model",
        action="append",
        default=[],
        help="with --probe: probe this model id (repeatable; default: every configured model)",
    )
    check.add_argument("--state-dir", type=Path, help="with --probe: the cookie jar to use (as for serve)")

    usage = commands.add_parser(
        "usage", help="requests, tokens, cost, error rate and latency from the usage ledger, per group"
    )
    usage.add_argument("--config", help=config_help)
    usage.add_argument("--state-dir", type=Path, help="the ledger's directory (as for serve)")
    usage.add_argument("--since", default="7d", help="7d, 12h, 30m, or a date YYYY-MM-DD (default: 7d)")
    usage.add_argument("--by", choices=("day", "client", "user", "model", "deployment"), default="day")
    usage.add_argument("--format", choices=("table", "json", "csv"), default="table")

    from aiohttp_memproxy.install.clients import CLIENTS  # light: no litellm

    init = commands.add_parser(
        "init", help="write a starter config.yaml and a 0600 env file (the keys found in the environment)"
    )
    init.add_argument("--dir", type=Path, help="where (default: the user config directory)")

    service = commands.add_parser(
        "service", help="run the gateway as a service (systemd, or launchd on macOS)"
    )
    service.add_argument("action", choices=("install", "uninstall", "status"))
    scope = service.add_mutually_exclusive_group()
    scope.add_argument("--user", action="store_true", help="the user's service (the default)")
    scope.add_argument("--system", action="store_true", help="a system service (Linux, as root)")
    service.add_argument("--config", help=config_help)
    service.add_argument("--dry-run", action="store_true", help="print what would be written and run")
    service.add_argument("--platform", choices=("linux", "darwin"), help=argparse.SUPPRESS)

    env = commands.add_parser("env", help="print what a client needs to use this gateway")
    env.add_argument("client", choices=CLIENTS)
    env.add_argument("--config", help=config_help)

    run = commands.add_parser(
        "run", help="start a client pointed at this gateway: memproxy run claude -- ..."
    )
    run.add_argument("client", choices=[client for client in CLIENTS if client != "pycharm"])
    run.add_argument("--config", help=config_help)
    run.add_argument("--bin", help="the client's executable (default: found on PATH)")
    run.epilog = "Everything after -- goes to the client as it is: memproxy run claude -- -p 'Say hello.'"
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*COMMANDS, "-h", "--help", "--version"):
        args_list.insert(0, "serve")
    client_arguments: list[str] = []
    if args_list[:1] == ["run"] and "--" in args_list:  # the client's own, never read as ours
        cut = args_list.index("--")
        args_list, client_arguments = args_list[:cut], args_list[cut + 1 :]
    args = build_parser().parse_args(args_list)
    args.arguments = client_arguments
    if args.command == "init":
        from aiohttp_memproxy.install import starter

        return starter.init(args.dir or paths.config_dir(), os.environ, sys.stdout, sys.stderr)
    shell = dict(os.environ)  # before any env file: what `run` hands a client is the user's, not the keys
    try:
        explicit = args.config
        if args.command == "service" and args.system and not explicit:  # the system's own, not a user's
            explicit = str(paths.SYSTEM_DIR / paths.CONFIG_NAME)
        try:
            found = paths.find_config(explicit)
        except ConfigError:
            if args.command != "service" or args.action == "install":
                raise
            found = paths.Found(Path(explicit or paths.CONFIG_NAME), "nowhere (not needed to remove)", None)
        if getattr(args, "env_file", None):
            paths.load_env_file(args.env_file, os.environ)
        paths.load_env_file(found.env_file, os.environ)
    except ConfigError as exc:
        _print_config_error(exc, sys.stderr)
        return 1
    config = str(found.path)
    if args.command == "check":
        try:
            settings = load_settings(config, os.environ)
        except ConfigError as exc:
            _print_config_error(exc, sys.stderr)
            return 1
        status = check(settings, sys.stdout, sys.stderr, found)
        if args.probe and status == 0:
            status = run_probe(settings, args.state_dir, args.model, sys.stdout, sys.stderr)
        return status
    if args.command == "usage":
        return usage(args, config, sys.stdout, sys.stderr)
    if args.command == "service":
        return service_command(args, found, sys.stdout, sys.stderr)
    if args.command in ("env", "run"):
        return client_command(args, found, shell, sys.stdout, sys.stderr)
    return serve(args, config)


def service_command(args: argparse.Namespace, found: paths.Found, out: TextIO, err: TextIO) -> int:
    from aiohttp_memproxy.install import units

    try:
        plan = units.plan(
            args.action,
            args.platform or sys.platform,
            args.system,
            found.path.absolute(),
            os.environ,
            os.getuid(),
        )
    except ValueError as exc:
        print(f"memproxy service: {exc}", file=err)
        return 2
    if args.dry_run:
        units.describe(plan, out)
        return 0
    if args.action == "install":  # a service that would refuse to start is not installed
        try:
            load_settings(str(found.path), os.environ)
        except ConfigError as exc:
            _print_config_error(exc, err)
            return 1
    if args.action != "status" and args.system and os.geteuid() != 0:
        print(f"memproxy service: a system service is {args.action}ed as root (sudo)", file=err)
        return 1
    return units.carry_out(plan, out, err)


def client_command(
    args: argparse.Namespace, found: paths.Found, shell: dict[str, str], out: TextIO, err: TextIO
) -> int:
    """``env``: what the client needs, printed; ``run``: the client started with it (replacing this
    process). The address and key are the service's: its env file wins over the shell here."""
    import shutil

    from aiohttp_memproxy.install import clients, starter

    try:
        service_env = {**os.environ, **(paths.read_env_file(found.env_file) if found.env_file else {})}
        settings = load_settings(str(found.path), service_env)
    except ConfigError as exc:
        _print_config_error(exc, err)
        return 1
    print(f"memproxy {args.command}: {found.path} (from {found.why})", file=err)
    setup = clients.setup(args.client, settings)
    if args.command == "env":
        print(clients.shell_text(setup, clients.base_url(settings)), file=out)
        return 0
    assert setup.binary is not None  # pycharm has no `run`
    binary = args.bin or shutil.which(setup.binary)
    if binary is None:
        print(f"memproxy run: {setup.binary} is not on PATH (or pass --bin)", file=err)
        return 127
    arguments = list(args.arguments)
    if args.client == "gemini" and clients.gemini_auth_missing(shell):
        print(f"memproxy run: {clients.GEMINI_AUTH}", file=err)
    out.flush()
    err.flush()
    os.execvpe(  # noqa: S606  # the user's own client, by name or --bin, with their own arguments
        binary,
        [binary, *clients.child_arguments(setup, arguments)],
        # The user's environment, without the provider keys the config names: the gateway holds them, and a
        # client's agent runs commands that could read its environment.
        clients.child_environment(setup, shell, starter.variables(found.path.read_text())),
    )


def usage(args: argparse.Namespace, config: str, out: TextIO, err: TextIO) -> int:
    """The ledger of the service this config describes (its state directory, as ``check --probe`` finds
    the cookie jar), summed per group."""
    from aiohttp_memproxy import statedir  # imported here: serve and check do not need them
    from aiohttp_memproxy.usage import ledger, report

    try:
        settings = load_settings(config, os.environ).with_overrides(state_dir=args.state_dir)
        since = report.since_epoch(args.since)
    except ConfigError as exc:
        _print_config_error(exc, err)
        return 1
    except ValueError as exc:
        print(f"memproxy usage: {exc}", file=err)
        return 2
    assert settings.gateway.state_dir is not None  # settings fill it in
    path = settings.gateway.state_dir / ledger.FILE_NAME
    try:  # what another user could have planted is not reported as this user's usage
        if settings.gateway.state_dir.exists():
            statedir.check(settings.gateway.state_dir)
    except ConfigError as exc:
        _print_config_error(exc, err)
        return 1
    if statedir.untrusted(statedir.with_companions(path, ledger.SQLITE_COMPANIONS)):
        print(f"memproxy usage: {path} may be written by others or is not yours: not read", file=err)
        return 1
    if not settings.gateway.usage_ledger:
        print("memproxy usage: this config turns the ledger off (memproxy.usage_ledger: false)", file=err)
    try:
        rows = ledger.read(path, since)
    except sqlite3.Error as exc:
        print(f"memproxy usage: cannot read {path}: {type(exc).__name__}", file=err)
        return 1
    print(report.render(report.summarize(rows, args.by), args.by, args.format), file=out)
    return 0


def _print_config_error(exc: ConfigError, out: TextIO) -> None:
    count = len(exc.errors)
    print(f"memproxy: {exc.source}: {count} error{'s' if count != 1 else ''}", file=out)
    for line in exc.errors:
        print(f"  - {line}", file=out)


def _mode_from_environment() -> str | None:
    """The seed project's rollback switch: USE_SDK_PROXY=false means forward mode."""
    value = os.environ.get("USE_SDK_PROXY", "").strip().lower()
    return "forward" if value in ("0", "false", "no", "off") else None


def serve(args: argparse.Namespace, config: str) -> int:
    try:
        settings = load_settings(config, os.environ).with_overrides(
            host=args.host,
            port=args.port,
            state_dir=args.state_dir,
            log_format=args.log_format,
            log_level=args.log_level,
            mode=args.mode or _mode_from_environment(),
            upstream=args.upstream or os.environ.get("MEMPROXY_UPSTREAM") or None,
        )
    except ConfigError as exc:
        _print_config_error(exc, sys.stderr)
        return 1
    logs.configure(settings.gateway.log_format, settings.gateway.log_level)
    for warning in settings.warnings:
        log.warning(warning.event, **warning.fields)
    errors, warnings = exposure_problems(settings)
    for message in warnings:
        log.warning("weak_auth", detail=message)
    if errors:
        for message in errors:
            log.error("refusing_to_start", reason=message)
        return 1
    return _run(settings)


def _run(settings: Settings) -> int:
    from aiohttp_memproxy import service  # imported here so `check` stays light (no litellm)
    from aiohttp_memproxy.llm.patches import SeamError

    logs.adopt_library_loggers()  # every library is imported now: handlers and levels their imports set go

    gateway = settings.gateway
    log.info(
        "starting",
        version=__version__,
        host=gateway.host,
        port=gateway.port,
        config=str(settings.source),
        state_dir=str(gateway.state_dir),
        models=len(settings.models),
    )
    try:
        asyncio.run(service.serve(settings))
    except ConfigError as exc:  # what only LiteLLM can judge (a provider it does not have)
        for error in exc.errors:
            log.error("refusing_to_start", path=exc.source, reason=error)
        return 1
    except SeamError as exc:  # our words: LiteLLM's internals are not where the seam expects them
        log.error("refusing_to_start", reason=str(exc))
        return 1
    log.info("stopped")
    return 0


def check(settings: Settings, out: TextIO, err: TextIO, found: paths.Found | None = None) -> int:
    print(f"config: {settings.source} (sha256 {settings.digest[:12]})", file=out)
    if found is not None:
        print(f"  read from {found.why}", file=out)
        if found.env_file is not None:
            print(f"  with the env file {found.env_file}", file=out)
    print("models:", file=out)
    width = max((len(model.name) for model in settings.models), default=0)
    for model in settings.models:
        status = "ok" if model.enabled else f"disabled: {', '.join(model.missing_env)} not set"
        memory = " [supermemory]" if model.supermemory else ""
        print(f"  {model.name:<{width}}  {model.litellm_model}{memory}  {status}", file=out)
    if settings.aliases:
        print("aliases:", file=out)
        for name, alias in settings.aliases.items():
            print(f"  {name} -> {alias.target}{' (hidden)' if alias.hidden else ''}", file=out)
    for warning in settings.warnings:
        details = " ".join(f"{key}={value}" for key, value in warning.fields.items())
        print(f"warning: {warning.event} {details}", file=out)
    from aiohttp_memproxy.llm import pricing  # imported here: LiteLLM's import takes seconds

    used = pricing.map_in_use()
    print(
        f"litellm: {used['litellm_version']} (price map: {used['price_map']}, {used['models_known']} models)",
        file=out,
    )
    for model in pricing.unknown(settings.models):
        print(
            f"warning: model {model.name!r} ({model.litellm_model}): LiteLLM {used['litellm_version']}'s "
            "price map does not know it, so it has no price and no context window; its model_info sets them: "
            + ", ".join(pricing.FILLING_KEYS),
            file=out,
        )
    from aiohttp_memproxy.llm import providers

    errors, warnings = exposure_problems(settings)
    errors += providers.unservable(settings)  # what serve would refuse: a provider, a Rust-only route
    for message in warnings:
        print(f"warning: {message}", file=out)
    for message in errors:
        print(f"error: {message}", file=err)
    return 1 if errors else 0


def run_probe(
    settings: Settings, state_dir: Path | None, models: Sequence[str], out: TextIO, err: TextIO
) -> int:
    from aiohttp_memproxy import probe  # imported here so a plain `check` stays light (no litellm)
    from aiohttp_memproxy.llm.patches import SeamError

    try:
        settings = settings.with_overrides(state_dir=state_dir)
    except ConfigError as exc:
        _print_config_error(exc, err)
        return 1
    logs.configure("console", "warning", stream=err)  # retries and challenges show; the report goes to out
    print(f"probe (cookie jar: {settings.gateway.state_dir}):", file=out)
    try:
        results = asyncio.run(probe.probe(settings, models))
    except ConfigError as exc:  # what only LiteLLM can judge (a provider it does not have)
        _print_config_error(exc, err)
        return 1
    except SeamError as exc:
        print(f"error: {exc}", file=err)
        return 1
    print(probe.report(results), file=out)
    return 1 if any(result.outcome == "error" for result in results) else 0
