"""``memproxy usage``: the usage ledger summed per group (day, client, user, model, deployment), as a table,
JSON or CSV; also what /ui charts. Reads the ledger only (read-only), so it runs beside the service."""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Literal

from aiohttp_memproxy.usage.ledger import Row

GroupBy = Literal["day", "client", "user", "model", "deployment"]
GROUPINGS: tuple[GroupBy, ...] = ("day", "client", "user", "model", "deployment")
SINCE_RE = re.compile(r"(\d+)([dhm])")
UNIT_S = {"d": 86400, "h": 3600, "m": 60}


def since_epoch(value: str, now: float | None = None) -> float:
    """``7d``, ``12h``, ``30m`` ago, or a date ``YYYY-MM-DD`` (UTC midnight); ValueError otherwise."""
    now = time.time() if now is None else now
    relative = SINCE_RE.fullmatch(value.strip())
    if relative:
        return now - int(relative.group(1)) * UNIT_S[relative.group(2)]
    try:
        day = datetime.strptime(value.strip(), "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"--since: expected 7d, 12h, 30m or YYYY-MM-DD, got {value!r}") from None
    return day.timestamp()


@dataclass(frozen=True)
class Group:
    key: str
    requests: int
    errors: int
    input_tokens: int
    output_tokens: int
    cache_read_tokens: int
    cache_write_tokens: int
    reasoning_tokens: int
    cost_usd: float | None  # None when no row of the group had a known price
    latency_p50_ms: float
    latency_p95_ms: float

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


def _key(row: Row, by: GroupBy) -> str:
    if by == "day":
        return datetime.fromtimestamp(row.ts, UTC).strftime("%Y-%m-%d")
    return {"client": row.client, "user": row.user_id, "model": row.model, "deployment": row.deployment}[by]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return round(ordered[low] + (ordered[high] - ordered[low]) * (rank - low), 1)


def summarize(rows: Iterable[Row], by: GroupBy) -> list[Group]:
    """One Group per key, in key order."""
    grouped: dict[str, list[Row]] = {}
    for row in rows:
        grouped.setdefault(_key(row, by), []).append(row)
    groups = []
    for key in sorted(grouped):
        members = grouped[key]
        costs = [row.cost_usd for row in members if row.cost_usd is not None]
        latencies = [row.latency_ms for row in members]
        groups.append(
            Group(
                key=key,
                requests=len(members),
                errors=sum(1 for row in members if row.status >= 400),
                input_tokens=sum(row.input_tokens or 0 for row in members),
                output_tokens=sum(row.output_tokens or 0 for row in members),
                cache_read_tokens=sum(row.cache_read_tokens or 0 for row in members),
                cache_write_tokens=sum(row.cache_write_tokens or 0 for row in members),
                reasoning_tokens=sum(row.reasoning_tokens or 0 for row in members),
                cost_usd=round(sum(costs), 6) if costs else None,
                latency_p50_ms=_percentile(latencies, 50),
                latency_p95_ms=_percentile(latencies, 95),
            )
        )
    return groups


HEADERS = (
    "requests",
    "error_rate",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "cost_usd",
    "latency_p50_ms",
    "latency_p95_ms",
)


def _record(group: Group) -> dict[str, object]:
    return {**asdict(group), "error_rate": round(group.error_rate, 4)}


def render(groups: Sequence[Group], by: GroupBy, fmt: Literal["table", "json", "csv"]) -> str:
    if fmt == "json":
        return json.dumps({"by": by, "groups": [_record(group) for group in groups]}, indent=2)
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([by, *HEADERS])
        for group in groups:
            record = _record(group)
            writer.writerow([group.key, *("" if record[name] is None else record[name] for name in HEADERS)])
        return out.getvalue().rstrip("\n")
    if not groups:
        return "no requests in the ledger for this period"
    cells = [
        [
            group.key,
            str(group.requests),
            f"{group.error_rate:.1%}",
            str(group.input_tokens),
            str(group.output_tokens),
            str(group.cache_read_tokens),
            str(group.cache_write_tokens),
            str(group.reasoning_tokens),
            "-" if group.cost_usd is None else f"${group.cost_usd:.4f}",
            f"{group.latency_p50_ms:g}",
            f"{group.latency_p95_ms:g}",
        ]
        for group in groups
    ]
    titles = [by, "requests", "errors", "input", "output", "cache read", "cache write", "reasoning", "cost",
              "p50 ms", "p95 ms"]  # fmt: skip
    widths = [max(len(row[index]) for row in [titles, *cells]) for index in range(len(titles))]
    lines = ["  ".join(cell.ljust(width) if index == 0 else cell.rjust(width)
                       for index, (cell, width) in enumerate(zip(row, widths, strict=True)))
             for row in [titles, *cells]]  # fmt: skip
    return "\n".join(lines)
