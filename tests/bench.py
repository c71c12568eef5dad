"""``make bench``: the fake upstream and the proxy as real processes on loopback, measured from outside.

Reports, as a table and as JSON (``bench-results.json``): proxy overhead (proxy minus direct) p50/p95/p99 for
plain and streaming requests and for a stream's first byte; requests/s at concurrency 1, 10, 50 and 200 with
success rates; 200 concurrent streams; RSS after warm-up and after 10,000 requests; time from start to
ready; for each dialect (chat completions, Messages, Responses, and chat completions to a model group of two
deployments, which both proxies serve through LiteLLM's Router). With ``--compare`` (``make bench
COMPARE=1``), a LiteLLM proxy server (one worker, from ``make bench-deps``) runs the same rows on the same
upstream, side by side with ratios. Throughput and memory are measured one proxy at a time (the other's
process group stopped); latency in turns, every target a batch at a time, so that this machine's speed,
which moves by a third over minutes, moves every figure alike. Then what the usage ledger costs: four
gateways with it on and four with it off, in turns. Nothing leaves loopback; nothing here asserts a timing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

MESSAGES = [{"role": "user", "content": "Say something."}]
DIALECTS: dict[str, dict[str, Any]] = {
    "openai": {"path": "/v1/chat/completions", "model": "bench-openai", "extra": {}},
    "anthropic": {"path": "/v1/messages", "model": "bench-anthropic", "extra": {"max_tokens": 64}},
    # The Responses API (Codex CLI), native to the upstream's /v1/responses.
    "responses": {"path": "/v1/responses", "model": "bench-openai", "extra": {}, "content": "input"},
    # Chat completions to a model group of two deployments: through LiteLLM's Router, in both proxies.
    "routed": {"path": "/v1/chat/completions", "model": "bench-routed", "extra": {}},
    # Google's Gemini API (Gemini CLI), native to the upstream's generateContent: the model is the path's.
    "gemini": {
        "path": "/v1beta/models/{model}:{method}",
        "model": "bench-gemini",
        "extra": {},
        "content": "contents",
    },
}
# What the usage ledger costs is measured on these too: a model LiteLLM has a price for (gpt-4o, served by
# the fake upstream like the others), whose rows the ledger prices with LiteLLM's cost function; the bench's
# own models have no price, and their rows' cost is left empty without asking LiteLLM.
LEDGER_DIALECTS: dict[str, dict[str, Any]] = {
    **DIALECTS,
    "priced": {"path": "/v1/chat/completions", "model": "gpt-4o", "extra": {}},
}
CONCURRENCY = (1, 10, 50, 200)
REQUESTS_PER_LEVEL = {1: 200, 10: 500, 50: 1000, 200: 2000}
TOTAL_REQUESTS = 10_000
LATENCY_TURNS = 10  # latency: every target this many batches, in turns (200 samples per row)
LATENCY_BATCH = 20
# The usage ledger's cost: LEDGER_GATEWAYS gateways with it on and as many off, each LEDGER_TURNS batches of
# LEDGER_BATCH requests, in turns.
LEDGER_GATEWAYS = 4
LEDGER_TURNS = 15
LEDGER_BATCH = 12
HEADERS = {"anthropic-version": "2023-06-01", "x-api-key": "bench-key-0123456789abcdef"}


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float]) -> dict[str, float]:
    return {f"p{q}": round(percentile(values, q), 3) for q in (50, 95, 99)}


def overhead(proxy: dict[str, float], direct: dict[str, float]) -> dict[str, float]:
    return {key: round(proxy[key] - direct[key], 3) for key in proxy}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return math.nan


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Sample:
    ok: bool
    total_ms: float
    first_byte_ms: float


@dataclass
class Target:
    """Somewhere to send the benchmark's requests: the upstream itself, our proxy, or LiteLLM's."""

    name: str
    base: str
    model_prefix: str = ""  # the upstream itself knows the model by its upstream name
    pid: int | None = None
    start_to_ready_s: float = math.nan
    results: dict[str, Any] = field(default_factory=dict)


def url_for(dialect: str, target: Target, stream: bool) -> str:
    spec = LEDGER_DIALECTS[dialect]
    method = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return target.base + spec["path"].format(model=target.model_prefix + spec["model"], method=method)


def body_for(dialect: str, target: Target, stream: bool) -> dict[str, Any]:
    spec = LEDGER_DIALECTS[dialect]
    if spec.get("content") == "contents":  # Gemini: the model and the streaming are the URL's
        return {"contents": [{"role": "user", "parts": [{"text": MESSAGES[0]["content"]}]}]}
    content: Any = MESSAGES[0]["content"] if spec.get("content") == "input" else MESSAGES
    return {
        "model": target.model_prefix + spec["model"],
        spec.get("content", "messages"): content,
        "stream": stream,
        **spec["extra"],
    }


async def one(session: aiohttp.ClientSession, target: Target, dialect: str, stream: bool) -> Sample:
    started = time.perf_counter()
    first = math.nan
    try:
        url = url_for(dialect, target, stream)
        async with session.post(url, json=body_for(dialect, target, stream), headers=HEADERS) as response:
            async for _ in response.content.iter_any():
                if math.isnan(first):
                    first = (time.perf_counter() - started) * 1000
            ok = response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        ok = False
    return Sample(ok, (time.perf_counter() - started) * 1000, first)


async def sequential(
    session: aiohttp.ClientSession, target: Target, dialect: str, stream: bool, n: int
) -> list[Sample]:
    return [await one(session, target, dialect, stream) for _ in range(n)]


async def concurrent(
    session: aiohttp.ClientSession, target: Target, dialect: str, stream: bool, concurrency: int, total: int
) -> dict[str, float]:
    remaining = total
    samples: list[Sample] = []

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            samples.append(await one(session, target, dialect, stream))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    good = sum(sample.ok for sample in samples)
    return {
        "rps": round(len(samples) / elapsed, 1),
        "success": round(100 * good / len(samples), 2),
        "n": len(samples),
    }


WARM_UP = 25  # requests per dialect and kind before anything is measured: imports, pools, caches


def client_session() -> aiohttp.ClientSession:
    """The bench's client: no connection limit, a generous total timeout."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=120)
    )


async def warm_up(session: aiohttp.ClientSession, target: Target) -> int:
    """WARM_UP requests of every dialect, plain and streamed; how many were sent."""
    for dialect in DIALECTS:
        for stream in (False, True):
            await sequential(session, target, dialect, stream, WARM_UP)
    return WARM_UP * 2 * len(DIALECTS)


def rotated(targets: Sequence[Target], turn: int) -> list[Target]:
    """The order of one turn: each target first in its turn."""
    shift = turn % len(targets)
    return [*targets[shift:], *targets[:shift]]


async def measure(target: Target, counted: list[int]) -> None:
    """Throughput and memory, one target alone: warm-up, requests/s at each concurrency, 200 streams at once,
    the rest of the 10,000 requests, RSS after warm-up and after them."""
    async with client_session() as session:
        counted[0] += await warm_up(session, target)
        if target.pid:
            target.results["rss_after_warmup_mb"] = rss_mb(target.pid)
        for dialect in DIALECTS:
            row: dict[str, Any] = target.results.setdefault(dialect, {})
            for level in CONCURRENCY:
                row[f"c{level}"] = await concurrent(
                    session, target, dialect, False, level, REQUESTS_PER_LEVEL[level]
                )
                counted[0] += REQUESTS_PER_LEVEL[level]
            row["streams_c200"] = await concurrent(session, target, dialect, True, 200, 200)
            counted[0] += 200
        while target.pid and counted[0] < TOTAL_REQUESTS:  # the rest of the 10,000, then memory
            batch = min(1000, TOTAL_REQUESTS - counted[0])
            await concurrent(session, target, "openai", False, 50, batch)
            counted[0] += batch
        if target.pid:
            target.results["rss_after_10k_mb"] = rss_mb(target.pid)
            target.results["requests_sent"] = counted[0]


def pause(proxies: Sequence[Target], running: Target | None) -> None:
    """Only ``running`` runs: every other proxy (its process group) is stopped (SIGSTOP), so that none
    takes CPU from the one measured (an idle LiteLLM proxy runs background jobs)."""
    for proxy in proxies:
        assert proxy.pid is not None
        os.killpg(proxy.pid, signal.SIGCONT if proxy is running else signal.SIGSTOP)


async def latency(direct: Target, proxies: Sequence[Target]) -> None:
    """Latency rows (plain, stream, first byte) of the upstream itself and every proxy, measured in turns:
    LATENCY_TURNS batches of LATENCY_BATCH sequential requests each, the order rotating, only the measured
    one running. This machine's speed moves over minutes; in turns it moves every target's figures
    alike, so that the overheads (proxy minus direct) and their ratios compare like with like."""
    targets = [direct, *proxies]
    try:
        async with client_session() as session:
            for dialect in DIALECTS:
                for stream in (False, True):
                    samples: dict[str, list[Sample]] = {target.name: [] for target in targets}
                    for turn in range(LATENCY_TURNS):
                        for target in rotated(targets, turn):
                            pause(proxies, target)
                            samples[target.name] += await sequential(
                                session, target, dialect, stream, LATENCY_BATCH
                            )
                    kind = "stream" if stream else "plain"
                    for target in targets:
                        row = target.results.setdefault(dialect, {})
                        found = samples[target.name]
                        row[f"{kind}_ms"] = summary([s.total_ms for s in found if s.ok])
                        if stream:
                            row["first_byte_ms"] = summary([s.first_byte_ms for s in found if s.ok])
                        row[f"{kind}_success"] = round(100 * sum(s.ok for s in found) / len(found), 2)
    finally:
        for proxy in proxies:
            assert proxy.pid is not None
            os.killpg(proxy.pid, signal.SIGCONT)
    for proxy in proxies:
        for dialect in DIALECTS:
            mine, theirs = proxy.results[dialect], direct.results[dialect]
            mine["overhead_plain_ms"] = overhead(mine["plain_ms"], theirs["plain_ms"])
            mine["overhead_stream_ms"] = overhead(mine["stream_ms"], theirs["stream_ms"])
            mine["overhead_first_byte_ms"] = overhead(mine["first_byte_ms"], theirs["first_byte_ms"])


async def wait_port(base: str, path: str, seconds: float = 60) -> float:
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        while time.perf_counter() - started < seconds:
            try:
                async with session.get(base + path) as response:
                    if response.status < 500:
                        return time.perf_counter() - started
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{base} did not come up in {seconds} s")


def cpu_s(pid: int) -> tuple[float, frozenset[str]]:
    """The process's CPU time so far, its live threads' together, to the nanosecond (the scheduler's own
    runtime of each, ``/proc/<pid>/task/*/schedstat``), and those threads. ``/proc/<pid>/stat`` counts in
    clock ticks (10 ms here), too coarse for a batch's share of a millisecond: it is only the fallback where
    schedstat is missing (no threads then). A thread that ends takes its time with it: the caller drops a
    turn in which one that was there at its start did (one that starts and ends within a turn is not seen;
    the gateway's own threads are pools that outlive a turn)."""
    if not Path(f"/proc/{pid}/schedstat").is_file():
        after_name = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(after_name[11]) + int(after_name[12])) / os.sysconf("SC_CLK_TCK"), frozenset()
    total, alive = 0, set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):  # a thread that ended since the listing
            total += int((task / "schedstat").read_text().split()[0])
            alive.add(task.name)
    return total / 1e9, frozenset(alive)


def mean(values: Sequence[float]) -> float:
    """The mean; NaN for no values (a gateway whose every turn was dropped)."""
    return statistics.fmean(values) if values else math.nan


def t_975(df: float) -> float:
    """Student's t, 97.5 % quantile, for ``df`` degrees of freedom, from the normal's (Abramowitz and
    Stegun 26.7.5, three terms): within 0.03 of the tables from df 3 on, 0.14 low at df 2."""
    z = 1.959964
    return (
        z
        + (z**3 + z) / (4 * df)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3)
    )


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float]:
    """mean(a) - mean(b) and the half-width of its 95 % interval (Welch's t: each group's own spread and
    size); NaN for the half-width where a group has fewer than two values."""
    if not a or not b:
        return math.nan, math.nan
    delta = mean(a) - mean(b)
    if len(a) < 2 or len(b) < 2:
        return delta, math.nan
    share_a, share_b = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if share_a + share_b == 0:
        return delta, 0.0
    df = (share_a + share_b) ** 2 / (share_a**2 / (len(a) - 1) + share_b**2 / (len(b) - 1))
    return delta, t_975(df) * math.sqrt(share_a + share_b)


def pooled_sd(groups: Sequence[Sequence[float]]) -> float:
    """The standard deviation within groups, pooled: here, how far gateways alike differ from each other."""
    counted = [group for group in groups if len(group) > 1]
    freedom = sum(len(group) - 1 for group in counted)
    squares = sum(statistics.variance(group) * (len(group) - 1) for group in counted)
    return math.sqrt(squares / freedom) if freedom else math.nan


async def recording_cost(on: Sequence[Target], off: Sequence[Target]) -> dict[str, Any]:
    """What the usage ledger costs a request: LEDGER_GATEWAYS gateways with it on and as many with it off,
    alike otherwise, measured in turns (a batch of LEDGER_BATCH requests each, the order rotating), so that
    this machine's speed, which moves over minutes, moves them all alike. Per dialect and kind: each arm's
    p50 latency, each gateway's CPU per request (every thread of its process, over the whole turns), and
    on - off as the difference of the two arms' means with its 95 % interval (Welch's t over the gateways).
    Several gateways per arm, because two processes alike differ by as much as the ledger could cost
    (~0.2-0.3 ms of CPU a request, in A/A runs on 2026-12-03), which one gateway per arm takes for the
    ledger's; and an interval from the turns alone leaves that out."""
    targets = [
        gateway
        for index, pair in enumerate(zip(on, off, strict=True))
        for gateway in (pair if index % 2 == 0 else pair[::-1])
    ]
    arms = {"on": on, "off": off}
    found: dict[str, Any] = {}
    async with client_session() as session:
        for target in targets:
            await warm_up(session, target)
        for dialect in LEDGER_DIALECTS:
            for stream in (False, True):
                samples: dict[str, list[float]] = {arm: [] for arm in arms}
                latencies: dict[str, list[float]] = {target.name: [] for target in targets}
                cpu: dict[str, list[float]] = {target.name: [] for target in targets}
                dropped = 0
                for turn in range(LEDGER_TURNS):
                    # Each one's CPU over the whole turn: the ledger writes its rows in a thread once a
                    # second, whichever gateway is being asked at that moment.
                    started = {target.name: cpu_s(target.pid or 0) for target in targets}
                    for target in rotated(targets, turn):
                        batch = await sequential(session, target, dialect, stream, LEDGER_BATCH)
                        arm = "on" if target in on else "off"
                        samples[arm] += [sample.total_ms for sample in batch if sample.ok]
                        latencies[target.name] += [sample.total_ms for sample in batch if sample.ok]
                    ended = {target.name: cpu_s(target.pid or 0) for target in targets}
                    if any(not started[name][1] <= ended[name][1] for name in started):
                        dropped += 1  # a thread ended, its time with it: the turn is not counted for any
                        continue
                    for target in targets:
                        used = ended[target.name][0] - started[target.name][0]
                        cpu[target.name].append(1000 * used / LEDGER_BATCH)
                per_gateway = {name: mean(values) for name, values in cpu.items()}
                means = {arm: [per_gateway[t.name] for t in gateways] for arm, gateways in arms.items()}
                delta, half = difference(means["on"], means["off"])
                p50s = {name: percentile(values, 50) for name, values in latencies.items()}
                p50_delta, p50_half = difference(
                    [p50s[t.name] for t in arms["on"]], [p50s[t.name] for t in arms["off"]]
                )
                found[f"{dialect} {'stream' if stream else 'plain'}"] = {
                    "p50_ms": {arm: round(percentile(samples[arm], 50), 3) for arm in arms},
                    "p50_on_minus_off": {"mean": round(p50_delta, 3), "interval": round(p50_half, 3)},
                    "per_gateway_p50": {name: round(value, 3) for name, value in p50s.items()},
                    "success": {
                        arm: round(100 * len(samples[arm]) / (len(gateways) * LEDGER_TURNS * LEDGER_BATCH), 2)
                        for arm, gateways in arms.items()
                    },
                    "cpu_ms": {arm: round(mean(means[arm]), 3) for arm in arms},
                    "on_minus_off": {"mean": round(delta, 3), "interval": round(half, 3)},
                    "alike_sd": round(pooled_sd(list(means.values())), 3),
                    "per_gateway": {name: round(value, 3) for name, value in per_gateway.items()},
                    "turns_dropped": dropped,
                }
    return found


def overall(found: dict[str, Any], key: str = "per_gateway") -> dict[str, float]:
    """All rows at once, in %: each gateway's CPU (``per_gateway``) or p50 (``per_gateway_p50``) in each
    row over the off arm's mean there, averaged over the rows; on - off of those, with its 95 % interval
    (Welch's t over the gateways). More requests than any row's, so a smaller difference shows."""
    ratios: dict[str, list[float]] = {}
    for row in found.values():
        # A gateway with no figure in a row (every turn dropped, no request answered) is left out of it.
        values = {name: value for name, value in (row.get(key) or {}).items() if not math.isnan(value)}
        offs = [value for name, value in values.items() if "-off-" in name]
        if not offs:
            continue
        for name, value in values.items():
            ratios.setdefault(name, []).append(value / mean(offs))
    arms = {
        arm: [mean(values) for name, values in ratios.items() if f"-{arm}-" in name] for arm in ("on", "off")
    }
    delta, half = difference(arms["on"], arms["off"])
    return {"mean_pct": round(100 * delta, 2), "interval_pct": round(100 * half, 2)}


def ledger_overall(found: dict[str, Any]) -> dict[str, Any]:
    return {"usage_ledger_all_rows": {"cpu": overall(found), "p50": overall(found, "per_gateway_p50")}}


def recording_table(found: dict[str, Any]) -> str:
    lines = [
        f"\n== usage ledger: {LEDGER_GATEWAYS} gateways on, {LEDGER_GATEWAYS} off, in turns "
        "(on - off with its 95 % interval; CPU ms per request) ==",
        f"{'row':<18}{'CPU off':>9}{'CPU on - off':>15}{'%':>8}{'p50 ms off':>12}{'p50 on - off':>15}"
        f"{'%':>8}{'alike sd':>10}{'turns':>7}",
    ]
    for name, row in found.items():
        change, cpu_off = row["on_minus_off"], row["cpu_ms"]["off"]
        latency = row.get("p50_on_minus_off") or {"mean": math.nan, "interval": math.nan}
        p50_off = row["p50_ms"]["off"]
        counted = LEDGER_TURNS - row.get("turns_dropped", 0)
        lines.append(
            f"{name:<18}{cpu_off:>9.2f}{change['mean']:>+9.2f}±{change['interval']:<5.2f}"
            f"{100 * change['mean'] / cpu_off:>+7.1f}%{p50_off:>12.2f}"
            f"{latency['mean']:>+9.2f}±{latency['interval']:<5.2f}{100 * latency['mean'] / p50_off:>+7.1f}%"
            f"{row['alike_sd']:>10.2f}{counted:>7}"
        )
    cpu, p50 = overall(found), overall(found, "per_gateway_p50")
    lines.append(
        f"{'all rows':<18}{'':>9}{cpu['mean_pct']:>+8.2f}%±{cpu['interval_pct']:<5.2f}{'':>8}{'':>12}"
        f"{p50['mean_pct']:>+8.2f}%±{p50['interval_pct']:<5.2f}"
    )
    return "\n".join(lines)


def write_config(
    directory: Path, upstream: str, ledger: bool = True, name: str = "bench-config.yaml"
) -> Path:
    config = {
        "model_list": [
            {
                "model_name": "bench-openai",
                "litellm_params": {
                    "model": "openai/bench-openai",
                    "api_base": f"{upstream}/v1",
                    "api_key": "x",
                },
            },
            *(
                {
                    "model_name": "bench-routed",
                    "litellm_params": {
                        "model": "openai/bench-openai",
                        "api_base": f"{upstream}/v1",
                        "api_key": key,
                    },
                }
                for key in ("x", "y")
            ),
            {
                "model_name": "gpt-4o",
                "litellm_params": {"model": "openai/gpt-4o", "api_base": f"{upstream}/v1", "api_key": "x"},
            },
            {
                "model_name": "bench-anthropic",
                "litellm_params": {
                    "model": "anthropic/bench-anthropic",
                    "api_base": upstream,
                    "api_key": "x",
                },
            },
            {
                "model_name": "bench-gemini",
                "litellm_params": {"model": "gemini/bench-gemini", "api_base": upstream, "api_key": "x"},
            },
        ],
        "general_settings": {"master_key": HEADERS["x-api-key"]},
        "litellm_settings": {"drop_params": True},
    }
    if not ledger:
        config["memproxy"] = {"usage_ledger": False}
    path = directory / name
    path.write_text(yaml.safe_dump(config))
    return path


def _triple(values: dict[str, float] | None) -> str:
    return "/".join(f"{v:.1f}" for v in values.values()) if values else "-"


def serve_command(config: Path, port: int, state_dir: Path, python: str = sys.executable) -> list[str]:
    """The gateway as a child process: the real CLI, on loopback (``python``: another venv's, another
    LiteLLM)."""
    return [
        python,
        "-m",
        "aiohttp_memproxy",
        "serve",
        "--config",
        str(config),
        "--port",
        str(port),
        "--state-dir",
        str(state_dir),
    ]


def spawn(command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A child process whose output is not read (the bench measures it from outside), in a process group
    of its own (``pause`` stops and continues the whole group)."""
    return subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    """The process and its group (a LiteLLM proxy's workers): continued (a paused one would not see its
    SIGTERM), terminated, killed if it has not ended within a minute."""
    if process.poll() is not None:
        return
    for sent in (signal.SIGCONT, signal.SIGTERM):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sent)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def table(targets: list[Target], goals: dict[str, Any]) -> str:
    lines = []
    for dialect in DIALECTS:
        lines.append(f"\n== {dialect} ==")
        header = f"{'row':<34}" + "".join(f"{t.name:>22}" for t in targets)
        lines.append(header)
        rows = [
            ("plain p50/p95/p99 ms", lambda r: _triple(r["plain_ms"])),
            ("stream p50/p95/p99 ms", lambda r: _triple(r["stream_ms"])),
            ("first byte p50/p95/p99 ms", lambda r: _triple(r["first_byte_ms"])),
            ("overhead plain p50/p95/p99", lambda r: _triple(r.get("overhead_plain_ms"))),
            ("overhead 1st byte p50/p95/p99", lambda r: _triple(r.get("overhead_first_byte_ms"))),
            *[
                (
                    f"req/s c={level} (success %)",
                    lambda r, level=level: f"{r[f'c{level}']['rps']} ({r[f'c{level}']['success']})",
                )
                for level in CONCURRENCY
            ],
            (
                "200 streams (success %)",
                lambda r: f"{r['streams_c200']['rps']} ({r['streams_c200']['success']})",
            ),
        ]
        for label, render in rows:
            lines.append(f"{label:<34}" + "".join(f"{render(t.results[dialect]):>22}" for t in targets))
    lines.append("")
    for t in targets:
        if t.pid:
            r = t.results
            lines.append(
                f"{t.name}: start to ready {t.start_to_ready_s:.2f} s, "
                f"RSS {r.get('rss_after_warmup_mb')} MB after warm-up, "
                f"{r.get('rss_after_10k_mb')} MB after {r.get('requests_sent')} requests"
            )
    lines.append("\nGoals:")
    lines += [
        f"  [{'x' if ok else ' '}] {name}" if ok is not None else f"  [?] {name} (needs COMPARE=1)"
        for name, ok in goals.items()
    ]
    return "\n".join(lines)


def goals(proxy: Target, litellm: Target | None) -> dict[str, bool | None]:
    r = proxy.results
    found: dict[str, bool | None] = {
        "RSS <= 250 MB after 10,000 requests": r["rss_after_10k_mb"] <= 250,
        "RSS growth < 10 MB after warm-up": r["rss_after_10k_mb"] - r["rss_after_warmup_mb"] < 10,
        "start to ready <= 5 s": proxy.start_to_ready_s <= 5,
        "200 concurrent streams, 100 % success (every dialect)": all(
            r[d]["streams_c200"]["success"] == 100 for d in DIALECTS
        ),
    }
    for dialect in DIALECTS:
        mine = r[dialect]
        theirs = litellm.results[dialect] if litellm else None
        found[f"{dialect}: overhead p50 <= 0.5x LiteLLM's (plain)"] = (
            mine["overhead_plain_ms"]["p50"] <= 0.5 * theirs["overhead_plain_ms"]["p50"] if theirs else None
        )
        found[f"{dialect}: first-byte overhead p50 <= 0.5x LiteLLM's"] = (
            mine["overhead_first_byte_ms"]["p50"] <= 0.5 * theirs["overhead_first_byte_ms"]["p50"]
            if theirs
            else None
        )
        found[f"{dialect}: req/s at c=50 >= 2x LiteLLM's, 100 % success"] = (
            mine["c50"]["rps"] >= 2 * theirs["c50"]["rps"] and mine["c50"]["success"] == 100
            if theirs
            else None
        )
    return found


async def recording_run(
    tmp: Path, upstream: str, env: dict[str, str], processes: list[subprocess.Popen[bytes]]
) -> dict[str, Any]:
    """Fresh gateways, LEDGER_GATEWAYS with the usage ledger on and as many off, measured in turns. They
    are started, warmed up and first asked in the order on, off, off, on, on, off, ...: whatever comes with
    being earlier (a gateway started first has run longest when the turns begin) falls on both arms alike."""
    configs = {
        ledger: write_config(tmp, upstream, ledger=ledger, name=f"ledger-{ledger}.yaml")
        for ledger in (True, False)
    }
    arms: dict[bool, list[Target]] = {True: [], False: []}
    mine: list[subprocess.Popen[bytes]] = []
    for index in range(LEDGER_GATEWAYS):
        for ledger in (True, False) if index % 2 == 0 else (False, True):
            name = f"ledger-{'on' if ledger else 'off'}-{index + 1}"
            port = free_port()
            process = spawn(serve_command(configs[ledger], port, tmp / name), env)
            processes.append(process)
            mine.append(process)
            await wait_port(f"http://127.0.0.1:{port}", "/health/readiness")
            arms[ledger].append(Target(name, f"http://127.0.0.1:{port}", pid=process.pid))
    try:
        return await recording_cost(arms[True], arms[False])
    finally:
        for process in mine:
            stop(process)


async def start_upstream(chunks: int, env: dict[str, str], processes: list[subprocess.Popen[bytes]]) -> str:
    """The fake upstream as a child process (added to ``processes``), once it answers: its base URL."""
    port = free_port()
    command = [sys.executable, "-m", "tests.fake_upstream", "--port", str(port), "--chunks", str(chunks)]
    processes.append(spawn(command, env))
    upstream = f"http://127.0.0.1:{port}"
    await wait_port(upstream, "/")
    return upstream


def short_table(proxies: Sequence[Target]) -> str:
    """The short form's screen: each gateway's overhead p50 per dialect, and its start to ready."""
    lines = [f"{'overhead p50 ms (plain / 1st byte)':<36}" + "".join(f"{t.name:>16}" for t in proxies)]
    for dialect in DIALECTS:
        cells = [
            f"{t.results[dialect]['overhead_plain_ms']['p50']:.1f} / "
            f"{t.results[dialect]['overhead_first_byte_ms']['p50']:.1f}"
            for t in proxies
        ]
        lines.append(f"{dialect:<36}" + "".join(f"{cell:>16}" for cell in cells))
    lines.append(f"{'start to ready s':<36}" + "".join(f"{t.start_to_ready_s:>16.2f}" for t in proxies))
    return "\n".join(lines)


async def short_run(args: argparse.Namespace) -> dict[str, Any]:
    """The short form (``--short``): the latency rows only (plain, stream, first byte and their overhead over
    the upstream itself), of the gateway served by ``--python`` and, with ``--against``, of the same gateway
    served by another venv's Python (the pinned LiteLLM), measured in turns. No throughput, memory or
    ledger rows: a check of a LiteLLM release in about a minute, not a measurement to publish."""
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    processes: list[subprocess.Popen[bytes]] = []
    pythons = {"memproxy": args.python, **({"pinned": args.against} if args.against else {})}
    with tempfile.TemporaryDirectory(prefix="memproxy-bench-") as tmp:
        try:
            upstream = await start_upstream(args.chunks, env, processes)
            config = write_config(Path(tmp), upstream)
            proxies = []
            for name, python in pythons.items():
                port = free_port()
                started = time.perf_counter()
                process = spawn(serve_command(config, port, Path(tmp) / name, python), env)
                processes.append(process)
                await wait_port(f"http://127.0.0.1:{port}", "/health/readiness")
                proxies.append(
                    Target(
                        name,
                        f"http://127.0.0.1:{port}",
                        pid=process.pid,
                        start_to_ready_s=time.perf_counter() - started,
                    )
                )
            direct = Target("direct", upstream)
            async with client_session() as session:
                for target in (direct, *proxies):
                    await warm_up(session, target)
            await latency(direct, proxies)
        finally:
            for process in processes:
                stop(process)
    print(short_table(proxies))
    report = {t.name: {"start_to_ready_s": t.start_to_ready_s, **t.results} for t in proxies}
    return save({"chunks": args.chunks, "short": True, "targets": report}, args)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    if args.short:
        return await short_run(args)
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    processes: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="memproxy-bench-") as tmp:
        try:
            upstream = await start_upstream(args.chunks, env, processes)
            if args.ledger_only:
                recording = await recording_run(Path(tmp), upstream, env, processes)
                print(recording_table(recording))
                return save(
                    {"chunks": args.chunks, "usage_ledger": recording, **ledger_overall(recording)}, args
                )
            config = write_config(Path(tmp), upstream)
            port = free_port()
            started = time.perf_counter()
            proxy_process = spawn(serve_command(config, port, Path(tmp) / "state"), env)
            processes.append(proxy_process)
            await wait_port(f"http://127.0.0.1:{port}", "/health/readiness")
            direct = Target("direct", upstream)
            proxy = Target(
                "memproxy",
                f"http://127.0.0.1:{port}",
                pid=proxy_process.pid,
                start_to_ready_s=time.perf_counter() - started,
            )
            targets = [direct, proxy]
            await measure(direct, [0])
            await measure(proxy, [0])
            litellm = None
            if args.compare:
                # One server at a time: an idle LiteLLM proxy still runs background jobs that would take
                # CPU from ours on a small machine, and the other way round.
                pause([proxy], None)
                litellm_port = free_port()
                started = time.perf_counter()
                command = [
                    args.litellm,
                    "--config",
                    str(config),
                    "--port",
                    str(litellm_port),
                    "--num_workers",
                    "1",
                ]
                litellm_process = spawn(command, env)
                processes.append(litellm_process)
                await wait_port(f"http://127.0.0.1:{litellm_port}", "/health/liveliness", 120)
                litellm = Target(
                    "litellm-proxy",
                    f"http://127.0.0.1:{litellm_port}",
                    pid=litellm_process.pid,
                    start_to_ready_s=time.perf_counter() - started,
                )
                targets.append(litellm)
                await measure(litellm, [0])
            await latency(direct, targets[1:])
            for process in processes[1:]:  # the proxies: the ledger's gateways are measured alone
                stop(process)
            recording = await recording_run(Path(tmp), upstream, env, processes)
        finally:
            for process in processes:
                stop(process)
    achieved = goals(proxy, litellm)
    print(table(targets, achieved))
    print(recording_table(recording))
    report = {
        "chunks": args.chunks,
        "targets": {t.name: {"start_to_ready_s": t.start_to_ready_s, **t.results} for t in targets},
        "usage_ledger": recording,
        **ledger_overall(recording),
        "goals": achieved,
    }
    return save(report, args)


def save(report: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The report as JSON, once, at the very end."""
    Path(args.output).write_text(json.dumps(report, indent=2))
    print(f"\nJSON: {args.output}")
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench", description=__doc__)
    parser.add_argument("--chunks", type=int, default=20, help="text chunks per streamed answer")
    parser.add_argument(
        "--compare", action="store_true", help="also run a LiteLLM proxy server (make bench-deps)"
    )
    parser.add_argument("--litellm", default=".bench-venv/bin/litellm", help="the litellm CLI for --compare")
    parser.add_argument("--output", default="bench-results.json")
    parser.add_argument(
        "--ledger-only", action="store_true", help="only the usage ledger's cost (on vs off, in turns)"
    )
    parser.add_argument("--short", action="store_true", help="latency rows only (make litellm-check)")
    parser.add_argument(
        "--python", default=sys.executable, help="--short: the Python that serves the gateway"
    )
    parser.add_argument("--against", help="--short: another venv's Python, measured in turns as 'pinned'")
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
