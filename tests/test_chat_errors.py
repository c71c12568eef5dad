"""Every error row of /v1/chat/completions, in OpenAI shape with its status; retries; streams cut or left."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Callable
from typing import Any

import pytest

from aiohttp_memproxy.config.settings import Settings
from tests.conftest import MESSAGES, SM_KEY, UPSTREAM_KEY, AppClient, LogLines, post, sse_frames
from tests.fake_upstream import FakeUpstream, Scripted

CHAT = {"model": "gpt-up", "messages": MESSAGES}


def assert_openai_error(body: dict[str, Any], error_type: str | None = None) -> dict[str, Any]:
    assert set(body) == {"error"}
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if error_type:
        assert error["type"] == error_type
    for secret in (UPSTREAM_KEY, SM_KEY, "http://", "127.0.0.1", "Traceback", "litellm."):
        assert secret not in error["message"]
    return error


@pytest.mark.parametrize(
    ("raw", "status", "fragment"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "must be a JSON object"),
        (b"{}", 400, "model is required"),
        (json.dumps({"model": 3, "messages": MESSAGES}).encode(), 400, "model must be a non-empty string"),
        (json.dumps({"model": "gpt-up"}).encode(), 400, "messages is required"),
        (
            json.dumps({"model": "gpt-up", "messages": "hi"}).encode(),
            400,
            "messages must be a non-empty array",
        ),
        (json.dumps({"model": "gpt-9", "messages": MESSAGES}).encode(), 404, "'gpt-9' is not configured"),
        (json.dumps({"model": "off", "messages": MESSAGES}).encode(), 503, "TEST_UNSET_OFF"),
        (
            json.dumps({"model": "gpt-up", "messages": MESSAGES, "x": "a" * (1024 * 1024)}).encode(),
            413,
            "1 MiB",
        ),
    ],
)
async def test_request_errors(
    app_client: AppClient, gateway_settings: Callable[..., Settings], raw: bytes, status: int, fragment: str
) -> None:
    client = await app_client(gateway_settings())
    response = await client.post(
        "/v1/chat/completions", data=io.BytesIO(raw), headers={"Content-Type": "application/json"}
    )
    assert response.status == status
    error = assert_openai_error(await response.json())
    assert fragment in error["message"]


@pytest.mark.parametrize(
    ("scripted", "status", "error_type", "code"),
    [
        (
            Scripted(401, {"error": {"message": f"bad key {UPSTREAM_KEY}", "type": "invalid_request_error"}}),
            401,
            "authentication_error",
            "upstream_authentication",
        ),
        (Scripted(403, {"error": {"message": "no"}}), 403, "permission_error", "permission_denied"),
        (
            Scripted(400, {"error": {"message": "bad param at http://127.0.0.1/x"}}),
            400,
            "invalid_request_error",
            "invalid_request",
        ),
        (
            Scripted(
                400,
                {
                    "error": {
                        "message": "This model's maximum context length is 8192 tokens. However, "
                        "your messages resulted in 9000 tokens.",
                        "code": "context_length_exceeded",
                    }
                },
            ),
            400,
            "invalid_request_error",
            "context_length_exceeded",
        ),
        (
            Scripted(429, {"error": {"message": "slow down"}}, {"Retry-After": "120"}),
            429,
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        (Scripted(500, {"error": {"message": "boom"}}), 500, "api_error", "upstream_error"),
        (Scripted(502, "<html>bad gateway</html>"), 502, "api_error", "upstream_error"),
    ],
)
async def test_upstream_errors_map_to_statuses(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    scripted: Scripted,
    status: int,
    error_type: str,
    code: str | None,
    log_lines: LogLines,
) -> None:
    fake, _ = upstream
    fake.script = [scripted]
    client = await app_client(gateway_settings())
    response = await post(client, CHAT)
    assert response.status == status, await response.text()
    error = assert_openai_error(await response.json(), error_type)
    if code:
        assert error["code"] == code
    assert UPSTREAM_KEY not in log_lines.text
    assert log_lines.named("request")[-1]["status"] == status
    if status == 429:
        # Retry-After beyond retry_after_max_s: not retried, passed on to the client.
        assert response.headers["Retry-After"] == "120"
        assert len(fake.seen) == 1


async def test_upstream_503_after_retries(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    fake.script = [Scripted(503, {"error": {"message": "down"}}) for _ in range(3)]
    client = await app_client(gateway_settings())
    response = await post(client, CHAT)
    assert response.status == 503
    assert_openai_error(await response.json(), "api_error")
    assert len(fake.seen) == 3  # the first try and retry_attempts (2) more


async def test_unreachable_upstream_is_502(
    app_client: AppClient, gateway_settings: Callable[..., Settings]
) -> None:
    client = await app_client(gateway_settings())
    for stream in (False, True):
        response = await post(client, {"model": "nowhere", "messages": MESSAGES, "stream": stream})
        assert response.status == 502
        assert_openai_error(await response.json(), "api_error")


async def test_upstream_timeout_is_504(
    app_client: AppClient, gateway_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    fake, _ = upstream
    fake.delay_s = 2
    client = await app_client(gateway_settings(read_timeout_s=0.2))
    response = await post(client, CHAT)
    assert response.status == 504
    assert_openai_error(await response.json())


async def test_retry_after_is_honoured(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    log_lines: LogLines,
) -> None:
    fake, _ = upstream
    fake.script = [Scripted(429, {"error": {"message": "wait"}}, {"Retry-After": "1"})]
    client = await app_client(gateway_settings())
    response = await post(client, CHAT)
    assert response.status == 200
    assert len(fake.seen) == 2
    assert fake.seen[1].at - fake.seen[0].at >= 0.9  # waited as told, not the 0 s base delay
    assert log_lines.named("request")[-1]["attempts"] == 2


@pytest.mark.parametrize("model", ["gpt-up", "claude-up", "vllm-up"])
async def test_stream_cut_short_ends_with_error_frame(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    model: str,
) -> None:
    fake, _ = upstream
    fake.cut_after = 3
    client = await app_client(gateway_settings())
    response = await post(client, {"model": model, "messages": MESSAGES, "stream": True})
    assert response.status == 200
    frames = sse_frames(await response.text())
    assert "[DONE]" not in frames
    error = assert_openai_error(json.loads(frames[-1]))
    assert error["code"] == "upstream_unreachable"
    assert len(fake.seen) == 1  # never retried once bytes went to the client


async def test_client_disconnect_releases_the_upstream(
    app_client: AppClient,
    gateway_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    log_lines: LogLines,
) -> None:
    fake, _ = upstream
    fake.chunk_delay_s = 0.3
    client = await app_client(gateway_settings())
    response = await post(client, {"model": "gpt-up", "messages": MESSAGES, "stream": True})
    assert response.status == 200
    await response.content.readline()
    response.close()  # the client leaves mid-stream
    await asyncio.wait_for(fake.cancelled.wait(), timeout=10)
    for _ in range(50):
        if log_lines.named("client_disconnected"):
            break
        await asyncio.sleep(0.1)
    assert log_lines.named("client_disconnected")
    assert not [line for line in log_lines.events if line.get("level") == "error"]
