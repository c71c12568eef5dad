"""GET /metrics parses as Prometheus text and its counters match the requests sent."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from aiohttp_memproxy.config.settings import Settings
from tests.conftest import MASTER_KEY, MESSAGES, AppClient, base_config, post
from tests.fake_upstream import FakeUpstream


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_match_requests(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    fake.gate = True
    client = await app_client(gateway_settings())
    for _ in range(2):
        assert (await post(client, {"model": "gpt-up", "messages": MESSAGES})).status == 200
    streamed = await post(client, {"model": "gpt-up", "messages": MESSAGES, "stream": True})
    assert streamed.status == 200
    # Read to its end, as a client does: its connection then carries the next request, which the server
    # takes only once this one's handling (and counting) is done. Left unread, /metrics went on a second
    # connection and could be answered before the stream was counted (2 != 3, now and then).
    await streamed.read()
    assert (await post(client, {"model": "no-such", "messages": MESSAGES})).status == 404
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    found = samples(await response.text())
    chat = "/v1/chat/completions"
    assert found[("memproxy_requests_total", (("model", "gpt-up"), ("route", chat), ("status", "200")))] == 3
    assert found[("memproxy_requests_total", (("model", ""), ("route", chat), ("status", "404")))] == 1
    assert found[("memproxy_request_duration_seconds_count", (("route", chat),))] == 4
    assert found[("memproxy_stream_first_byte_seconds_count", (("route", chat),))] == 1
    assert found[("memproxy_upstream_attempts_total", ())] == 4  # 3 requests + the one challenged
    assert found[("memproxy_upstream_retries_total", (("status", "503"),))] == 1
    assert found[("memproxy_cloudflare_challenges_total", ())] == 1
    assert found[("memproxy_cookies", ())] == 2
    assert found[("memproxy_in_flight_streams", ())] == 0
    assert found[("memproxy_in_flight_requests", ())] == 1  # this /metrics request itself
    text = await response.text()
    assert "Hello" not in text  # no user content anywhere


async def test_metrics_need_no_key(app_client: AppClient, make_settings: Callable[..., Settings]) -> None:
    client = await app_client(make_settings(base_config(general_settings={"master_key": MASTER_KEY})))
    response = await client.get("/metrics")
    assert response.status == 200
    assert MASTER_KEY not in await response.text()
