"""The usage ledger: a row per model request with its tokens and cost, in SQLite in the state dir; its
write failures never touch a request; ``memproxy usage`` sums it."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from aiohttp_memproxy import cli
from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.dialects import openai_chat
from aiohttp_memproxy.keys import LEDGER, RUNTIMES
from aiohttp_memproxy.usage import ledger, report
from aiohttp_memproxy.usage.metrics import Metrics
from aiohttp_memproxy.usage.outcome import Outcome, read_later
from tests.conftest import AppClient, LogLines
from tests.fake_upstream import FakeUpstream

MESSAGES = [{"role": "user", "content": "hi"}]
# gpt-4o in LiteLLM 1.106.2's price map: $2.50 and $10.00 per million input and output tokens.
GPT_4O_COST = 5 * 2.5e-6 + 3 * 10e-6


async def rows_of(client: TestClient[web.Request, web.Application]) -> list[ledger.Row]:
    app = client.server.app
    assert app is not None
    await app[LEDGER].flush()
    return ledger.read(app[LEDGER].path, 0)


@pytest.fixture
async def gpt_sdk(
    app_client: AppClient, gateway_settings: Callable[..., Settings]
) -> AsyncIterator[tuple[TestClient[web.Request, web.Application], openai.AsyncOpenAI]]:
    client = await app_client(gateway_settings())
    sdk = openai.AsyncOpenAI(base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0)
    yield client, sdk
    await sdk.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_chat_rows_carry_tokens_and_litellm_cost(
    gpt_sdk: tuple[TestClient[web.Request, web.Application], openai.AsyncOpenAI],
    upstream: tuple[FakeUpstream, str],
    stream: bool,
) -> None:
    client, sdk = gpt_sdk
    fake, _ = upstream
    if stream:
        chunks = [
            c
            async for c in await sdk.chat.completions.create(
                model="gpt-4o-up", messages=MESSAGES, stream=True
            )
        ]  # type: ignore[arg-type]
        # The gateway asked the upstream for usage; the client, which did not, gets no usage chunk.
        assert fake.seen[-1].body["stream_options"] == {"include_usage": True}
        # The transport took that chunk out (nothing of the gateway's own goes upstream with the request).
        assert not any(name.lower().startswith("x-memproxy") for name in fake.seen[-1].headers)
        assert all(chunk.usage is None for chunk in chunks)
        # Nor the usage chunk's empty choice: every chunk says something (a role, text, or the finish).
        for chunk in chunks:
            [choice] = chunk.choices
            assert choice.delta.role or choice.delta.content or choice.finish_reason
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from upstream"
    else:
        completion = await sdk.chat.completions.create(model="gpt-4o-up", messages=MESSAGES)  # type: ignore[arg-type]
        assert completion.usage is not None
    [row] = await rows_of(client)
    assert (row.route, row.model, row.status, row.client) == (
        "/v1/chat/completions",
        "gpt-4o-up",
        200,
        "openai-sdk",
    )
    assert row.deployment.startswith("openai/127.0.0.1:")
    assert (row.input_tokens, row.output_tokens) == (5, 3)
    assert row.cost_usd == pytest.approx(GPT_4O_COST)
    assert row.user_id == "default-dev"
    assert row.first_byte_ms is not None
    assert 0 < row.first_byte_ms <= row.latency_ms
    assert row.fallback is False
    assert row.attempts == 1


async def test_a_long_answer_streams_whole_while_its_usage_is_taken_out(
    gpt_sdk: tuple[TestClient[web.Request, web.Application], openai.AsyncOpenAI],
    upstream: tuple[FakeUpstream, str],
) -> None:
    """Chunks far longer than a read (a whole file in one chunk) reach the client whole and in order."""
    client, sdk = gpt_sdk
    fake, _ = upstream
    fake.reply = ["a" * 200_000, "[]", "b" * 70_000]
    stream = await sdk.chat.completions.create(model="gpt-4o-up", messages=MESSAGES, stream=True)  # type: ignore[arg-type]
    chunks = [chunk async for chunk in stream]
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "a" * 200_000 + "[]" + "b" * 70_000
    assert all(chunk.usage is None for chunk in chunks)
    [row] = await rows_of(client)
    assert (row.input_tokens, row.output_tokens) == (5, 3)


async def test_a_stream_that_asked_for_usage_keeps_its_usage_chunk(
    gpt_sdk: tuple[TestClient[web.Request, web.Application], openai.AsyncOpenAI],
) -> None:
    client, sdk = gpt_sdk
    stream = await sdk.chat.completions.create(
        model="gpt-4o-up",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    usages = [chunk.usage for chunk in [c async for c in stream] if chunk.usage is not None]
    assert usages[-1].prompt_tokens == 5
    [row] = await rows_of(client)
    assert (row.input_tokens, row.output_tokens) == (5, 3)


@pytest.mark.parametrize("stream", [False, True])
async def test_messages_rows_read_anthropic_usage(
    app_client: AppClient, gateway_settings: Callable[..., Settings], stream: bool
) -> None:
    client = await app_client(gateway_settings())
    async with anthropic.AsyncAnthropic(
        base_url=str(client.make_url("")),
        api_key="unused",
        max_retries=0,
        default_headers={"User-Agent": "claude-cli/2.1.328 (external, sdk-cli)"},
    ) as sdk:
        if stream:
            async with sdk.messages.stream(model="claude-up", max_tokens=64, messages=MESSAGES) as events:  # type: ignore[arg-type]
                assert await events.get_final_text() == "Hello from upstream"
        else:
            message = await sdk.messages.create(model="claude-up", max_tokens=64, messages=MESSAGES)  # type: ignore[arg-type]
            assert message.usage.input_tokens == 5
    [row] = await rows_of(client)
    assert (row.route, row.model, row.client, row.user_id) == (
        "/v1/messages",
        "claude-up",
        "claude-cli",
        "claude-code",
    )
    # Input counts the cached tokens too (Anthropic's input_tokens, 5, leaves them out), as in OpenAI's usage.
    tokens = (row.input_tokens, row.output_tokens, row.cache_read_tokens, row.cache_write_tokens)
    assert tokens == (9, 3, 4, 0)
    assert row.cost_usd is None  # anthropic/claude-up: no price in LiteLLM's map, so no cost, not 0


@pytest.mark.parametrize("stream", [False, True])
async def test_responses_rows_read_the_completed_usage(
    gpt_sdk: tuple[TestClient[web.Request, web.Application], openai.AsyncOpenAI], stream: bool
) -> None:
    client, sdk = gpt_sdk
    if stream:
        events = [
            event async for event in await sdk.responses.create(model="gpt-4o-up", input="hi", stream=True)
        ]
        assert events[-1].type == "response.completed"
    else:
        response = await sdk.responses.create(model="gpt-4o-up", input="hi")
        assert response.output_text == "Hello from upstream"
    [row] = await rows_of(client)
    assert (row.route, row.input_tokens, row.output_tokens, row.reasoning_tokens) == (
        "/v1/responses",
        5,
        3,
        0,
    )
    assert row.cost_usd == pytest.approx(GPT_4O_COST)


async def test_failures_are_rows_too_and_nothing_secret_is_stored(
    app_client: AppClient, gateway_settings: Callable[..., Settings]
) -> None:
    client = await app_client(gateway_settings())
    response = await client.post("/v1/chat/completions", json={"model": "nowhere", "messages": MESSAGES})
    assert response.status == 502
    [row] = await rows_of(client)
    assert (row.model, row.status, row.input_tokens, row.cost_usd) == ("nowhere", 502, None, None)
    app = client.server.app
    assert app is not None
    raw = app[LEDGER].path.read_bytes()
    assert b"hi" not in raw.replace(b"high", b"")  # no prompt
    assert b"sk-" not in raw  # no key


async def test_usage_reaches_prometheus_by_user_client_and_model(
    gpt_sdk: tuple[TestClient[web.Request, web.Application], openai.AsyncOpenAI],
) -> None:
    client, sdk = gpt_sdk
    for _ in range(2):
        await sdk.chat.completions.create(model="gpt-4o-up", messages=MESSAGES)  # type: ignore[arg-type]
    text = await (await client.get("/metrics")).text()
    labels = 'client="openai-sdk",model="gpt-4o-up",user="default-dev"'  # prometheus_client sorts them
    assert (
        'memproxy_tokens_total{client="openai-sdk",kind="input",model="gpt-4o-up",user="default-dev"} 10.0'
        in text
    )
    assert (
        'memproxy_tokens_total{client="openai-sdk",kind="output",model="gpt-4o-up",user="default-dev"} 6.0'
        in text
    )
    assert f"memproxy_cost_usd_total{{{labels}}}" in text
    cost = next(line for line in text.splitlines() if line.startswith("memproxy_cost_usd_total{"))
    assert float(cost.rsplit(" ", 1)[1]) == pytest.approx(2 * GPT_4O_COST)


async def test_a_failing_ledger_never_fails_a_request_and_catches_up(
    app_client: AppClient, gateway_settings: Callable[..., Settings], log_lines: LogLines
) -> None:
    """The database cannot be opened (here: a directory where the file should be; as root, a read-only
    directory would not stop us): requests answer as ever, the failure is counted and logged once, and the
    rows are written once the ledger can be."""
    settings = gateway_settings()
    assert settings.gateway.state_dir is not None
    blocker = settings.gateway.state_dir / ledger.FILE_NAME
    blocker.mkdir(parents=True)
    client = await app_client(settings)
    app = client.server.app
    assert app is not None
    for _ in range(3):
        started = time.monotonic()
        response = await client.post("/v1/chat/completions", json={"model": "gpt-up", "messages": MESSAGES})
        assert response.status == 200
        assert time.monotonic() - started < 2
        await app[LEDGER].flush()
    metrics = await (await client.get("/metrics")).text()
    # Each failed write counts (the writer's own flushes may have tried too, each second).
    failed = next(
        line for line in metrics.splitlines() if line.startswith("memproxy_ledger_write_errors_total")
    )
    assert float(failed.rsplit(" ", 1)[1]) >= 3
    assert len(log_lines.named("ledger_write_failed")) == 1
    blocker.rmdir()
    await app[LEDGER].flush()
    assert len(ledger.read(blocker, 0)) == 3
    assert len(log_lines.named("ledger_write_recovered")) == 1


def a_row(ts: float) -> ledger.Row:
    return ledger.Row(
        ts,
        "r",
        "/v1/chat/completions",
        "u",
        "other",
        "m",
        "openai",
        200,
        1,
        False,
        10.0,
        5.0,
        1,
        1,
        None,
        None,
        None,
        None,
    )


async def test_rows_past_retention_are_deleted(tmp_path: Path) -> None:
    path = tmp_path / ledger.FILE_NAME
    now = time.time()

    def row(age_days: float) -> ledger.Row:
        return a_row(now - age_days * 86400)

    first = ledger.Ledger(path, 30, Metrics())
    for age in (40, 31, 29, 1):
        first.record(row(age))
    first._pruned_at = time.time()  # this one writes without pruning, as within a day of its start
    await first.aclose()
    assert len(ledger.read(path, 0)) == 4
    second = ledger.Ledger(path, 30, Metrics())  # a restart prunes at once
    await second.aclose()
    assert sorted(round((now - r.ts) / 86400) for r in ledger.read(path, 0)) == [1, 29]


async def test_a_batch_goes_in_statements_within_sqlites_limit_and_a_full_one_wakes_the_writer(
    tmp_path: Path,
) -> None:
    path = tmp_path / ledger.FILE_NAME
    book = ledger.Ledger(path, 90, Metrics())
    now = time.time()  # rows of today: none is past retention
    book.record(a_row(now + 1))
    await book.flush()
    assert book._connection is not None
    # Room for two rows a statement: five rows take three INSERTs, in one transaction.
    book._connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 2 * len(ledger.COLUMNS) + 1)
    for second in range(2, 7):
        book.record(a_row(now + second))
    await book.flush()
    assert [row.ts - now for row in ledger.read(path, 0)] == [1, 2, 3, 4, 5, 6]
    # A busy gateway does not wait for the interval: the FLUSH_ROWS-th row wakes the writer.
    for _ in range(ledger.FLUSH_ROWS - 1):
        book.record(a_row(now + 7))
    assert not book._wake.is_set()
    book.record(a_row(now + 7))
    assert book._wake.is_set()
    await book.aclose()
    assert len(ledger.read(path, 0)) == 6 + ledger.FLUSH_ROWS


async def test_rows_are_made_with_the_batch_in_slices_and_a_failing_one_never_stops_the_writer(
    tmp_path: Path, log_lines: LogLines, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A request leaves an entry; its row (usage read, priced, counted) is made at the flush, a slice at a
    time between turns of the event loop. A row that cannot be made is dropped and counted; the rest go in."""
    metrics = Metrics()
    book = ledger.Ledger(tmp_path / ledger.FILE_NAME, 90, metrics)
    now = time.time()

    def broken(outcome: Outcome) -> float | None:
        raise RuntimeError("a bug")

    def entry(number: int, price: Callable[[Outcome], float | None]) -> ledger.Entry:
        outcome = Outcome(
            request_id=f"r{number}",
            route="/v1/chat/completions",
            model="m",
            user_id="u",
            metered=True,
            litellm_model="openai/m",
            provider="openai",
        )
        outcome.later = read_later(openai_chat.usage, {"prompt_tokens": number, "completion_tokens": 1})
        return ledger.Entry(now + number, 0.01, 200, "OpenAI/Python 1.0", outcome, price)

    def refused(outcome: Outcome) -> float | None:
        return -1.0  # a price prometheus_client's counter refuses (it only goes up)

    count = ledger.SETTLE_SLICE + 5
    prices = {3: broken, 4: refused}
    for number in range(count):
        book.take(entry(number, prices.get(number, lambda outcome: 0.5)))
    slices = 0
    real_sleep = asyncio.sleep

    async def counted(delay: float) -> None:
        nonlocal slices
        slices += 1
        await real_sleep(delay)

    with monkeypatch.context() as patch:
        patch.setattr(asyncio, "sleep", counted)
        await book.flush()
    assert slices >= 2  # the event loop had its turn between the slices
    rows = ledger.read(book.path, 0)
    assert [row.input_tokens for row in rows] == [number for number in range(count) if number != 3]
    assert {(row.client, row.output_tokens, row.cost_usd) for row in rows if row.input_tokens != 4} == {
        ("openai-sdk", 1, 0.5)
    }
    assert metrics.ledger_dropped._value.get() == 1
    assert [line["error"] for line in log_lines.named("ledger_row_failed")] == ["RuntimeError"]
    assert [line["error"] for line in log_lines.named("ledger_metrics_failed")] == ["ValueError"]
    # The writer goes on: what comes next is written too.
    book.take(entry(count, lambda outcome: 0.5))
    await book.aclose()
    assert ledger.read(book.path, 0)[-1].input_tokens == count


async def test_the_ledger_survives_a_restart_and_a_reload(
    app_client: AppClient, gateway_settings: Callable[..., Settings]
) -> None:
    settings = gateway_settings()
    client = await app_client(settings)
    assert (
        await client.post("/v1/chat/completions", json={"model": "gpt-up", "messages": MESSAGES})
    ).status == 200
    app = client.server.app
    assert app is not None
    assert app[RUNTIMES].reload(app)
    assert (
        await client.post("/v1/chat/completions", json={"model": "gpt-up", "messages": MESSAGES})
    ).status == 200
    await client.close()
    again = await app_client(settings)
    assert (
        await again.post("/v1/chat/completions", json={"model": "gpt-up", "messages": MESSAGES})
    ).status == 200
    assert len(await rows_of(again)) == 3


def test_memproxy_usage_sums_the_ledger(
    make_settings: Callable[..., Settings], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = tmp_path / "state"
    now = time.time()
    book = ledger.Ledger(state / ledger.FILE_NAME, 90, Metrics())
    specs = [
        ("claude-cli", "claude-sonnet", 200, 100, 10, 0.01, 1000.0),
        ("claude-cli", "claude-sonnet", 200, 200, 20, 0.02, 3000.0),
        ("PyCharm", "gpt-4o", 200, 50, 5, None, 500.0),
        ("PyCharm", "gpt-4o", 502, None, None, None, 100.0),
    ]
    for client_family, model, status, tokens_in, tokens_out, cost, latency in specs:
        book.record(
            ledger.Row(
                now - 60,
                "r",
                "/v1/messages",
                "alice",
                client_family,
                model,
                "anthropic",
                status,
                1,
                False,
                latency,
                latency,
                tokens_in,
                tokens_out,
                None,
                None,
                None,
                cost,
            )
        )
    asyncio.run(book.aclose())
    config = make_settings().source
    assert (
        cli.main(
            [
                "usage",
                "--config",
                str(config),
                "--state-dir",
                str(state),
                "--by",
                "client",
                "--format",
                "json",
            ]
        )
        == 0
    )
    groups = {group["key"]: group for group in json.loads(capsys.readouterr().out)["groups"]}
    assert groups["claude-cli"]["requests"] == 2
    assert groups["claude-cli"]["input_tokens"] == 300
    assert groups["claude-cli"]["cost_usd"] == pytest.approx(0.03)
    assert groups["claude-cli"]["latency_p50_ms"] == 2000.0
    assert groups["PyCharm"]["error_rate"] == 0.5
    assert groups["PyCharm"]["cost_usd"] is None
    assert cli.main(["usage", "--config", str(config), "--state-dir", str(state), "--by", "model"]) == 0
    table = capsys.readouterr().out
    assert "claude-sonnet" in table
    assert "$0.0300" in table
    assert cli.main(["usage", "--config", str(config), "--state-dir", str(state), "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("day,requests,error_rate")
    assert len(lines) == 2
    assert (
        cli.main(["usage", "--config", str(config), "--state-dir", str(state), "--since", "yesterday"]) == 2
    )


def test_since_reads_relative_and_dates() -> None:
    now = 1_800_000_000.0
    assert report.since_epoch("7d", now) == now - 7 * 86400
    assert report.since_epoch("12h", now) == now - 12 * 3600
    assert report.since_epoch("2026-11-01", now) == 1793491200.0
    with pytest.raises(ValueError, match="--since"):
        report.since_epoch("last week", now)


async def test_a_relative_state_dir_is_read_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--state-dir ./state or a relative memproxy.state_dir: the read-only URI needs an absolute path."""
    monkeypatch.chdir(tmp_path)
    path = Path("state") / ledger.FILE_NAME
    book = ledger.Ledger(path, 90, Metrics())
    book.record(
        ledger.Row(
            time.time(),
            "r",
            "/v1/messages",
            "u",
            "other",
            "m",
            "anthropic",
            200,
            1,
            False,
            1.0,
            1.0,
            1,
            1,
            None,
            None,
            None,
            None,
        )
    )
    await book.aclose()
    assert len(ledger.read(path, 0)) == 1
    assert ledger.overview(path, 0, 10)["error"] is None


async def test_the_ledger_can_be_turned_off(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """memproxy.usage_ledger: false: no file, no row, no usage asked of an upstream for it, no token
    metrics; /ui and `memproxy usage` say it is off; the answers are the same."""
    fake, _ = upstream
    settings = gateway_settings(usage_ledger=False)
    client = await app_client(settings)
    async with openai.AsyncOpenAI(
        base_url=str(client.make_url("/v1")), api_key="unused", max_retries=0
    ) as sdk:
        chunks = [
            c
            async for c in await sdk.chat.completions.create(
                model="gpt-4o-up", messages=MESSAGES, stream=True
            )
        ]  # type: ignore[arg-type]
        assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hello from upstream"
        assert "stream_options" not in fake.seen[-1].body  # nobody asked for usage
        completion = await sdk.chat.completions.create(model="gpt-4o-up", messages=MESSAGES)  # type: ignore[arg-type]
        assert completion.usage is not None
        assert completion.usage.prompt_tokens == 5
    claude = anthropic.AsyncAnthropic(base_url=str(client.make_url("")), api_key="unused", max_retries=0)
    async with claude, claude.messages.stream(model="claude-up", max_tokens=64, messages=MESSAGES) as events:  # type: ignore[arg-type]
        assert await events.get_final_text() == "Hello from upstream"
    app = client.server.app
    assert app is not None
    assert LEDGER not in app
    assert settings.gateway.state_dir is not None
    assert not (settings.gateway.state_dir / ledger.FILE_NAME).exists()
    metrics = await (await client.get("/metrics")).text()
    assert "memproxy_tokens_total{" not in metrics
    assert 'memproxy_requests_total{model="gpt-4o-up"' in metrics  # requests are still counted
    data = await (await client.get("/ui/data")).json()
    assert data["usage"]["error"] == "the usage ledger is off (memproxy.usage_ledger: false)"
    assert data["latest"] == []
    assert data["state"]["models"]["available"]
    state = str(settings.gateway.state_dir)
    assert cli.main(["usage", "--config", str(settings.source), "--state-dir", state]) == 0
    captured = capsys.readouterr()
    assert "turns the ledger off (memproxy.usage_ledger: false)" in captured.err
    assert "no requests in the ledger" in captured.out


def test_memproxy_usage_never_imports_litellm() -> None:
    """Reading the ledger needs nothing of LiteLLM (a 4 s import that would look for its price map)."""
    code = (
        "import sys\n"
        "from aiohttp_memproxy import cli, statedir\n"
        "from aiohttp_memproxy.usage import ledger, report\n"
        "assert 'litellm' not in sys.modules, 'litellm was imported'\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "LITELLM_LOCAL_MODEL_COST_MAP"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
