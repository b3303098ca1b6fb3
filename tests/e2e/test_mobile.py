"""The console on a phone (390 × 844) in Chromium: no page wider than the screen, every
Models-page action within reach (Start, Stop, Edit, Delete), the menu instead of the sidebar,
and the form in one column."""

import re

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ADMIN, ARTIFACTS, PASSWORD, screenshotted_page, sign_in

WIDTH, HEIGHT = 390, 844


@pytest.fixture
def phone(browser, request):
    yield from screenshotted_page(browser, request, viewport={"width": WIDTH, "height": HEIGHT},
                                  device_scale_factor=2, is_mobile=True, has_touch=True)


def _fits(page, what: str) -> None:
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= WIDTH, f"{what} is {width} px wide on a {WIDTH} px screen"


def _reachable(locator) -> None:
    expect(locator).to_be_visible()
    box = locator.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, f"off screen: {box}"


def test_every_models_action_is_reachable_on_a_phone(console, phone):
    console.sign_in(ADMIN, PASSWORD)
    ids = {}
    for name in ("a-running-model", "a-stopped-model"):
        r = console.call("POST", "/api/models", json={"name": name, "engine": "llamacpp", "source": "tiny.gguf",
                                                      "device": "cpu", "extra_args": "-t 1 --poll 0"})
        ids[name] = r.json()["id"]
    console.start_ready(ids["a-running-model"])
    sign_in(phone, console.url)
    expect(phone.locator("#model-row-a-running-model")).to_contain_text("running")
    _fits(phone, "the Models page")
    running, stopped = phone.locator("#model-row-a-running-model"), phone.locator("#model-row-a-stopped-model")
    for locator in (running.locator(".act-stop"), running.locator(".act-edit"), stopped.locator(".act-start"),
                    stopped.locator(".act-edit"), stopped.locator(".act-delete")):
        _reachable(locator)
    _reachable(running.locator(".state-badge"))
    phone.screenshot(path=str(ARTIFACTS / "mobile_models.png"), full_page=True)
    stopped.locator(".act-start").tap()
    expect(phone.locator("[data-sonner-toast]", has_text="a-stopped-model started; loading")).to_be_visible()
    expect(stopped).to_contain_text("running", timeout=60_000)
    running.locator(".act-stop").tap()
    expect(phone.locator("[data-sonner-toast]", has_text="a-running-model stopped")).to_be_visible()
    phone.screenshot(path=str(ARTIFACTS / "toast_after_stop.png"))
    expect(running).to_contain_text("stopped", timeout=60_000)
    running.locator(".act-delete").tap()
    phone.locator(".confirm-delete").tap()
    expect(running).to_have_count(0)
    stopped.locator(".act-stop").tap()  # the one started above
    expect(stopped).to_contain_text("stopped", timeout=60_000)
    # The sidebar gives way to a menu.
    expect(phone.locator("#sign-out")).to_be_hidden()
    phone.locator("#nav-menu").tap()
    phone.locator(".nav-item", has_text="Settings").tap()
    phone.wait_for_url(re.compile(r".*/settings/?$"))
    _fits(phone, "the Settings page")
    phone.screenshot(path=str(ARTIFACTS / "mobile_settings.png"), full_page=True)
    for path in ("/", "/system", "/models/new", f"/models/{ids['a-stopped-model']}"):
        phone.goto(console.url + path)
        phone.locator("#page-title").wait_for()
        phone.wait_for_timeout(500)
        _fits(phone, path)
    phone.goto(console.url + "/models/new")
    name, source = phone.locator("#field-name").bounding_box(), phone.locator("#field-served_name").bounding_box()
    assert source["y"] > name["y"], "the form's fields are side by side on a phone"
