"""The Overview in Chromium, where a sign-in lands: the host (engine, the GPU notice here),
models by state with what the running ones cost, a failure of the last day with its reason,
and webhook deliveries retrying while their receiver is down."""

import re

from playwright.sync_api import expect

from cortex_app import webhooks
from tests.conftest import free_port
from tests.e2e.conftest import ADMIN, ARTIFACTS, HOME_PAGE, PASSWORD, sign_in


def _model(console, name: str, args: str) -> int:
    r = console.call("POST", "/api/models", json={"name": name, "engine": "llamacpp", "source": "tiny.gguf",
                                                  "device": "cpu", "extra_args": args})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _many_events(console, model_id: int, n: int) -> None:
    """A long history (as weeks of health flips would leave), written as the console writes it."""
    from sqlmodel import Session

    from cortex_app.models import EventKind, ModelEvent, ModelState

    db = console.db()
    with Session(db) as s:
        for i in range(n):
            s.add(ModelEvent(model_id=model_id, model_name="broken", from_state=ModelState.FAILED,
                             to_state=ModelState.FAILED, kind=EventKind.HEALTH, reason=f"note {i}", actor="test"))
        s.commit()
    db.dispose()


def test_the_overview_shows_host_models_failures_and_webhooks(console, page):
    console.sign_in(ADMIN, PASSWORD)
    db = console.db()
    webhooks.create_endpoint(db, url=f"http://127.0.0.1:{free_port()}/down", event_types=["model.failed"])
    db.dispose()
    ok = _model(console, "fine", "-t 1 --poll 0")
    broken = _model(console, "broken", "--no-such-flag")
    console.start_ready(ok)
    console.call("POST", f"/api/models/{broken}/start")
    console.wait_model(broken, "failed")
    sign_in(page, console.url)
    page.goto(console.url + "/")
    page.wait_for_url(HOME_PAGE)
    expect(page.locator("#overview-host")).to_contain_text("engine reachable")
    expect(page.locator("#overview-gpu-notice")).to_contain_text("NVIDIA")  # no GPU here: said plainly
    expect(page.locator("#overview-count-running")).to_contain_text("1")
    expect(page.locator("#overview-count-failed")).to_contain_text("1")
    expect(page.locator("#overview-cost")).to_contain_text("% CPU", timeout=15_000)
    failure = page.locator(".overview-failure", has_text="broken")
    expect(failure).to_contain_text("exit")  # why it failed, as the row says
    expect(page.locator("#overview-webhook-verdict")).to_contain_text("retrying", timeout=20_000)
    page.screenshot(path=str(ARTIFACTS / "overview.png"), full_page=True)
    page.locator("#overview-failures a", has_text="broken").click()
    page.wait_for_url(f"**/models/{broken}")
    # Its detail page: the failure stands out in the timeline, the kept lines say what they are.
    expect(page.locator(".event-failed").first).to_contain_text("exited with code 1")
    expect(page.locator("#logs")).to_contain_text("no-such-flag")
    expect(page.get_by_text("lines kept when it failed")).to_be_visible()
    _many_events(console, broken, 25)
    page.reload()
    expect(page.locator("#event-pages")).to_contain_text("page 1 of 2")
    assert page.locator(".event-row").count() == 20
    page.locator("#events-older").click()
    expect(page.locator("#event-pages")).to_contain_text("page 2 of 2")
    expect(page.locator("#events-older")).to_be_disabled()
    expect(page.locator(".event-row", has_text="start requested")).to_be_visible()  # the oldest is there
    # The delivery log during the receiver's outage: which model, what event, when it is tried next.
    page.goto(console.url + "/settings")
    pending = page.locator(".delivery-row", has_text="model.failed").first
    expect(pending).to_contain_text("broken")
    expect(pending).to_contain_text("pending")
    expect(pending.locator(".delivery-next")).to_have_text(re.compile(r"^\d\d:\d\d:\d\d$"))
    page.locator(".ping").first.click()  # a test delivery to the same dead receiver: logged too
    expect(page.locator(".delivery-row", has_text="ping").first).to_contain_text("failed")
    pending.locator(".redeliver").click()
    expect(page.locator("[data-sonner-toast]", has_text="queued again")).to_be_visible()
    page.screenshot(path=str(ARTIFACTS / "delivery_log_outage.png"), full_page=True)
    page.goto(console.url + "/models")
    page.locator("#model-row-fine .act-stop").click()
    console.wait_model(ok, "stopped")
