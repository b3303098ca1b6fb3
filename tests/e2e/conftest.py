"""e2e helpers: every test's page is screenshotted into tests/e2e/artifacts/ (git-ignored)."""

import re
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).parent / "artifacts"
ADMIN, PASSWORD = "admin", "e2e-password-123"
# The Models page, as a sign-in lands on it: loaded afresh (the new websocket carries the new
# HttpOnly cookie), so the server's static files answer it as /models/.
MODELS_PAGE = re.compile(r".*/models/?$")
LOGIN_PAGE = re.compile(r".*/login/?$")  # likewise after a sign-out


@pytest.fixture
def page(browser, request):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    p = context.new_page()
    p.set_default_timeout(20_000)
    yield p
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        p.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    finally:
        context.close()


def sign_in(page, url: str, user: str = ADMIN, password: str = PASSWORD) -> None:
    page.goto(url + "/login")
    page.locator("#field-username").fill(user)
    page.locator("#field-password").fill(password)
    page.locator("#sign-in").click()
    page.wait_for_url(MODELS_PAGE)
