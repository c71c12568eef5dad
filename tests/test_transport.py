"""The httpx transport over our aiohttp session, driven directly with httpx as LiteLLM drives it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import httpx
import pytest

from aiohttp_memproxy.outbound.egress import Egress
from aiohttp_memproxy.outbound.transport import AiohttpTransport, RetryPolicy
from aiohttp_memproxy.usage.metrics import Metrics
from tests.fake_upstream import FakeUpstream

STREAM_BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True}


@pytest.fixture
async def one_connection() -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client over our transport, on a session that may hold one upstream connection at a time:
    a connection that is not given back makes the next request wait for ever."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as session:
        transport = AiohttpTransport(session, RetryPolicy(), Metrics(), Egress())
        async with httpx.AsyncClient(transport=transport) as client:
            yield client


async def test_a_body_cut_short_raises_and_gives_the_connection_back(
    upstream: tuple[FakeUpstream, str], one_connection: httpx.AsyncClient
) -> None:
    fake, base = upstream
    fake.cut_after = 2
    request = one_connection.build_request("POST", f"{base}/v1/chat/completions", json=STREAM_BODY)
    response = await one_connection.send(request, stream=True)
    assert response.status_code == 200
    with pytest.raises(httpx.RemoteProtocolError):
        async for _ in response.aiter_bytes():
            pass
    # Deliberately no response.aclose(): LiteLLM does not always close a stream that raised (CI caught an
    # unclosed aiohttp connection there). The transport must release it on its own.
    fake.cut_after = None
    again = await asyncio.wait_for(
        one_connection.post(f"{base}/v1/chat/completions", json={**STREAM_BODY, "stream": False}), timeout=10
    )
    assert again.status_code == 200
    assert again.json()["choices"][0]["message"]["content"]


async def test_a_stream_left_early_gives_the_connection_back(
    upstream: tuple[FakeUpstream, str], one_connection: httpx.AsyncClient
) -> None:
    fake, base = upstream
    fake.chunk_delay_s = 0.05
    fake.reply = [f"tok{i} " for i in range(1000)]  # still streaming when the consumer leaves
    request = one_connection.build_request("POST", f"{base}/v1/chat/completions", json=STREAM_BODY)
    response = await one_connection.send(request, stream=True)
    chunks = response.aiter_raw()
    assert await chunks.__anext__()
    await chunks.aclose()  # the consumer stops reading, as when the client leaves; no response.aclose()
    fake.chunk_delay_s = 0.0
    again = await asyncio.wait_for(
        one_connection.post(f"{base}/v1/chat/completions", json={**STREAM_BODY, "stream": False}), timeout=10
    )
    assert again.status_code == 200
    assert fake.cancelled.is_set()  # the upstream saw the cancel: the half-read connection was dropped
