"""The usage ledger: one row per model request, in SQLite in the state directory.

Who asked (memory user, client family), which model and deployment answered, how (status, attempts,
fallback, latency, first byte), what it used (tokens) and cost (LiteLLM's price for that model and usage,
empty when unknown). Never a prompt, an answer, a header value or a key.

Written off the event loop, in batches (the standard library's ``sqlite3``, WAL mode). A failed write (disk
full, read-only, locked) never fails or slows a request: the rows wait in memory (bounded) and are tried
again at the next flush; the failure is counted in /metrics and logged once until a write succeeds again.
Rows older than ``memproxy.usage_retention_days`` are deleted at start and daily. The ledger belongs to the
process: a reload (SIGHUP) keeps it. ``read`` is for ``memproxy usage`` and /ui (read-only, any process).
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import structlog
from aiohttp import web

from aiohttp_memproxy import statedir
from aiohttp_memproxy.keys import LEDGER, METRICS, OUTCOME, RUNTIME, SETTINGS
from aiohttp_memproxy.usage.clients import client_family
from aiohttp_memproxy.usage.metrics import Metrics
from aiohttp_memproxy.usage.outcome import Outcome

log = structlog.get_logger()

FILE_NAME = "usage.sqlite3"
# What SQLite keeps beside the file: read with it, so trusted with it.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")
# How often the writer writes: each flush makes the event loop's thread wait for the GIL (CPython's sqlite3
# releases and retakes it around every SQLite call), so a few large batches cost a request less than many
# small ones (docs/performance.md). A stop writes what waits; a crash loses at most these seconds of rows.
# (LiteLLM's proxy writes its spend logs every 10-15 s: PROXY_BATCH_WRITE_AT in litellm/constants.py.)
FLUSH_INTERVAL_S = 5.0
# Rows that wake the writer before its interval is up: a busy gateway's batches stay this size.
FLUSH_ROWS = 1_000
# Entries made into rows (and counted in /metrics) between two turns of the event loop, at a flush.
SETTLE_SLICE = 100
MAX_PENDING = 50_000  # rows waiting while writes fail: beyond this the oldest are dropped (and counted)
PRUNE_INTERVAL_S = 24 * 3600
BUSY_TIMEOUT_S = 0.2  # a locked database is a failed write, retried later: never a long wait in a thread


class Row(NamedTuple):
    """A ledger row. A tuple: cheap to make on every model request, and its values go to SQLite as they
    are."""

    ts: float  # epoch seconds, when the request arrived
    request_id: str
    route: str
    user_id: str
    client: str
    model: str
    deployment: str  # provider/api_base host, never a key
    status: int
    attempts: int
    fallback: bool
    latency_ms: float
    first_byte_ms: float | None
    input_tokens: int | None
    output_tokens: int | None
    cache_read_tokens: int | None
    cache_write_tokens: int | None
    reasoning_tokens: int | None
    cost_usd: float | None


COLUMNS = Row._fields
SCHEMA = (
    "CREATE TABLE IF NOT EXISTS requests ("
    "ts REAL NOT NULL, request_id TEXT NOT NULL, route TEXT NOT NULL, user_id TEXT NOT NULL, "
    "client TEXT NOT NULL, model TEXT NOT NULL, deployment TEXT NOT NULL, status INTEGER NOT NULL, "
    "attempts INTEGER NOT NULL, fallback INTEGER NOT NULL, latency_ms REAL NOT NULL, first_byte_ms REAL, "
    "input_tokens INTEGER, output_tokens INTEGER, cache_read_tokens INTEGER, cache_write_tokens INTEGER, "
    "reasoning_tokens INTEGER, cost_usd REAL)",
    "CREATE INDEX IF NOT EXISTS requests_ts ON requests (ts)",
)
# Built from the Row's own field names, never from input.
INSERT = f"INSERT INTO requests ({', '.join(COLUMNS)}) VALUES "  # noqa: S608
ONE_ROW = f"({', '.join('?' * len(COLUMNS))})"


class Entry(NamedTuple):
    """What a finished model request leaves for its row, taken as it is (a tuple): the row, its counters,
    its usage read and its price are made with the writer's next batch (``Ledger.settle``), never in a
    request's time (LiteLLM's cost function is the dearest part, and cheaper run many times in a row)."""

    arrived: float  # epoch seconds
    elapsed_s: float
    status: int
    user_agent: str | None
    outcome: Outcome
    price: Callable[[Outcome], float | None]  # LiteLLM's price of the outcome's usage (Gateway.price)


def row_of(entry: Entry) -> Row:
    outcome = entry.outcome
    tokens = outcome.settled()
    latency_ms = round(entry.elapsed_s * 1000, 1)
    first_byte_s = outcome.first_byte_s
    return Row(
        ts=entry.arrived,
        request_id=outcome.request_id,
        route=outcome.route,
        user_id=outcome.user_id,
        client=client_family(entry.user_agent),
        model=outcome.model,
        deployment=outcome.deployment,
        status=entry.status,
        attempts=outcome.attempts,
        fallback=outcome.fallback,
        latency_ms=latency_ms,
        first_byte_ms=round(first_byte_s * 1000, 1) if first_byte_s is not None else latency_ms,
        input_tokens=tokens.input,
        output_tokens=tokens.output,
        cache_read_tokens=tokens.cache_read,
        cache_write_tokens=tokens.cache_write,
        reasoning_tokens=tokens.reasoning,
        cost_usd=entry.price(outcome),
    )


class Ledger:
    def __init__(self, path: Path, retention_days: float, metrics: Metrics) -> None:
        self.path = path
        self.retention_s = retention_days * 86400
        self._metrics = metrics
        self._entries: list[Entry] = []
        self._pending: list[Row] = []
        self._connection: sqlite3.Connection | None = None
        self._failing = False
        self._pruned_at = 0.0
        self._wake = asyncio.Event()
        self._flushing = asyncio.Lock()  # one write at a time: the connection is used from a worker thread
        self._stopping = False

    def take(self, entry: Entry) -> None:
        """A finished request's entry (never blocks, never raises): the next flush makes its row."""
        self._entries.append(entry)
        if len(self._entries) == FLUSH_ROWS:
            self._wake.set()

    async def settle(self) -> None:
        """Every entry taken made into its row and counted in /metrics (which /metrics asks for first), in
        slices: a large batch (LiteLLM's cost function) never holds the event loop long."""
        while self._entries:
            self._settle(SETTLE_SLICE)
            await asyncio.sleep(0)

    def _settle(self, count: int) -> None:
        entries, self._entries = self._entries[:count], self._entries[count:]
        for entry in entries:
            try:
                row = row_of(entry)
            except Exception as exc:  # a bug of ours must never stop the writer: that row is lost, counted
                self._metrics.ledger_dropped.inc()
                log.error("ledger_row_failed", error=type(exc).__name__)
                continue
            self.record(row)
            try:
                self._metrics.count_usage(row)
            except Exception as exc:  # nor a counter that refuses a value: the row is kept
                log.error("ledger_metrics_failed", error=type(exc).__name__)

    def record(self, row: Row) -> None:
        """Queue a row (never blocks, never raises): the next flush writes it."""
        self._pending.append(row)
        if len(self._pending) == FLUSH_ROWS:
            self._wake.set()
        if len(self._pending) > MAX_PENDING:
            dropped = len(self._pending) - MAX_PENDING
            del self._pending[:dropped]
            self._metrics.ledger_dropped.inc(dropped)

    async def run(self) -> None:
        """Flush every FLUSH_INTERVAL_S (or when woken) until stopped; never cancelled mid-write."""
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_INTERVAL_S)
            self._wake.clear()
            await self.flush()

    def wake(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        """``run`` returns after the flush in progress, if any."""
        self._stopping = True
        self._wake.set()

    async def flush(self) -> None:
        async with self._flushing:
            await self._flush()

    async def _flush(self) -> None:
        await self.settle()
        if not self._pending and (self._failing or time.time() - self._pruned_at < PRUNE_INTERVAL_S):
            return
        rows, self._pending = self._pending, []
        try:
            await asyncio.to_thread(self._write, rows)
        except (sqlite3.Error, OSError) as exc:
            self._pending[:0] = rows  # tried again at the next flush, oldest first
            self._metrics.ledger_write_errors.inc()
            await asyncio.to_thread(self._close)  # closing a WAL database checkpoints: disk I/O
            if not self._failing:
                self._failing = True
                log.error(
                    "ledger_write_failed", path=str(self.path), error=type(exc).__name__, pending=len(rows)
                )
            return
        if self._failing:
            self._failing = False
            log.info("ledger_write_recovered", path=str(self.path), written=len(rows))

    def _write(self, rows: Sequence[Row]) -> None:
        connection = self._connection or self._open()
        # One statement for many rows, not executemany's step a row: each SQLite call is a GIL handoff
        # (FLUSH_INTERVAL_S). A Row's values are its columns, in order.
        per_statement = max(1, connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) // len(COLUMNS))
        with connection:
            for start in range(0, len(rows), per_statement):
                batch = rows[start : start + per_statement]
                values = [value for row in batch for value in row]
                connection.execute(INSERT + ", ".join([ONE_ROW] * len(batch)), values)
        if time.time() - self._pruned_at >= PRUNE_INTERVAL_S:
            try:  # the rows above are in: a failed prune is tried at the next flush, never re-queues them
                with connection:
                    connection.execute("DELETE FROM requests WHERE ts < ?", (time.time() - self.retention_s,))
            except sqlite3.Error as exc:
                log.warning("ledger_prune_failed", error=type(exc).__name__)
            else:
                self._pruned_at = time.time()
                # What SQLite created beside it too: the owner's only.
                for file in statedir.with_companions(self.path, SQLITE_COMPANIONS):
                    with contextlib.suppress(OSError):
                        file.chmod(0o600)

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        connection = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, check_same_thread=False)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            for statement in SCHEMA:
                connection.execute(statement)
        except sqlite3.Error:
            connection.close()
            raise
        self._connection = connection
        return connection

    def _close(self) -> None:
        if self._connection is not None:
            with contextlib.suppress(sqlite3.Error):
                self._connection.close()
            self._connection = None

    async def aclose(self) -> None:
        await self.flush()
        await asyncio.to_thread(self._close)


def _select(path: Path, query: str, parameters: tuple[object, ...]) -> list[tuple[object, ...]]:
    """``query``'s rows, read-only (beside a writing service); [] when there is no ledger yet."""
    if not path.is_file():
        return []
    connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True, timeout=5)
    try:
        return connection.execute(query, parameters).fetchall()
    finally:
        connection.close()


def read(path: Path, since: float) -> list[Row]:
    """The rows since ``since`` (epoch seconds), oldest first."""
    query = f"SELECT {', '.join(COLUMNS)} FROM requests WHERE ts >= ? ORDER BY ts"  # noqa: S608  # our names
    return [_row(values) for values in _select(path, query, (since,))]


DAILY_GROUPS = ("client", "model")


def daily(path: Path, since: float, by: str) -> list[dict[str, object]]:
    """Per UTC day and ``by`` (client or model) since ``since``: requests, tokens (input + output), cost
    (None where no row had a price). Summed by SQLite."""
    if by not in DAILY_GROUPS:
        raise ValueError(f"by: expected one of {DAILY_GROUPS}")
    query = (
        f"SELECT strftime('%Y-%m-%d', ts, 'unixepoch') AS day, {by}, COUNT(*), "  # noqa: S608  # by: checked
        "SUM(COALESCE(input_tokens, 0) + COALESCE(output_tokens, 0)), SUM(cost_usd) "
        f"FROM requests WHERE ts >= ? GROUP BY day, {by} ORDER BY day, {by}"
    )
    return [
        {"day": day, "key": key, "requests": requests, "tokens": tokens, "cost": cost}
        for day, key, requests, tokens, cost in _select(path, query, (since,))
    ]


def latest(path: Path, limit: int) -> list[Row]:
    """The last ``limit`` rows, newest first."""
    query = f"SELECT {', '.join(COLUMNS)} FROM requests ORDER BY ts DESC LIMIT ?"  # noqa: S608  # our names
    return [_row(values) for values in _select(path, query, (limit,))]


def overview(path: Path, since: float, limit: int) -> dict[str, object]:
    """/ui's usage: per day by client and by model since ``since``, and the last ``limit`` rows. A ledger
    that cannot be read gives empty usage and says so (the page still shows the gateway's state)."""
    try:
        return {
            "by_client": daily(path, since, "client"),
            "by_model": daily(path, since, "model"),
            "latest": [row._asdict() for row in latest(path, limit)],
            "error": None,
        }
    except sqlite3.Error as exc:
        log.warning("ledger_read_failed", path=str(path), error=type(exc).__name__)
        return no_overview("the usage ledger cannot be read (see the gateway's log)")


def no_overview(error: str) -> dict[str, object]:
    """/ui's usage where there is none to show, and why."""
    return {"by_client": [], "by_model": [], "latest": [], "error": error}


def _row(values: Iterable[object]) -> Row:
    row = Row._make(values)
    return row._replace(fallback=bool(row.fallback))


async def ledger(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: the ledger and its writer for the app's lifetime; the last rows written at exit.
    None with ``memproxy.usage_ledger: false``: no row, no usage asked of an upstream for it, no token
    metrics (the process's setting: it changes at a restart)."""
    settings = app[SETTINGS]
    if not settings.gateway.usage_ledger:
        log.info("usage_ledger_off")
        yield
        return
    assert settings.gateway.state_dir is not None  # settings fill it in
    path = settings.gateway.state_dir / FILE_NAME
    statedir.trust(
        path, SQLITE_COMPANIONS
    )  # a planted ledger (or its journal) is set aside: a new one starts
    book = Ledger(path, settings.gateway.usage_retention_days, app[METRICS])
    app[LEDGER] = book
    writer = asyncio.create_task(book.run())
    try:
        yield
    finally:
        book.stop()
        await writer  # its flush in progress finishes: never a write cut off in its thread
        await book.aclose()


def record_request(request: web.Request, status: int, elapsed_s: float) -> None:
    """A finished model request (its outcome ``metered``) for the ledger: its row, and its usage in
    /metrics, are made with the next batch. Called with the canonical log line."""
    outcome = request.get(OUTCOME)
    book = request.app.get(LEDGER)
    if outcome is None or not outcome.metered or book is None:
        return
    arrived = time.time() - elapsed_s
    user_agent = request.headers.get("User-Agent")
    book.take(Entry(arrived, elapsed_s, status, user_agent, outcome, request[RUNTIME].gateway.price))
