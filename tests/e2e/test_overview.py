"""The console in Chromium, production build, fresh database: with the test engine, and
with no engine at all (it must still serve and say so)."""

import httpx
import pytest


@pytest.fixture(scope="module")
def console(start_console, docker_host):
    return start_console(DOCKER_HOST=docker_host)


def test_home_page_title_and_engine_reachable(console, page, docker_client):
    page.goto(console.url + "/")
    assert page.title() == "Cortex"
    page.get_by_role("heading", name="Overview").wait_for()
    status = page.locator("#engine-status")
    status.wait_for()
    assert status.inner_text() == "reachable"
    version = docker_client.version()["Version"]
    assert page.get_by_text(f"Docker {version}").is_visible()


def test_html_is_the_app(console):
    r = httpx.get(console.url + "/")
    assert r.status_code == 200 and "<html" in r.text.lower()
    health = httpx.get(console.url + "/api/health").json()
    assert health["status"] == "ok" and health["engine"]["reachable"] is True
    assert health["database"] == "sqlite"


def test_sidebar_and_dark_mode_toggle(console, page):
    page.goto(console.url + "/")
    page.locator("#engine-status").wait_for()
    assert page.get_by_role("link", name="Overview").is_visible()
    html = page.locator("html")
    before = html.get_attribute("class") or ""
    page.get_by_role("button").filter(has=page.locator("svg.lucide-moon, svg.lucide-sun")).first.click()
    page.wait_for_function("c => document.documentElement.className !== c", arg=before)
    assert (html.get_attribute("class") or "") != before
