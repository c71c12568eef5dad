"""make bench and make load: their own arithmetic, parsing and reporting, and the fake upstream's behaviours
(fast, no timings)."""

from __future__ import annotations

import collections
import json
import math
from typing import Any

import aiohttp
import pytest

from tests.bench import (
    DIALECTS,
    LEDGER_TURNS,
    Target,
    difference,
    goals,
    mean,
    overall,
    overhead,
    percentile,
    pooled_sd,
    recording_table,
    rotated,
    short_table,
    summary,
    t_975,
    table,
)
from tests.fake_upstream import CLEARANCE, FakeUpstream, Scripted
from tests.litellm_check import lock_entries, locked_without_litellm, pytest_summary
from tests.load import classify


def test_percentile_interpolates_like_numpy() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert percentile(values, 50) == 3.0
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    assert summary([1.0, 2.0, 3.0, 4.0]) == {"p50": 2.5, "p95": 3.85, "p99": 3.97}
    assert overhead({"p50": 3.0, "p95": 5.5}, {"p50": 1.0, "p95": 2.0}) == {"p50": 2.0, "p95": 3.5}


def test_recording_cost_is_a_difference_of_gateways_with_its_interval() -> None:
    assert mean([1.0, 2.0, 3.0, 4.0]) == 2.5
    assert math.isnan(mean([]))
    # Student's t from the tables, 97.5 %.
    for df, table_t in ((3, 3.182), (4, 2.776), (6, 2.447), (10, 2.228), (30, 2.042)):
        assert t_975(df) == pytest.approx(table_t, abs=0.03)
    # Welch: equal sizes and spreads give df = 2(n - 1); here n = 4, each variance 5/3.
    delta, half = difference([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0])
    assert delta == 1.0
    assert half == pytest.approx(t_975(6) * math.sqrt(2 * (5 / 3) / 4))
    assert difference([1.0, 1.0], [0.5, 0.5]) == (0.5, 0.0)
    assert math.isnan(difference([1.0], [0.5, 0.7])[1])
    assert all(math.isnan(value) for value in difference([], [1.0]))
    assert pooled_sd([[1.0, 3.0], [2.0, 4.0], [9.0]]) == pytest.approx(math.sqrt(2.0))
    assert math.isnan(pooled_sd([[1.0], [2.0]]))
    row: dict[str, Any] = {
        "p50_ms": {"on": 5.0, "off": 4.9},
        "p50_on_minus_off": {"mean": 0.1, "interval": 0.3},
        "success": {"on": 100.0, "off": 100.0},
        "cpu_ms": {"on": 8.12, "off": 8.0},
        "on_minus_off": {"mean": 0.12, "interval": 0.5},
        "alike_sd": 0.21,
        # Gateways on at 1.02 and 1.04 of the off arm's mean, off at 0.99 and 1.01.
        "per_gateway": {"ledger-on-1": 8.16, "ledger-off-1": 7.92, "ledger-on-2": 8.32, "ledger-off-2": 8.08},
        "per_gateway_p50": {"ledger-on-1": 5.0, "ledger-off-1": 5.0, "ledger-on-2": 5.0, "ledger-off-2": 5.0},
        "turns_dropped": 2,  # a thread of one gateway ended in them
    }
    text = recording_table({"openai plain": row})
    line, total = text.splitlines()[-2:]
    assert line.split()[-1] == str(LEDGER_TURNS - 2)
    assert line.startswith("openai plain")
    assert "8.00" in line
    assert "+0.12±0.50" in line
    assert "+1.5%" in line
    assert "4.90" in line
    assert "+0.10±0.30" in line
    assert "+2.0%" in line
    assert "0.21" in line
    # All rows: the mean ratio on (1.03) less off (1.00), Welch over the gateways; the same p50s, 0 ± 0.
    cpu = overall({"openai plain": row})
    assert cpu["mean_pct"] == pytest.approx(3.0)
    _, half = difference([1.02, 1.04], [0.99, 1.01])
    assert cpu["interval_pct"] == pytest.approx(100 * half, abs=0.01)
    assert overall({"openai plain": row}, "per_gateway_p50") == {"mean_pct": 0.0, "interval_pct": 0.0}
    assert total.split()[:3] == ["all", "rows", f"+3.00%±{cpu['interval_pct']:.2f}"]
    # A gateway with no figure in a row (every turn dropped) is left out of that row, not of all rows.
    gap = {**row, "per_gateway": {**row["per_gateway"], "ledger-on-1": math.nan}}
    assert overall({"openai plain": row, "openai stream": gap}) == cpu


def test_each_target_goes_first_in_its_turn() -> None:
    a, b, c = (Target(name, "http://127.0.0.1:1") for name in "abc")
    assert [[t.name for t in rotated([a, b, c], turn)] for turn in range(4)] == [
        ["a", "b", "c"],
        ["b", "c", "a"],
        ["c", "a", "b"],
        ["a", "b", "c"],
    ]


def dialect_row(overhead_p50: float, rps: float) -> dict[str, Any]:
    latency = {"p50": 1.0, "p95": 2.0, "p99": 3.0}
    row: dict[str, Any] = {
        "plain_ms": latency,
        "stream_ms": latency,
        "first_byte_ms": latency,
        "overhead_plain_ms": {**latency, "p50": overhead_p50},
        "overhead_first_byte_ms": {**latency, "p50": overhead_p50},
        "streams_c200": {"rps": 100.0, "success": 100.0, "n": 200},
    }
    for level in (1, 10, 50, 200):
        row[f"c{level}"] = {"rps": rps, "success": 100.0, "n": 100}
    return row


def target(name: str, overhead_p50: float, rps: float, rss: tuple[float, float] = (150, 155)) -> Target:
    t = Target(name, "http://127.0.0.1:1", pid=1, start_to_ready_s=3.0)
    t.results = {dialect: dialect_row(overhead_p50, rps) for dialect in DIALECTS}
    t.results.update({"rss_after_warmup_mb": rss[0], "rss_after_10k_mb": rss[1], "requests_sent": 10_000})
    return t


def test_goals_with_and_without_the_comparison() -> None:
    ours = target("memproxy", 2.0, 300.0)
    alone = goals(ours, None)
    assert alone["RSS <= 250 MB after 10,000 requests"] is True
    assert alone["RSS growth < 10 MB after warm-up"] is True
    assert alone["openai: overhead p50 <= 0.5x LiteLLM's (plain)"] is None
    compared = goals(ours, target("litellm-proxy", 14.0, 77.0))
    assert compared["openai: overhead p50 <= 0.5x LiteLLM's (plain)"] is True
    assert compared["anthropic: req/s at c=50 >= 2x LiteLLM's, 100 % success"] is True
    slow = goals(target("memproxy", 9.0, 100.0, rss=(150, 170)), target("litellm-proxy", 14.0, 77.0))
    assert slow["openai: overhead p50 <= 0.5x LiteLLM's (plain)"] is False
    assert slow["openai: req/s at c=50 >= 2x LiteLLM's, 100 % success"] is False
    assert slow["RSS growth < 10 MB after warm-up"] is False


def test_table_shows_every_target_and_goal() -> None:
    ours, theirs = target("memproxy", 2.0, 300.0), target("litellm-proxy", 14.0, 77.0)
    text = table([ours, theirs], goals(ours, theirs))
    assert "== openai ==" in text
    assert "== anthropic ==" in text
    assert "memproxy" in text
    assert "litellm-proxy" in text
    assert "req/s c=50 (success %)" in text
    assert "[x] start to ready <= 5 s" in text


async def test_fake_upstream_behaviours(aiohttp_server: Any) -> None:
    fake = FakeUpstream(gate=True, reply=["a", "b", "c", "d"])
    server = await aiohttp_server(fake.app())
    url = str(server.make_url("")).rstrip("/")
    jar = aiohttp.CookieJar(unsafe=True)
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession(cookie_jar=jar) as session:
        async with session.post(f"{url}/v1/chat/completions", json=chat) as gated:
            assert gated.status == 503
            assert gated.headers["Server"] == "cloudflare"
            assert "1200" in await gated.text()
        assert CLEARANCE in {cookie.key for cookie in jar}
        async with session.post(f"{url}/v1/chat/completions", json={**chat, "stream": True}) as streamed:
            frames = [f for f in (await streamed.text()).split("\n\n") if f.startswith("data: {")]
        contents = [json.loads(f[6:])["choices"][0]["delta"].get("content") for f in frames]
        assert [c for c in contents if c] == ["a", "b", "c", "d"]
        fake.script = [Scripted(429, {"error": {"message": "x"}}, {"Retry-After": "3"})]
        async with session.post(f"{url}/v1/messages", json=chat) as limited:
            assert (limited.status, limited.headers["Retry-After"]) == (429, "3")
        async with session.post(f"{url}/v1/messages/count_tokens", json=chat) as counted:
            assert (await counted.json())["input_tokens"] >= 40
        fake.cut_after = 2
        async with session.post(f"{url}/v1/messages", json={**chat, "stream": True}) as cut:
            with pytest.raises(aiohttp.ClientPayloadError):
                await cut.read()
    assert fake.challenges == 1
    assert fake.with_cookie == [False, True, True, True, True]
    fake.record = False
    async with (
        aiohttp.ClientSession(cookie_jar=jar) as session,
        session.post(f"{url}/v1/messages", json={**chat, "stream": False}) as quiet,
    ):
        assert quiet.status == 200
    assert len(fake.seen) == 5  # not recorded


def test_load_classifies_what_a_client_saw() -> None:
    done = 'data: {"choices": []}\n\ndata: [DONE]\n\n'
    assert classify(200, done, stream=True) == "ok"
    assert classify(200, "event: message_stop\ndata: {}\n\n", stream=True) == "ok"
    completed = 'event: response.completed\ndata: {"type": "response.completed"}\n\n'
    assert classify(200, completed, stream=True) == "ok"
    responses_error = 'event: error\ndata: {"type": "error", "code": "upstream_unreachable"}\n\n'
    assert classify(200, responses_error, stream=True) == "stream_error"
    assert classify(200, '{"id": "x"}', stream=False) == "ok"
    assert classify(429, '{"error": {}}', stream=False) == "http_429"
    assert classify(503, "", stream=True) == "http_503"
    assert (
        classify(200, 'data: {"a": 1}\n\ndata: {"error": {"code": "x"}}\n\n', stream=True) == "stream_error"
    )
    assert classify(200, 'event: error\ndata: {"type": "error", "error": {}}\n\n', stream=True) == (
        "stream_error"
    )
    assert classify(200, "", stream=True) == "stream_error"
    assert classify(200, 'data: {"a": 1}\n\n', stream=True) == "stream_truncated"


async def test_fake_upstream_chaos_throttles_challenges_and_cuts(aiohttp_server: Any) -> None:
    fake = FakeUpstream(chaos=1.0, record=False)
    server = await aiohttp_server(fake.app())
    url = str(server.make_url("")).rstrip("/")
    chat = {"model": "m", "messages": [{"role": "user", "content": "x"}], "stream": True}
    seen: collections.Counter[str] = collections.Counter()
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:
        for _ in range(60):
            async with session.post(f"{url}/v1/chat/completions", json=chat) as response:
                if response.status == 429:
                    assert response.headers["Retry-After"] == "1"
                    seen["throttled"] += 1
                elif response.status == 503:
                    assert response.headers["Server"] == "cloudflare"
                    assert "Set-Cookie" in response.headers
                    seen["challenged"] += 1
                else:
                    try:
                        await response.read()
                        seen["whole"] += 1
                    except aiohttp.ClientPayloadError:
                        seen["cut"] += 1
    # chaos=1: a quarter throttled, half challenged, and of the streams that get through, a quarter cut.
    assert set(seen) == {"throttled", "challenged", "cut", "whole"}
    assert seen["challenged"] > seen["throttled"]
    calm = FakeUpstream(chaos=0.0, record=False)
    server = await aiohttp_server(calm.app())
    async with aiohttp.ClientSession() as session:
        for _ in range(20):
            async with session.post(str(server.make_url("/v1/chat/completions")), json=chat) as response:
                assert response.status == 200
                assert (await response.text()).endswith("data: [DONE]\n\n")


def test_short_table_names_each_gateway_and_dialect() -> None:
    rows = {"overhead_plain_ms": {"p50": 4.25}, "overhead_first_byte_ms": {"p50": 6.5}}
    proxies = [
        Target(name, "http://x", start_to_ready_s=3.5, results=dict.fromkeys(DIALECTS, rows))
        for name in ("memproxy", "pinned")
    ]
    lines = short_table(proxies).splitlines()
    assert lines[0].split()[-2:] == ["memproxy", "pinned"]
    assert [line.split()[0] for line in lines[1:-1]] == list(DIALECTS)
    assert lines[1].split()[1:] == ["4.2", "/", "6.5", "4.2", "/", "6.5"]
    assert lines[-1].split()[-2:] == ["3.50", "3.50"]


def test_litellm_check_installs_the_dev_lock_but_litellm_with_every_hash(tmp_path: Any) -> None:
    entries = lock_entries()
    names = [name for name, _, _ in entries if name is not None]
    assert "litellm" in names
    assert "aiohttp" in names
    target = tmp_path / "locked.txt"
    locked_without_litellm(target)
    kept = target.read_text()
    assert "\nlitellm==" not in kept
    for name, version, text in entries:
        if name is not None and name != "litellm":
            assert text in kept
            assert f"=={version}" in text
            assert "--hash=sha256:" in text


def test_litellm_check_reads_pytests_last_summary() -> None:
    output = "....\nFAILED tests/test_x.py::test_y - boom\n==== 1 failed, 41 passed, 2 skipped in 9.1s ====\n"
    assert pytest_summary(output) == "1 failed, 41 passed, 2 skipped in 9.1s"
    assert pytest_summary("") == "no summary (see the log)"
