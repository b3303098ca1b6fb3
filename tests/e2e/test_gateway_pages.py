"""The gateway's pages in Chromium: an inference key made on the Keys page (refused as asked
wrongly, shown once, working on /v1 at once), then revoked; the Usage page, empty and then with
records, and its CSV export with the page's cookie; the model detail page's gateway examples."""

import asyncio
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import httpx
import pytest
from playwright.sync_api import expect

from cortex_app import crud
from cortex_app.gateway.usage import UsageMeter
from cortex_app.models import utcnow
from tests.conftest import record_at
from tests.e2e.conftest import sign_in

CSV_HEADER = ("at,key_id,key_name,model_name,endpoint,stream,status,prompt_tokens,completion_tokens,latency_ms,"
              "ttft_ms")


@pytest.fixture(scope="module")
def models(console):
    """A chat model and an embeddings model with request defaults; {name: id}."""
    db = console.db()
    chat = crud.create_model(db, console.settings, {"name": "chatbot", "engine": "vllm", "source": "org/chat",
                                                    "served_name": "org/chat-1.5"})
    embed = crud.create_model(db, console.settings, {"name": "embedder", "engine": "llamacpp", "source": "tiny.gguf",
                                                     "embeddings": True, "request_defaults": {"max_tokens": 7}})
    db.dispose()
    return {"chatbot": chat.id, "embedder": embed.id}


def test_a_key_is_shown_once_works_at_once_and_is_revoked(console, models, page):
    sign_in(page, console.url)
    page.goto(console.url + "/keys")
    expect(page.locator("#keys-gateway-url")).to_have_text(console.settings.public_url + "/v1")
    page.locator("#key-create").click()  # no name
    expect(page.locator("#key-error")).to_contain_text("name: 1 to 64 characters")
    page.locator("#key-name").fill("frontend")
    page.locator("#key-rpm").fill("0")
    page.locator("#key-create").click()
    expect(page.locator("#key-error")).to_contain_text("requests per minute: a whole number from 1")
    page.locator("#key-rpm").fill("60")
    page.locator("#key-all-models").click()  # only the models picked
    page.locator("#key-create").click()
    expect(page.locator("#key-error")).to_contain_text("models: name at least one model")
    picked = page.get_by_role("checkbox", name="org/chat-1.5")
    picked.click()
    expect(picked).to_be_checked()
    expect(page.get_by_role("checkbox", name="embedder")).not_to_be_checked()
    page.locator("#key-expiry").click()
    page.get_by_role("option", name="expires in 30 days").click()
    page.locator("#key-create").click()
    expect(page.locator("#key-secret")).to_contain_text("sk-cortex-")
    expect(page.locator("#key-error")).to_have_count(0)
    key = page.locator("#key-secret").inner_text()
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    page.locator("#copy-key-secret").click()
    assert page.evaluate("navigator.clipboard.readText()") == key  # the Copy button

    bearer = {"Authorization": f"Bearer {key}"}
    assert httpx.get(console.url + "/v1/models", headers=bearer).status_code == 200  # it works at once
    row = page.locator(".key-row", has_text="frontend")
    expect(row).to_contain_text("-".join(key.split("-", 3)[:3]) + "-…")  # sk-cortex-<lookup>-…, never the key
    expect(row.locator(".key-models")).to_have_text("org/chat-1.5")
    expect(row).to_contain_text("60")
    expect(row).not_to_contain_text("never")  # it expires
    expect(row.locator(".key-state")).to_have_text("live")

    page.reload()
    expect(row.locator(".key-state")).to_have_text("live")
    assert page.locator("#key-secret").count() == 0
    assert key not in page.content()  # shown once: not after a reload

    row.locator(".key-revoke").click()
    page.locator(".key-revoke-confirm").click()
    expect(row.locator(".key-state")).to_contain_text("revoked")
    expect(row.locator(".key-revoke")).to_have_count(0)
    assert httpx.get(console.url + "/v1/models", headers=bearer).status_code == 401


def test_usage_page_empty_then_with_records_and_its_csv(console, models, page):
    sign_in(page, console.url)
    page.goto(console.url + "/usage")
    expect(page.locator("#usage-empty")).to_contain_text("No gateway requests in the last 24 hours")
    expect(page.locator("#usage-by-model")).to_contain_text("No requests in the last 24 hours")
    expect(page.locator("#usage-chart-key")).to_contain_text("No tokens in the last 24 hours")
    csv = page.locator("#usage-csv")
    expect(csv).to_have_attribute("href", "/api/usage.csv?window=24h")
    r = page.request.get(console.url + csv.get_attribute("href"))  # with the page's session cookie
    assert r.status == 200, r.text()
    assert r.text().splitlines() == [CSV_HEADER]
    assert httpx.get(console.url + "/api/usage.csv").status_code == 401  # the cookie is what let it in

    now = utcnow()
    db = console.db()
    meter = UsageMeter(db)  # as the gateway writes them (records and hourly sums), at chosen times
    for at, status, prompt, completion, latency_ms in (
            (now - timedelta(minutes=5), 200, 11, 20, 100.0), (now - timedelta(minutes=4), 500, 9, 0, 300.0),
            (now - timedelta(days=3), 200, 1000, 1000, 50.0)):
        record_at(meter, at, 1, "frontend", "org/chat-1.5", "chat", False, status, prompt, completion, latency_ms, None)
    # flush() is a coroutine, run on a loop of its own (Playwright's holds this thread)
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(asyncio.run, meter.flush()).result() == 3
    db.dispose()
    page.get_by_role("button", name="Refresh").click()
    expect(page.locator("#usage-empty")).to_have_count(0)
    model_row = page.locator("#usage-by-model .usage-row")
    expect(model_row).to_have_count(1)
    # requests, errors, prompt tokens, completion tokens, average latency (ms): the last 24 hours only
    expect(model_row.locator("td")).to_have_text(["org/chat-1.5", "2", "1", "20", "20", "200.0"])
    expect(page.locator("#usage-by-key .usage-row").locator("td").first).to_have_text("frontend")
    expect(page.locator("#usage-chart-model .recharts-bar-rectangle").first).to_be_attached()
    expect(page.locator("#usage-chart-key .recharts-legend-item")).to_have_text(["frontend"])

    page.locator("#usage-window").click()
    page.get_by_role("option", name="The last 7 days").click()
    expect(csv).to_have_attribute("href", "/api/usage.csv?window=7d")
    expect(model_row.locator("td")).to_have_text(["org/chat-1.5", "3", "1", "1,020", "1,020", "150.0"])
    lines = page.request.get(console.url + csv.get_attribute("href")).text().splitlines()
    assert lines[0] == CSV_HEADER and len(lines) == 4


def test_model_detail_shows_how_to_call_it_through_the_gateway(console, models, page):
    base = console.settings.public_url + "/v1"
    sign_in(page, console.url)
    page.goto(f"{console.url}/models/{models['chatbot']}")
    card = page.locator("#gateway-example")
    expect(card.locator("#gateway-base")).to_have_text(base)
    expect(card.locator("#gateway-curl")).to_contain_text(f"curl {base}/chat/completions")
    expect(card.locator("#gateway-curl")).to_contain_text('"model": "org/chat-1.5"')
    expect(card.locator("#gateway-python")).to_contain_text(f'base_url="{base}"')
    expect(card.locator("#gateway-python")).to_contain_text('api_key=os.environ["CORTEX_KEY"]')
    expect(card.locator("#gateway-defaults")).to_have_count(0)  # it has none
    page.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=console.url)
    page.locator("#copy-gateway-curl").click()
    copied = page.evaluate("navigator.clipboard.readText()")
    assert 'Authorization: Bearer $CORTEX_KEY' in copied and f"{base}/chat/completions" in copied

    page.goto(f"{console.url}/models/{models['embedder']}")
    expect(card.locator("#gateway-curl")).to_contain_text(f"curl {base}/embeddings")
    expect(card.locator("#gateway-python")).to_contain_text("client.embeddings.create(")
    expect(card).not_to_contain_text("chat/completions")
    expect(card.locator("#gateway-defaults")).to_contain_text('"max_tokens": 7')
    expect(card.get_by_role("link", name="Keys")).to_have_attribute("href", "/keys")
