"""Settings page in Chromium: a webhook endpoint (bad URL refused, secret shown once, a test
delivery to a real receiver that verifies its signature) and an API token that works once
and never shows again."""

import httpx
import pytest
from playwright.sync_api import expect
from standardwebhooks import Webhook

from tests.e2e.conftest import ADMIN, PASSWORD, sign_in
from tests.unit.test_webhooks import Receiver


@pytest.fixture(scope="module")
def console(start_console, docker_host):
    return start_console(DOCKER_HOST=docker_host, CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD)


def test_webhook_endpoint_and_api_token(console, page):
    receiver = Receiver()
    sign_in(page, console.url)
    page.goto(console.url + "/settings")
    page.locator("#webhook-url").fill("ftp://example.org/hook")
    page.locator("#add-endpoint").click()
    expect(page.locator("#settings-error")).to_contain_text("must start with http:// or https://")
    page.locator("#webhook-url").fill(receiver.url)
    page.locator("#add-endpoint").click()
    secret = page.locator("#shown-secret").inner_text()
    assert secret.startswith("whsec_")
    page.locator(".ping").first.click()
    expect(page.locator("#ping-result")).to_contain_text("delivered (HTTP 204")
    [(headers, body)] = receiver.got
    assert Webhook(secret).verify(body, headers)["type"] == "ping"

    page.locator("#token-name").fill("prometheus")
    page.locator("#create-token").click()
    token = page.locator("#shown-token").inner_text()
    assert token.startswith("ctx_")
    r = httpx.get(console.url + "/api/models", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200
    page.reload()
    expect(page.get_by_text("prometheus")).to_be_visible()
    assert page.locator("#shown-token").count() == 0 and page.locator("#shown-secret").count() == 0
    assert secret not in page.content() and token not in page.content()
    receiver.close()
