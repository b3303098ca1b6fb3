"""With no Docker Engine the console still starts, serves, and says plainly what is wrong."""

import httpx
import pytest


@pytest.fixture(scope="module")
def console(start_console, tmp_path_factory):
    gone = tmp_path_factory.mktemp("no-engine") / "docker.sock"
    return start_console(DOCKER_HOST=f"unix://{gone}")


def test_page_reports_the_engine_unreachable(console, page):
    page.goto(console.url + "/")
    status = page.locator("#engine-status")
    status.wait_for()
    assert status.inner_text() == "unreachable"
    callout = page.get_by_text("no Docker Engine answers at unix://")
    assert callout.is_visible()
    assert "DOCKER_HOST" in callout.inner_text()


def test_health_route_reports_it_too(console):
    health = httpx.get(console.url + "/api/health", timeout=10).json()
    assert health["status"] == "ok"
    assert health["engine"]["reachable"] is False
    assert "DOCKER_HOST" in health["engine"]["error"]
