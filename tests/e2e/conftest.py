"""e2e helpers: every test's page is screenshotted into tests/e2e/artifacts/ (git-ignored)."""

import re
from pathlib import Path

import pytest

ARTIFACTS = Path(__file__).parent / "artifacts"
ADMIN, PASSWORD = "admin", "e2e-password-123"
# The Overview, where a sign-in lands: loaded afresh (the new websocket carries the new
# HttpOnly cookie).
HOME_PAGE = re.compile(r"^https?://[^/]+/$")
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
    """Sign in (the console lands on the Overview), then open the Models page."""
    page.goto(url + "/login")
    page.locator("#field-username").fill(user)
    page.locator("#field-password").fill(password)
    page.locator("#sign-in").click()
    page.wait_for_url(HOME_PAGE)
    page.locator("#overview-models").wait_for()
    page.goto(url + "/models")  # where the tests begin
