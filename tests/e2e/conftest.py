"""e2e helpers: every test's page is screenshotted into tests/e2e/artifacts/ (git-ignored)."""

import re
import shutil
from pathlib import Path

import pytest

from tests.conftest import LLAMA_IMAGE

ARTIFACTS = Path(__file__).parent / "artifacts"
ADMIN, PASSWORD = "admin", "e2e-password-123"
# The Overview, where a sign-in lands: loaded afresh (the new websocket carries the new
# HttpOnly cookie).
HOME_PAGE = re.compile(r"^https?://[^/]+/$")
LOGIN_PAGE = re.compile(r".*/login/?$")  # likewise after a sign-out


def screenshotted_page(browser, request, **context_options):
    """A page in a fresh browser context, screenshotted when the test ends, pass or fail."""
    context = browser.new_context(**context_options)
    p = context.new_page()
    p.set_default_timeout(20_000)
    yield p
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        p.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    finally:
        context.close()


@pytest.fixture
def page(browser, request):
    yield from screenshotted_page(browser, request, viewport={"width": 1280, "height": 800})


@pytest.fixture(scope="module")
def console(start_console, tmp_path_factory, tiny_gguf, docker_host):
    """A console on the test engine with the tiny model in its models dir and the admin made
    from CORTEX_ADMIN_* (a module that needs another one defines its own `console`)."""
    models = tmp_path_factory.mktemp("models")
    shutil.copy(tiny_gguf, models / "tiny.gguf")
    return start_console(DOCKER_HOST=docker_host, CORTEX_MODELS_DIR=str(models), CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE,
                         CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD)


def sign_in(page, url: str, user: str = ADMIN, password: str = PASSWORD) -> None:
    """Sign in (the console lands on the Overview), then open the Models page."""
    page.goto(url + "/login")
    page.locator("#field-username").fill(user)
    page.locator("#field-password").fill(password)
    page.locator("#sign-in").click()
    page.wait_for_url(HOME_PAGE)
    page.locator("#overview-models").wait_for()
    page.goto(url + "/models")  # where the tests begin
