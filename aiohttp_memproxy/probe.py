"""``memproxy check --probe``: call each model's upstream once, through the gateway's own session and jar.

The seed project's validation script as a command. For each model: resolve it (config, environment), make
one small call the way a client's request goes (memory routing's default user, LiteLLM, our transport, the
persistent cookie jar, the retry policy), and report the upstream's status, the latency, the cookies it set
and the memory headers that went out. This talks to the real upstreams: it is for an operator, never for
tests against the network. The jar it loads is the service's (``state_dir``), and it is saved after, so a
probe also earns the cookies a first request would otherwise meet a challenge for.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import structlog
from aiohttp import web
from multidict import CIMultiDict
from yarl import URL

from aiohttp_memproxy import errors
from aiohttp_memproxy.app import create_app
from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.keys import RUNTIMES
from aiohttp_memproxy.outbound.session import Exchange
from aiohttp_memproxy.resolve.memory import USER_ID_HEADER, memory_headers
from aiohttp_memproxy.runtime import Runtime

log = structlog.get_logger()

PING = [{"role": "user", "content": "Reply with the word ok."}]
MAX_TOKENS = 16


@dataclass
class ProbeResult:
    model: str
    outcome: str  # ok | error | skipped
    detail: str = ""  # why it was skipped, or the error's code and message (our words, never foreign text)
    path: str = ""  # chat | messages: which client call it made
    latency_ms: float | None = None
    statuses: list[int] = field(default_factory=list)  # every upstream attempt, retries included
    cookies_set: list[str] = field(default_factory=list)
    cookies_sent: list[str] = field(default_factory=list)  # names the jar replayed on the last attempt
    memory_headers: dict[str, str] = field(default_factory=dict)  # name -> value for the user id, else "set"
    proxy: str = ""  # the outbound proxy its upstream requests go through (scheme://host:port), or "direct"
    trust: str = ""  # which certificate authorities its TLS trusts


def targets(settings: Settings, names: Sequence[str]) -> list[str]:
    """The ids to probe: the ones asked for, else every concrete model_name (a wildcard needs an id)."""
    if names:
        return list(names)
    return [model.name for model in settings.models]


async def probe(settings: Settings, names: Sequence[str] = ()) -> list[ProbeResult]:
    app = create_app(settings)
    runner = web.AppRunner(app, handle_signals=False)
    try:
        await runner.setup()  # the cleanup contexts: session, jar loaded from state_dir, LiteLLM clients
        runtime = app[RUNTIMES].current
        return [await _one(runtime, name) for name in targets(settings, names)]
    finally:
        await runner.cleanup()  # closes the session and saves the jar


async def _one(runtime: Runtime, name: str) -> ProbeResult:
    config = next((model for model in runtime.settings.models if model.name == name), None)
    if config is not None and config.is_wildcard:
        return ProbeResult(name, "skipped", "wildcard: probe a concrete id with --model")
    try:
        resolved = runtime.models.resolve(name)
    except errors.GatewayError as exc:
        return ProbeResult(name, "skipped", exc.message)
    model = resolved.config
    if "mock_response" in model.params:
        return ProbeResult(name, "skipped", "mock_response: answered in-process, no upstream")
    user = runtime.memory.decide(CIMultiDict())
    memory = memory_headers(model, user)
    path = "messages" if model.provider == "anthropic" else "chat"
    result = ProbeResult(name, "ok", path=path)
    egress = runtime.settings.egress
    api_base = model.params.get("api_base")
    route = egress.route(URL(str(api_base)) if api_base else URL("https://provider-default"))
    result.proxy = route.describe() + ("" if api_base else " (for the provider's default URL)")
    result.trust = egress.describe_trust()
    seen: list[Exchange] = []
    ping = {"messages": PING, "max_tokens": MAX_TOKENS}
    started = time.perf_counter()
    try:
        if path == "messages":
            await runtime.gateway.messages(resolved, ping, user, {}, exchanges=seen)
        else:
            await runtime.gateway.chat(resolved, ping, user, exchanges=seen)
    except errors.GatewayError as exc:
        result.outcome, result.detail = "error", f"{exc.status} {exc.code}: {exc.message}"
    except Exception as exc:  # an operator's tool reports what failed and goes on to the next model
        # The class only: a foreign exception's text can carry a URL or a key.
        result.outcome, result.detail = "error", f"unexpected {type(exc).__name__}"
        log.warning("probe_failed", model=name, error=type(exc).__name__)
    result.latency_ms = round((time.perf_counter() - started) * 1000, 1)
    result.statuses = [exchange.status for exchange in seen]
    result.cookies_set = sorted({name for exchange in seen for name in exchange.cookies_set})
    if seen:
        last = seen[-1].sent
        result.cookies_sent = sorted(_cookie_names(last.get("Cookie", "")))
        # Only the memory headers this gateway adds, as they went out; values shown only for the user id.
        expected = {*memory, *model.params.get("extra_headers", {})}
        result.memory_headers = {
            header: (last[header] if header == USER_ID_HEADER else "set")
            for header in sorted(expected)
            if header in last
        }
    return result


def _cookie_names(header: str) -> set[str]:
    return {part.split("=", 1)[0].strip() for part in header.split(";") if "=" in part}


def report(results: Sequence[ProbeResult]) -> str:
    width = max([len(result.model) for result in results] + [5])
    lines = []
    for r in results:
        if r.outcome == "skipped":
            lines.append(f"{r.model:<{width}}  skipped   {r.detail}")
            continue
        status = "/".join(str(code) for code in r.statuses) or "-"
        lines.append(f"{r.model:<{width}}  {r.outcome:<8}  {r.path} upstream {status} in {r.latency_ms} ms")
        if r.detail:
            lines.append(f"{'':<{width}}    {r.detail}")
        lines.append(
            f"{'':<{width}}    cookies set: {', '.join(r.cookies_set) or '-'}; "
            f"replayed: {', '.join(r.cookies_sent) or '-'}"
        )
        memory = ", ".join(f"{name}={value}" for name, value in r.memory_headers.items())
        lines.append(f"{'':<{width}}    memory headers: {memory or '- (not a Supermemory model)'}")
        lines.append(f"{'':<{width}}    proxy: {r.proxy}; TLS trusts: {r.trust}")
    return "\n".join(lines)
