"""``memproxy [serve] [...]`` and ``memproxy check``. Other tools drive this contract: keep it stable."""

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

log = structlog.get_logger()

DEFAULT_CONFIG = "conf/config.yaml"
COMMANDS = ("serve", "check", "usage")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memproxy", description="Local LLM gateway: LiteLLM in-process, cookies kept, memory routing."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="{serve,check,usage}")
    config_help = f"LiteLLM-format config.yaml (default: $MEMPROXY_CONFIG, else {DEFAULT_CONFIG})"

    serve = commands.add_parser("serve", help="serve the gateway (the default command)")
    serve.add_argument("--config", help=config_help)
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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*COMMANDS, "-h", "--help", "--version"):
        args_list.insert(0, "serve")
    args = build_parser().parse_args(args_list)
    config = args.config or os.environ.get("MEMPROXY_CONFIG") or DEFAULT_CONFIG
    if args.command == "check":
        try:
            settings = load_settings(config, os.environ)
        except ConfigError as exc:
            _print_config_error(exc, sys.stderr)
            return 1
        status = check(settings, sys.stdout, sys.stderr)
        if args.probe and status == 0:
            status = run_probe(settings, args.state_dir, args.model, sys.stdout, sys.stderr)
        return status
    if args.command == "usage":
        return usage(args, config, sys.stdout, sys.stderr)
    return serve(args, config)


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
    except SeamError as exc:  # our words: LiteLLM's internals moved, or its Rust path is forced on
        log.error("refusing_to_start", reason=str(exc))
        return 1
    log.info("stopped")
    return 0


def check(settings: Settings, out: TextIO, err: TextIO) -> int:
    print(f"config: {settings.source} (sha256 {settings.digest[:12]})", file=out)
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
