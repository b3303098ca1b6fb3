"""Images in Chromium against a real registry on loopback: Pull on the System page with its
progress bar moving (and going on while the page is away), then Start; and Start on a model
whose image is missing offering the pull first, creating nothing until the admin starts it."""

import re

from playwright.sync_api import expect

from cortex_app.engines.spec import LABEL_MODEL_ID
from tests.conftest import LLAMA_IMAGE
from tests.e2e.conftest import ADMIN, ARTIFACTS, PASSWORD, sign_in

RATE = 5_000_000  # bytes/s through the relay: a 20 MB layer takes ~4 s, long enough to watch


def _model_on_a_new_image(console, registry, docker_client, pulled_images, name: str) -> tuple[str, int]:
    """A llama image with a fresh 20 MB layer in the registry (not on the engine), behind the
    slow relay, and a model `name` that uses it: (its reference, the model's id)."""
    image = registry.push_new(docker_client, LLAMA_IMAGE, f"cortex-test/llama-{name}", size=20_000_000)
    slow = image.replace(registry.host, registry.slow(RATE))
    pulled_images.append(slow)
    console.sign_in(ADMIN, PASSWORD)
    return slow, _model_with_image(console, name, slow)


def _model_with_image(console, name: str, image: str) -> int:
    r = console.call("POST", "/api/models", json={
        "name": name, "engine": "llamacpp", "image": image, "source": "tiny.gguf", "device": "cpu",
        "extra_args": "-t 1 --poll 0"})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _stop(page, console, name: str, model_id: int) -> None:
    page.locator(f"#model-row-{name} .act-stop").click()
    console.wait_model(model_id, "stopped")


def test_pull_on_the_system_page_shows_progress_then_start(console, page, registry, docker_client, pulled_images):
    slow, model_id = _model_on_a_new_image(console, registry, docker_client, pulled_images, "pulled")
    sign_in(page, console.url)
    page.goto(console.url + "/system")
    row = page.locator(".image-row", has_text=slow)
    expect(row.locator(".image-missing")).to_be_visible()
    row.locator(".pull-image").click()
    expect(row.locator(".pull-progress")).to_be_visible()
    expect(row.locator(".pull-text")).to_contain_text(re.compile(r"\d+ MB of \d+ MB"))
    texts = set()
    for _ in range(8):  # the bar's figures move while the admin watches
        texts.add(row.locator(".pull-text").inner_text())
        page.wait_for_timeout(250)
    page.screenshot(path=str(ARTIFACTS / "pull_in_progress.png"), full_page=True)
    assert len(texts) >= 3, f"the progress text did not move: {texts}"
    page.goto("about:blank")  # the page goes away; the pull does not
    page.wait_for_timeout(500)
    page.goto(console.url + "/system")
    row = page.locator(".image-row", has_text=slow)
    expect(row.locator(".image-present")).to_be_visible(timeout=60_000)
    assert docker_client.images.get(slow)
    page.goto(console.url + "/models")
    page.locator("#model-row-pulled .act-start").click()
    expect(page.locator("#model-row-pulled")).to_contain_text("running", timeout=60_000)
    _stop(page, console, "pulled", model_id)


def test_start_on_a_missing_image_offers_the_pull_and_starts_nothing_itself(console, page, registry, docker_client,
                                                                            pulled_images):
    slow, model_id = _model_on_a_new_image(console, registry, docker_client, pulled_images, "offered")
    sign_in(page, console.url)
    page.locator("#model-row-offered .act-start").click()
    offer = page.locator("#pull-offer")
    expect(offer).to_be_visible()
    expect(offer).to_contain_text(slow)
    assert console.model(model_id)["state"] == "stopped"  # the offer changed nothing
    assert not docker_client.containers.list(all=True, filters={"label": f"{LABEL_MODEL_ID}={model_id}"})
    offer.locator(".pull-image").click()
    expect(offer.locator(".pull-progress")).to_be_visible()
    expect(offer.locator(".pull-text")).to_contain_text(re.compile(r"\d+ MB of \d+ MB"))
    expect(offer.locator("#offer-start")).to_be_visible(timeout=60_000)
    page.screenshot(path=str(ARTIFACTS / "pull_offer_done.png"), full_page=True)
    assert console.model(model_id)["state"] == "stopped"  # pulled, and still not started
    offer.locator("#offer-start").click()
    expect(offer).to_be_hidden()
    expect(page.locator("#model-row-offered")).to_contain_text("running", timeout=60_000)
    _stop(page, console, "offered", model_id)


def test_the_form_says_whether_the_image_is_on_the_engine(console, page):
    sign_in(page, console.url)
    page.goto(console.url + "/models/new")
    here = page.locator("#form-image")
    expect(here).to_contain_text(LLAMA_IMAGE)
    expect(here.locator(".image-present")).to_be_visible()
    page.locator("#field-engine").click()
    page.get_by_role("option", name="vllm", exact=True).click()
    expect(here).to_contain_text("vllm/vllm-openai:latest")  # the default: never on the test engine
    expect(here.locator(".image-missing")).to_be_visible()
    expect(here.locator(".pull-image")).to_be_visible()
