"""/ui in a real headless browser (Debian's chromium, driven by Playwright): the key form, the state, and
charts that hold the numbers the ledger holds. ``make ui-deps`` installs the browser; CI runs it."""

from __future__ import annotations

import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from aiohttp_memproxy.config.settings import Settings
from aiohttp_memproxy.keys import LEDGER
from aiohttp_memproxy.usage import ledger
from tests.conftest import MASTER_KEY, AppClient, base_config, models_at
from tests.fake_upstream import FakeUpstream

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags that keep Chromium off networks it is not asked to reach (this machine has none beyond loopback).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MESSAGES = [{"role": "user", "content": "hi"}]
SCREENSHOTS = (
    Path(os.environ.get("MEMPROXY_SCREENSHOTS", "")) if os.environ.get("MEMPROXY_SCREENSHOTS") else None
)

needs_chromium = pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason="no chromium at /usr/bin/chromium: run `make ui-deps` (Debian's package)",
)


@needs_chromium
async def test_the_status_page_shows_state_and_the_ledgers_numbers(
    app_client: AppClient,
    make_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    tmp_path: Path,
) -> None:
    async_api = pytest.importorskip("playwright.async_api")
    _, url = upstream
    settings = make_settings(
        base_config(model_list=models_at(url), general_settings={"master_key": MASTER_KEY}),
        {"TEST_UNSET_OFF": ""},
    )
    client = await app_client(settings)
    auth = {"Authorization": f"Bearer {MASTER_KEY}"}
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = [
        ("/v1/chat/completions", {"model": "gpt-4o-up", "messages": MESSAGES},
         {"User-Agent": "OpenAIClientImpl/Java"}),
        ("/v1/chat/completions", {"model": "gpt-4o-up", "messages": MESSAGES, "stream": True}, {}),
        ("/v1/messages", {"model": "claude-up", "max_tokens": 32, "messages": MESSAGES},
         {"User-Agent": "claude-cli/2.1.328 (external, sdk-cli)", "anthropic-version": "2023-06-01"}),
        ("/v1/responses", {"model": "gpt-up", "input": "hi"}, {"User-Agent": "codex_exec/0.169.0"}),
    ]  # fmt: skip
    for path, body, headers in requests:
        response = await client.post(path, json=body, headers={**auth, **headers})
        assert response.status == 200
        await response.read()
    app = client.server.app
    assert app is not None
    await app[LEDGER].flush()
    rows = ledger.read(app[LEDGER].path, 0)
    assert len(rows) == len(requests)
    tokens: dict[str, dict[str, int]] = {"client": defaultdict(int), "model": defaultdict(int)}
    cost: dict[str, dict[str, float]] = {"client": defaultdict(float), "model": defaultdict(float)}
    for row in rows:
        for by, key in (("client", row.client), ("model", row.model)):
            tokens[by][key] += (row.input_tokens or 0) + (row.output_tokens or 0)
            if row.cost_usd is not None:
                cost[by][key] += row.cost_usd

    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            # The page works under its own Content-Security-Policy: nothing of it is blocked.
            blocked: list[str] = []
            page.on(
                "console",
                lambda message: blocked.append(message.text) if "Security Policy" in message.text else None,
            )
            await page.goto(str(client.make_url("/ui")))
            await page.wait_for_selector("#login", state="visible")  # a master key is set: the form
            await page.fill("#key", "not-the-key")
            await page.click("button[type=submit]")
            await page.wait_for_function(
                "document.getElementById('error').textContent.includes('not accepted')"
            )
            await page.fill("#key", MASTER_KEY)
            await page.click("button[type=submit]")
            await page.wait_for_selector("#page:not([hidden])")

            models = await page.locator("#models tbody tr").all_inner_texts()
            assert any(line.startswith("gpt-4o-up") and "available" in line for line in models)
            assert any(line.startswith("off") and "TEST_UNSET_OFF not set" in line for line in models)
            assert await page.locator("#config").inner_text() != ""
            for by in ("client", "model"):
                assert await _chart(page, f"#tokens-by-{by}") == dict(tokens[by])
                drawn_cost = await _chart(page, f"#cost-by-{by}")
                assert drawn_cost.keys() == {key for key, value in cost[by].items() if value}
                for key, value in drawn_cost.items():
                    assert value == pytest.approx(cost[by][key])
            assert "claude-cli" in await page.locator("#tokens-by-client .legend").inner_text()
            assert await page.locator("#latest tbody tr").count() == len(requests)
            swatch = page.locator("#tokens-by-client .legend i").first
            assert (
                await swatch.evaluate("node => getComputedStyle(node).backgroundColor") != "rgba(0, 0, 0, 0)"
            )
            assert blocked == []
            shot = (SCREENSHOTS or tmp_path) / "ui.png"
            shot.parent.mkdir(parents=True, exist_ok=True)
            await page.screenshot(path=str(shot), full_page=True)
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        finally:
            await browser.close()


async def _chart(page: Any, selector: str) -> dict[str, float]:
    """The values the chart drew, summed per key (one segment per day and key)."""
    drawn: dict[str, float] = defaultdict(float)
    for segment in await page.locator(f"{selector} rect").all():
        drawn[await segment.get_attribute("data-key")] += float(await segment.get_attribute("data-value"))
    return dict(drawn)


async def test_the_data_needs_the_key_and_the_page_does_not(
    app_client: AppClient, make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> None:
    _, url = upstream
    client = await app_client(
        make_settings(base_config(model_list=models_at(url), general_settings={"master_key": MASTER_KEY}))
    )
    page = await client.get("/ui")
    assert page.status == 200
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    text = await page.text()
    assert "<script>" in text
    assert "http://" not in text.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from elsewhere
    assert (await client.get("/ui/data")).status == 401
    data = await (await client.get("/ui/data", headers={"x-api-key": MASTER_KEY})).json()
    assert data["latest"] == []
    assert data["usage"] == {"days": 14, "by_client": [], "by_model": [], "error": None}
    assert "gpt-up" in data["state"]["models"]["available"]
