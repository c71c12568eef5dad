"""Web pages in a real headless browser (Debian's chromium, driven by Playwright) try what a page can do to a
gateway on 127.0.0.1: a form posted as ``text/plain``, ``fetch`` with ``mode: no-cors``, an image, and DNS
rebinding (a foreign name resolving to 127.0.0.1). The fake upstream must see nothing; the gateway must have
been reached (its refusals are counted), so a browser that blocked the requests itself proves nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from aiohttp_memproxy.config.settings import Settings
from tests.conftest import MASTER_KEY, AppClient, LogLines, base_config, models_at
from tests.fake_upstream import FakeUpstream
from tests.test_ui import CHROMIUM, CHROMIUM_ARGS, needs_chromium

REBINDING_NAME = "attacker.example"
CHAT = {"model": "gpt-up", "messages": [{"role": "user", "content": "spend the users key"}]}
# Chromium's Local Network Access checks would stop a public page's request to 127.0.0.1 before the gateway
# sees it; other browsers have none. Turned off, so that what stops the page is the gateway.
BROWSER_ARGS = [
    *CHROMIUM_ARGS,
    "--no-proxy-server",
    f"--host-resolver-rules=MAP {REBINDING_NAME} 127.0.0.1",
    "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessRespectPreflightResults,"
    "BlockInsecurePrivateNetworkRequests,PrivateNetworkAccessSendPreflights",
]


def attack_page(gateway: str) -> str:
    """A page of another origin: a no-cors fetch of JSON as text/plain to each model route, an image of the
    model list, then (when asked) a form whose text/plain encoding makes a JSON body."""
    form_name = json.dumps({**CHAT, "pad": ""})[:-2]  # ...,"pad":"   then =value"} closes it
    messages = {"model": "claude-up", "max_tokens": 16, "messages": CHAT["messages"]}
    return f"""<!doctype html><html><body>
<form id="form" method="POST" enctype="text/plain" action="{gateway}/v1/chat/completions">
<input type="hidden" name='{form_name}' value='"}}'>
</form>
<img src="{gateway}/v1/models">
<script>
(async () => {{
  const sent = [
    ["/v1/chat/completions", {json.dumps(CHAT)}],
    ["/v1/messages", {json.dumps(messages)}],
    ["/v1/responses", {{"model": "gpt-up", "input": "spend the users key"}}],
  ];
  for (const [path, body] of sent) {{
    await fetch("{gateway}" + path, {{method: "POST", mode: "no-cors", body: JSON.stringify(body)}})
      .catch(() => null);
  }}
  document.title = "sent";
}})();
</script></body></html>"""


def rebinding_page() -> str:
    """Served as http://attacker.example:<the gateway's port>/: once the name resolves to 127.0.0.1, the
    page is same-origin with the gateway and may read what it answers."""
    return f"""<!doctype html><html><body><script>
(async () => {{
  const seen = {{}};
  for (const path of ["/v1/models", "/health", "/metrics", "/ui/data", "/memory-routing/info"]) {{
    try {{ const r = await fetch(path); seen[path] = [r.status, await r.text()]; }}
    catch (e) {{ seen[path] = [0, String(e)]; }}
  }}
  try {{
    const r = await fetch("/v1/chat/completions", {{method: "POST",
      headers: {{"Content-Type": "application/json"}}, body: JSON.stringify({json.dumps(CHAT)})}});
    seen["chat"] = [r.status, await r.text()];
  }} catch (e) {{ seen["chat"] = [0, String(e)]; }}
  window.seen = seen;
  document.title = "read";
}})();
</script></body></html>"""


@pytest.fixture
def browser_settings(
    make_settings: Callable[..., Settings], upstream: tuple[FakeUpstream, str]
) -> Callable[..., Settings]:
    _, url = upstream

    def make(master_key: str | None = None) -> Settings:
        sections: dict[str, Any] = {"model_list": models_at(url)}
        if master_key:
            sections["general_settings"] = {"master_key": master_key}
        return make_settings(base_config(**sections), {"TEST_UNSET_OFF": ""})

    return make


@needs_chromium
async def test_a_page_of_another_origin_reaches_no_upstream(
    app_client: AppClient,
    browser_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    aiohttp_server: Any,
    log_lines: LogLines,
) -> None:
    async_api = pytest.importorskip("playwright.async_api")
    fake, _ = upstream
    client = await app_client(browser_settings())
    gateway = f"http://127.0.0.1:{client.port}"

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=attack_page(gateway), content_type="text/html")

    attacker_app = web.Application()
    attacker_app.router.add_get("/", page)
    attacker: TestServer = await aiohttp_server(attacker_app)

    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            tab = await browser.new_page()
            await tab.goto(f"http://localhost:{attacker.port}/")
            await tab.wait_for_function("document.title === 'sent'")
            async with tab.expect_navigation():
                await tab.evaluate("document.getElementById('form').submit()")
            assert tab.url == f"{gateway}/v1/chat/completions"
            shown = json.loads(await tab.inner_text("body"))
            assert shown["error"]["code"] == "origin_not_allowed"
        finally:
            await browser.close()

    assert fake.seen == []
    refused = [
        (line["route"], line["error_code"]) for line in log_lines.named("request") if line["status"] == 403
    ]
    # The three fetches, the image and the form reached the gateway, and each was refused there.
    assert sorted(refused) == sorted(
        [
            ("/v1/chat/completions", "origin_not_allowed"),
            ("/v1/messages", "origin_not_allowed"),
            ("/v1/responses", "origin_not_allowed"),
            ("/v1/models", "origin_not_allowed"),
            ("/v1/chat/completions", "origin_not_allowed"),
        ]
    )


@needs_chromium
@pytest.mark.parametrize("keyed", [False, True], ids=["no-key", "master-key"])
async def test_dns_rebinding_reads_nothing(
    app_client: AppClient,
    browser_settings: Callable[..., Settings],
    upstream: tuple[FakeUpstream, str],
    keyed: bool,
) -> None:
    async_api = pytest.importorskip("playwright.async_api")
    fake, _ = upstream
    client = await app_client(browser_settings(MASTER_KEY if keyed else None))
    origin = f"http://{REBINDING_NAME}:{client.port}"

    async with async_api.async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
        try:
            tab = await browser.new_page()
            # The attacker's own server answered the first lookup of the name; the page it served is this.
            await tab.route(
                f"{origin}/", lambda route: route.fulfill(body=rebinding_page(), content_type="text/html")
            )
            await tab.goto(f"{origin}/")
            await tab.wait_for_function("document.title === 'read'")
            seen: dict[str, list[Any]] = await tab.evaluate("window.seen")
        finally:
            await browser.close()

    assert seen.keys() == {"/v1/models", "/health", "/metrics", "/ui/data", "/memory-routing/info", "chat"}
    for path, (status, text) in seen.items():
        assert status == 403, (path, status, text)
        assert json.loads(text)["error"]["code"] == "host_not_allowed"
    assert fake.seen == []
