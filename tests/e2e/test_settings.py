"""Settings page in Chromium: a webhook endpoint (bad URL refused, secret shown once, a test
delivery to a real receiver that verifies its signature) and an API token with
the scope chosen, shown once, then revoked."""

import httpx
import pytest
from playwright.sync_api import expect
from standardwebhooks import Webhook

from cortex_app import crud
from tests.e2e.conftest import ADMIN, PASSWORD, sign_in
from tests.unit.test_webhooks import Receiver


@pytest.fixture(scope="module")
def console(start_console, docker_host):
    return start_console(DOCKER_HOST=docker_host, CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD)


def test_webhook_endpoint_and_api_token(console, page):
    db = console.db()
    crud.create_model(db, console.settings, {"name": "chatbot", "engine": "vllm", "source": "org/chat"})
    db.dispose()
    receiver = Receiver()
    sign_in(page, console.url)
    page.goto(console.url + "/settings")
    page.locator("#webhook-url").fill("ftp://example.org/hook")
    page.locator("#add-endpoint").click()
    expect(page.locator("#settings-error")).to_contain_text("must start with http:// or https://")
    page.locator("#webhook-url").fill(receiver.url)
    page.locator("#webhook-models").fill("chatbot, ghost")  # the model filter, by name
    page.locator("#add-endpoint").click()
    expect(page.locator("#settings-error")).to_contain_text("no model named 'ghost'")
    page.locator("#webhook-models").fill("chatbot")
    page.locator("#add-endpoint").click()
    secret = page.locator("#shown-secret").inner_text()
    expect(page.locator(".endpoint-models")).to_have_text("chatbot")
    assert secret.startswith("whsec_")
    page.locator(".ping").first.click()
    expect(page.locator("#ping-result")).to_contain_text("delivered (HTTP 204")
    [(headers, body)] = receiver.got
    assert Webhook(secret).verify(body, headers)["type"] == "ping"
    expect(page.locator(".delivery-row", has_text="ping")).to_contain_text("delivered")  # tests are logged
    # On a 1366 px laptop screen no button of the endpoint's row or the log is cut off.
    page.set_viewport_size({"width": 1366, "height": 768})
    for button in (*page.locator("#endpoints button").all(), page.locator(".redeliver").first):
        box = button.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 1366, (button.inner_text(), box)
    page.set_viewport_size({"width": 1280, "height": 800})

    page.locator("#token-name").fill("prometheus")
    page.locator("#token-scope").click()
    page.get_by_role("option", name="operate").click()
    page.locator("#token-expiry").click()
    page.get_by_role("option", name="never expires").click()
    page.locator("#create-token").click()
    token = page.locator("#shown-token").inner_text()
    assert token.startswith("ctx_")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    page.locator("#copy-shown-token").click()
    assert page.evaluate("navigator.clipboard.readText()") == token  # the Copy button
    page.locator("#copy-shown-secret").click()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    bearer = {"Authorization": f"Bearer {token}"}
    assert httpx.get(console.url + "/api/models", headers=bearer).status_code == 200
    assert httpx.post(console.url + "/api/models/999/stop", headers=bearer).status_code == 404  # operate may
    assert httpx.post(console.url + "/api/models", headers=bearer, json={}).status_code == 403  # admin only
    page.reload()
    row = page.locator(".token-row", has_text="prometheus")
    expect(row).to_contain_text("operate")
    expect(row).to_contain_text("never expires")
    expect(row.locator(".token-used")).not_to_have_text("never")  # it was used just now
    assert page.locator("#shown-token").count() == 0 and page.locator("#shown-secret").count() == 0
    assert secret not in page.content() and token not in page.content()
    row.get_by_role("button", name="Revoke").click()
    expect(row).to_contain_text("revoked")
    assert httpx.get(console.url + "/api/models", headers=bearer).status_code == 401
    receiver.close()
