"""A running tiny model's cost in Chromium: CPU and memory on its Models row, moving while it
answers completions, and the detail page's charts (CPU, memory, generated tokens/s)."""

import re

import httpx
from playwright.sync_api import expect

from tests.e2e.conftest import ADMIN, ARTIFACTS, PASSWORD, sign_in


def test_resource_figures_move_on_the_models_page_and_the_detail_charts(console, page):
    console.sign_in(ADMIN, PASSWORD)
    r = console.call("POST", "/api/models", json={"name": "busy", "engine": "llamacpp", "source": "tiny.gguf",
                                                  "device": "cpu", "extra_args": "-t 1 --poll 0"})
    assert r.status_code == 201, r.text
    model_id = r.json()["id"]
    endpoint = f"http://127.0.0.1:{console.start_ready(model_id)['host_port']}"
    sign_in(page, console.url)
    usage = page.locator("#model-row-busy .row-usage")
    expect(usage).to_contain_text(re.compile(r"\d+ % CPU · [\d.]+ MiB"), timeout=15_000)
    seen = {usage.inner_text()}
    for _ in range(6):  # the engine works; the row's figures follow it
        httpx.post(f"{endpoint}/v1/completions", json={"prompt": "Once upon a time", "max_tokens": 64}, timeout=30)
        seen.add(usage.inner_text())
    expect(page.locator("#model-row-busy .row-engine-use")).to_contain_text("tok/s", timeout=10_000)
    seen.add(usage.inner_text())
    assert len(seen) >= 2, f"the row's figures never moved: {seen}"
    page.locator("#model-row-busy a", has_text="busy").click()
    page.wait_for_url(re.compile(rf".*/models/{model_id}$"))
    for chart in ("#chart-cpu", "#chart-mem", "#chart-tokens"):  # a line of two points or more (a flat
        # one has no height, so "visible" is not the test)
        expect(page.locator(f"{chart} .recharts-line-curve")).to_have_attribute("d", re.compile(r"^M.*L"),
                                                                                 timeout=15_000)
    d0 = page.locator("#chart-cpu .recharts-line-curve").get_attribute("d")
    page.wait_for_timeout(4500)  # two more samples
    assert page.locator("#chart-cpu .recharts-line-curve").get_attribute("d") != d0, "the chart did not move"
    page.screenshot(path=str(ARTIFACTS / "resources_detail.png"), full_page=True)
    page.locator("#detail-stop").click()
    console.wait_model(model_id, "stopped")
