"""The dashboard in a real headless Chromium, against a real gateway on a socket and the simulated fleet.

Traffic goes through the official ``openai`` SDK: a routed request (the demo router ``auto``), a failing one
and one whose prompt and metadata carry a ``<script>`` payload. Then the page is driven as an operator
would: sign in, see the figures and charts, open a request. ``SWITCHBOARD_SCREENSHOTS=1`` also writes the
screenshots used in docs/dashboard.md.

Needs the system Chromium (``/usr/bin/chromium``) and ``playwright`` (never its downloaded browsers):
without them the test is skipped, or fails under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from blockbuster import BlockBuster

from switchboard.app import create_app
from switchboard.config.load import parse_config
from switchboard.sim.fleet import DEFAULT_FLEET, demo_router, gateway_config_for_fleet
from switchboard.storage.sqlite import SQLiteRecordWriter
from tests.e2e.servers import GatewayThread, SimThread

KEY = "adm-browser-test-key"
PAYLOAD = "<script>alert(1)</script>"
DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM = os.environ.get("SWITCHBOARD_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

pytestmark = pytest.mark.e2e


# Found at import time, not on the event loop: the import and the lookup read files.
try:
    from playwright import async_api
except ImportError:  # pragma: no cover - depends on the environment
    async_api = None
if async_api is None:
    MISSING: str | None = "playwright is not installed (pip install -e '.[test]')"
elif not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
    MISSING = f"no Chromium at {CHROMIUM} (apt-get install chromium, or set SWITCHBOARD_CHROMIUM)"
else:
    MISSING = None


def _browser_or_skip() -> Any:
    if MISSING is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the dashboard browser test must run in CI: {MISSING}")
        pytest.skip(MISSING)
    return async_api


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayThread]:
    sim = SimThread(DEFAULT_FLEET)
    raw = gateway_config_for_fleet(DEFAULT_FLEET, sim.base_url)
    raw["routers"] = demo_router(DEFAULT_FLEET)
    raw["records"] = {"path": str(tmp_path_factory.mktemp("dash") / "records.db"), "flush_interval": 0.05,
                      "capture_prompts": True}
    raw["resilience"] = {"retries": {"attempts": 1}}
    raw["admin"] = {"key": "env:SWITCHBOARD_ADMIN_KEY"}
    gw = GatewayThread(create_app(parse_config(raw, env={"SWITCHBOARD_ADMIN_KEY": KEY})))
    try:
        yield gw
    finally:
        gw.close()
        sim.close()


def _traffic(gw: GatewayThread) -> dict[str, str]:
    """Requests through the official SDK; returns the request ids by kind, once all are recorded."""
    client = openai.OpenAI(base_url=f"{gw.url}/v1", api_key="sk-test", max_retries=0, timeout=30)
    models = [m.name for m in DEFAULT_FLEET.models if m.kind == "chat"]
    ids: dict[str, str] = {}
    with client:
        for i, model in enumerate(models * 2):
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=[{"role": "user", "content": f"hello number {i}"}])
            ids[f"plain{i}"] = raw.headers["x-request-id"]
        for text in ["write a python function to sort a list", "what is the capital of France?"]:
            raw = client.chat.completions.with_raw_response.create(
                model="auto", messages=[{"role": "user", "content": text}])
            ids["routed"] = raw.headers["x-request-id"]
        with pytest.raises(openai.InternalServerError) as failed:
            client.chat.completions.create(model=models[0], messages=[{"role": "user", "content": "fail"}],
                                           extra_headers={"x-sim-status": "500"})
        ids["failed"] = failed.value.response.headers["x-request-id"]
        raw = client.chat.completions.with_raw_response.create(
            model="auto", messages=[{"role": "user", "content": f"please echo {PAYLOAD}"}],
            metadata={"note": PAYLOAD, "team": "red"}, extra_headers={"x-sim-reply": PAYLOAD})
        ids["xss"] = raw.headers["x-request-id"]
    records = gw.app.records
    assert isinstance(records, SQLiteRecordWriter)
    for rid in ids.values():
        assert gw.wait_recorded(rid)
    assert records.flush(10)
    return ids


@pytest.fixture
def browser_driver_may_block(no_blocking_calls_on_event_loops: BlockBuster) -> Iterator[None]:
    """Playwright's client reads files and stats paths on its own event loop (finding its driver, building
    stack traces for each call): the blocking-call guard stands down while a browser test runs. The
    dashboard's own handlers are held to it in test_api.py, the gateway in the e2e tests."""
    no_blocking_calls_on_event_loops.deactivate()
    try:
        yield
    finally:
        no_blocking_calls_on_event_loops.activate()


@pytest.fixture
async def page(gateway: GatewayThread, browser_driver_may_block: None) -> AsyncIterator[Any]:
    async_api = _browser_or_skip()
    async with async_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = await browser.new_context(viewport={"width": 1440, "height": 1000}, device_scale_factor=1)
        pg = await context.new_page()
        pg.set_default_timeout(10_000)
        pg.dialogs = []
        pg.on("dialog", lambda d: pg.dialogs.append(d.message))
        pg.console_errors = []
        pg.on("console", lambda m: pg.console_errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: pg.console_errors.append(str(e)))
        try:
            yield pg
        finally:
            await browser.close()


async def test_an_operator_sees_traffic_and_opens_a_request(gateway: GatewayThread, page: Any) -> None:
    ids = await asyncio.to_thread(_traffic, gateway)

    await page.goto(f"{gateway.url}/dashboard")
    await page.wait_for_selector("#login-form", state="visible")
    await page.fill("#key", "not-the-key")
    await page.click("button[type=submit]")
    await page.wait_for_selector("#login-error:not([hidden])")
    assert "not accepted" in await page.text_content("#login-error")

    await page.fill("#key", KEY)
    await page.click("button[type=submit]")
    await page.wait_for_selector("body[data-loaded=true]")
    assert await page.evaluate("sessionStorage.getItem('switchboard.adminKey')") == KEY

    total = sum(1 for _ in ids) + 1  # two routed requests share one key
    assert await page.text_content("#kpi-requests .value") == str(total)
    assert (await page.text_content("#kpi-errors .value")).endswith("%")
    assert (await page.text_content("#kpi-cost .value")).startswith("$")
    assert (await page.text_content("#kpi-p95 .value")).endswith("ms")
    assert (await page.text_content("#kpi-savings .value")) != "—"

    for chart in ["#chart-traffic", "#chart-latency", "#chart-cost"]:
        box = await page.locator(f"{chart} svg").bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
        assert await page.locator(f"{chart} svg path, {chart} svg rect.bar").count() > 0
    bar = await page.locator("#chart-traffic rect.bar").first.bounding_box()
    assert bar is not None and bar["width"] > 0 and bar["height"] > 0
    assert await page.locator("#split .split-row").count() >= 3
    assert await page.locator("#health tbody tr").count() >= 3
    assert await page.locator("#requests tbody tr").count() == total

    if os.environ.get("SWITCHBOARD_SCREENSHOTS") == "1":
        await page.screenshot(path=str(DOCS / "dashboard-overview.png"), full_page=True)

    # The routed request's drill-down: attempts and the router's decision with its scores.
    await page.click(f"#requests tr[data-request-id='{ids['routed']}']")
    await page.wait_for_selector(f"#drawer[data-loaded='{ids['routed']}']")
    drawer = page.locator("#drawer-body")
    assert "Routing decision" in await drawer.text_content()
    assert await page.locator("#drawer-body .steps li").count() >= 1
    assert await page.locator("#drawer-body table").count() >= 2  # attempts, scores
    await page.click("#drawer-close")
    await page.wait_for_selector("#drawer", state="hidden")

    # The failed request shows its failed attempt.
    await page.click(f"#requests tr[data-request-id='{ids['failed']}']")
    await page.wait_for_selector(f"#drawer[data-loaded='{ids['failed']}']")
    assert "500" in await drawer.text_content()
    await page.keyboard.press("Escape")

    # The request carrying a script: shown as text, never run.
    await page.fill("#search", "red")
    await async_api.expect(page.locator("#requests tbody tr")).to_have_count(1)
    await page.click(f"#requests tr[data-request-id='{ids['xss']}']")
    await page.wait_for_selector(f"#drawer[data-loaded='{ids['xss']}']")
    prompt = await page.text_content("#drawer-body .prompt")
    assert PAYLOAD in prompt
    assert PAYLOAD in await drawer.text_content()  # the metadata value
    assert await page.locator("#drawer-body script").count() == 0
    assert await page.locator("body script").count() == 0
    if os.environ.get("SWITCHBOARD_SCREENSHOTS") == "1":
        await page.screenshot(path=str(DOCS / "dashboard-request.png"))
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    assert page.dialogs == []
    # The one console error is the browser's note on the 401 of the wrong key tried first.
    assert [e for e in page.console_errors if "status of 401" not in e] == []


async def test_an_empty_window_says_so(gateway: GatewayThread, page: Any) -> None:
    await page.goto(f"{gateway.url}/dashboard")
    await page.evaluate(f"sessionStorage.setItem('switchboard.adminKey', '{KEY}')")
    # A window that starts in the future holds no traffic.
    await page.route("**/dashboard/api/**", lambda route: route.continue_(
        url=route.request.url.replace("since=1h", "since=9999999999")))
    await page.reload()
    await page.wait_for_selector("body[data-loaded=true]")
    assert await page.text_content("#chart-traffic .empty") == "No traffic in this window"
    assert await page.text_content("#requests tbody") == "No traffic in this window"
    assert await page.text_content("#kpi-requests .value") == "0"
    await page.click("#signout")
    await page.wait_for_selector("#login-form", state="visible")
    assert await page.evaluate("sessionStorage.getItem('switchboard.adminKey')") is None
