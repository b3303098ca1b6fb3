"""With no Docker Engine the console still starts, serves, and says plainly what is wrong."""

import httpx
import pytest

from tests.e2e.conftest import ADMIN, PASSWORD, sign_in


@pytest.fixture(scope="module")
def console(start_console, tmp_path_factory):
    gone = tmp_path_factory.mktemp("no-engine") / "docker.sock"
    return start_console(DOCKER_HOST=f"unix://{gone}", CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD)


def test_system_page_reports_the_engine_unreachable(console, page):
    sign_in(page, console.url)
    page.goto(console.url + "/system")
    status = page.locator("#engine-status")
    status.wait_for()
    assert status.inner_text() == "unreachable"
    callout = page.locator("#engine-error")
    assert callout.is_visible() and callout.inner_text().startswith("no Docker Engine answers at unix://")
    assert "DOCKER_HOST" in callout.inner_text()
    assert page.title() == "System · Cortex"
    # Each job's last error is shown (not only logged once per process).
    job = page.locator("#job-reconcile")
    job.wait_for()
    assert job.locator(".job-status").inner_text().startswith("failing since")
    assert "no Docker Engine answers" in job.locator(".job-error").inner_text()
    # ... and the journal says when that failure began.
    journal = page.locator("#journal")
    assert "job.failing" in journal.inner_text() and "reconcile" in journal.inner_text()


def test_models_page_still_works_and_says_so(console, page):
    sign_in(page, console.url)
    page.locator("#no-models").wait_for()
    banner = page.locator("#engine-down")
    banner.wait_for()
    assert "no Docker Engine answers" in banner.inner_text() and "DOCKER_HOST" in banner.inner_text()


def test_health_route_reports_it_too(console):
    # Anyone may ask, and learns only that: not where the engine is, nor its error text.
    health = httpx.get(console.url + "/api/health", timeout=10).json()
    assert health == {"status": "ok", "engine": {"reachable": False}}
    # A signed-in caller gets the whole story.
    token = httpx.post(console.url + "/api/session", json={"username": ADMIN, "password": PASSWORD},
                       timeout=30).json()["token"]
    full = httpx.get(console.url + "/api/health", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert full["engine"]["reachable"] is False and full["engine"]["host"].startswith("unix://")
    assert "DOCKER_HOST" in full["engine"]["error"] and full["version"]
