"""``make load``: C concurrent clients for T seconds against a fake upstream that misbehaves at random.

The upstream challenges (503 + Set-Cookie, like Cloudflare), throttles (429 + Retry-After) and cuts streams
short for a share of requests (``--chaos``). Reports the success rate, client-visible errors by kind, and that
the server survives with nothing leaked: open file descriptors and asyncio tasks (from ``/health``) before the
load and after it has drained. Nothing leaves loopback.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.bench import (
    DIALECTS,
    HEADERS,
    Target,
    body_for,
    free_port,
    serve_command,
    spawn,
    stop,
    wait_port,
    write_config,
)

KEEPALIVE_DRAIN_S = 35


def classify(status: int, text: str, stream: bool) -> str:
    """``ok``, or what the client saw go wrong."""
    if status != 200:
        return f"http_{status}"
    lines = [line for line in text.splitlines() if line.strip()]
    if stream and (not lines or '"error"' in lines[-1]):
        return "stream_error"
    if stream and not (
        text.rstrip().endswith("data: [DONE]") or "message_stop" in text or "response.completed" in text
    ):
        return "stream_truncated"
    return "ok"


async def client(
    session: aiohttp.ClientSession,
    target: Target,
    deadline: float,
    outcomes: collections.Counter[str],
    rng: random.Random,
) -> None:
    while time.monotonic() < deadline:
        dialect = rng.choice(list(DIALECTS))
        stream = rng.random() < 0.5
        url = target.base + DIALECTS[dialect]["path"]
        try:
            async with session.post(url, json=body_for(dialect, target, stream), headers=HEADERS) as response:
                text = await response.text()
                outcomes[f"{dialect}:{classify(response.status, text, stream)}"] += 1
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcomes[f"{dialect}:client_{type(exc).__name__}"] += 1


async def health(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with session.get(base + "/health") as response:
        body: dict[str, Any] = await response.json()
        return body


async def run(args: argparse.Namespace) -> int:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    processes = []
    with tempfile.TemporaryDirectory(prefix="memproxy-load-") as tmp:
        try:
            up_port, port = free_port(), free_port()
            processes.append(
                spawn(
                    [
                        sys.executable,
                        "-m",
                        "tests.fake_upstream",
                        "--port",
                        str(up_port),
                        "--chaos",
                        str(args.chaos),
                    ],
                    env,
                )
            )
            upstream = f"http://127.0.0.1:{up_port}"
            await wait_port(upstream, "/")
            config = write_config(Path(tmp), upstream)
            proxy = spawn(serve_command(config, port, Path(tmp) / "state"), env)
            processes.append(proxy)
            base = f"http://127.0.0.1:{port}"
            await wait_port(base, "/health/readiness")
            target = Target("memproxy", base)
            timeout = aiohttp.ClientTimeout(total=120)
            rng = random.Random(11)  # noqa: S311  # load shape, not security
            outcomes: collections.Counter[str] = collections.Counter()
            async with aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
            ) as session:
                # Warm-up first (lazy imports, pools, LiteLLM's own workers), so "before" is a steady state.
                await asyncio.gather(
                    *(
                        client(session, target, time.monotonic() + 3, collections.Counter(), rng)
                        for _ in range(4)
                    )
                )
            # Idle upstream connections leave aiohttp's pool after its 15 s keep-alive: count after that.
            await asyncio.sleep(KEEPALIVE_DRAIN_S)
            async with aiohttp.ClientSession(
                timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
            ) as session:
                before = (await health(session, base))["process"]
                deadline = time.monotonic() + args.seconds
                await asyncio.gather(
                    *(client(session, target, deadline, outcomes, rng) for _ in range(args.clients))
                )
            await asyncio.sleep(KEEPALIVE_DRAIN_S)
            async with aiohttp.ClientSession() as session:
                after = (await health(session, base))["process"]
            alive = proxy.poll() is None
        finally:
            for process in processes:
                stop(process)
    total = sum(outcomes.values())
    ok = sum(count for kind, count in outcomes.items() if kind.endswith(":ok"))
    report = {
        "clients": args.clients,
        "seconds": args.seconds,
        "chaos": args.chaos,
        "requests": total,
        "success_rate": round(100 * ok / total, 2) if total else 0.0,
        "outcomes": dict(sorted(outcomes.items())),
        "server_alive": alive,
        "before": before,
        "after": after,
    }
    print(f"{total} requests from {args.clients} clients in {args.seconds} s, chaos {args.chaos}")
    print(f"success: {report['success_rate']} %")
    for kind, count in report["outcomes"].items():
        print(f"  {kind:<40} {count}")
    print(f"server alive: {alive}")
    print(f"asyncio tasks: {before['asyncio_tasks']} before, {after['asyncio_tasks']} after")
    print(f"open fds:      {before['open_fds']} before, {after['open_fds']} after")
    Path(args.output).write_text(json.dumps(report, indent=2))  # noqa: ASYNC240  # once, at the end
    print(f"JSON: {args.output}")
    leaked = after["asyncio_tasks"] > before["asyncio_tasks"] + 2 or (
        after["open_fds"] is not None and after["open_fds"] > before["open_fds"] + 5
    )
    return 0 if alive and not leaked else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="load", description=__doc__)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--chaos", type=float, default=0.2, help="share of upstream answers that misbehave")
    parser.add_argument("--output", default="load-results.json")
    raise SystemExit(asyncio.run(run(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
