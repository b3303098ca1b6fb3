"""No secret at rest in clear: a run in Chromium that types the admin's password (first run
and sign-in), an HF token in the model form, and is shown a webhook secret and an API token
once, then stops the console. A scan of everything it could have written (the data dir with
the database, the run dir with the log, Reflex's .states and the frontend's .web/.builds
folders) finds none of them, nor the session token."""

import re
import time
from pathlib import Path

import httpx
from playwright.sync_api import expect

from tests.conftest import ROOT, VLLM_STANDIN_IMAGE
from tests.e2e.conftest import LOGIN_PAGE, HOME_PAGE, sign_in
from tests.unit.test_webhooks import Receiver

ADMIN, PASSWORD = "keeper", "typed-password-7Qx9"
HF_TOKEN = "hf_TypedInTheForm0123456789abcdefXYZ"


def _files(folder: Path, since: float = 0.0):
    if folder.is_dir():
        for path in folder.rglob("*"):
            try:
                if path.is_file() and not path.is_symlink() and path.stat().st_mtime >= since:
                    yield path
            except OSError:
                continue  # gone meanwhile


def test_nothing_typed_or_shown_is_kept_in_clear(start_console, docker_host, page):
    since = time.time() - 1
    console = start_console(DOCKER_HOST=docker_host, CORTEX_VLLM_IMAGE=VLLM_STANDIN_IMAGE)
    code = re.search(r"setup code ([A-Z0-9]{4}(?:-[A-Z0-9]{4}){3})", console.output).group(1)
    page.goto(console.url + "/setup")
    page.locator("#field-setup_code").fill(code)
    page.locator("#field-username").fill(ADMIN)
    page.locator("#field-password").fill(PASSWORD)
    page.locator("#field-confirm").fill(PASSWORD)
    page.locator("#create-admin").click()
    page.wait_for_url(HOME_PAGE)

    page.goto(console.url + "/models/new")
    page.locator("#field-engine").click()
    page.get_by_role("option", name="vllm").click()
    page.locator("#field-name").fill("gated")
    page.locator("#field-source").fill("org/gated-model")
    page.locator("#field-hf_token").fill(HF_TOKEN)
    page.locator("#save").click()
    page.wait_for_url(re.compile(r".*/models/\d+$"))

    receiver = Receiver()
    page.goto(console.url + "/settings")
    page.locator("#webhook-url").fill(receiver.url)
    page.locator("#add-endpoint").click()
    webhook_secret = page.locator("#shown-secret").inner_text()
    assert webhook_secret.startswith("whsec_")
    page.locator(".ping").first.click()
    expect(page.locator("#ping-result")).to_contain_text("delivered (HTTP 204")  # the console can still sign
    page.locator("#token-name").fill("scan")
    page.locator("#create-token").click()
    api_token = page.locator("#shown-token").inner_text()
    assert httpx.get(console.url + "/api/models", headers={"Authorization": f"Bearer {api_token}"}).status_code == 200
    page.locator("#sign-out").click()
    page.wait_for_url(LOGIN_PAGE)  # the sign-out loads the sign-in page by itself
    sign_in(page, console.url, ADMIN, PASSWORD)  # the password typed once more
    session = next(c["value"] for c in page.context.cookies() if c["name"] == "cortex_session")
    receiver.close()
    console.stop()  # whatever is written on the way out counts too

    secrets = {"password": PASSWORD, "HF token": HF_TOKEN, "webhook secret": webhook_secret,
               "webhook key": webhook_secret.removeprefix("whsec_"), "API token": api_token,
               "session token": session}  # (the setup code is in the log by design, and used up)
    assert not (ROOT / ".states").exists() or not any(_files(ROOT / ".states")), "page states on disk"
    scanned = [*_files(console.data_dir), *_files(console.run_dir), *_files(ROOT / ".states"),
               *_files(ROOT / ".web", since), *_files(ROOT / ".builds", since)]
    assert any(p.name == "cortex.db" for p in scanned) and any(p.name == "cortex.log" for p in scanned)
    found = []
    for path in scanned:
        data = path.read_bytes()
        found += [(what, str(path)) for what, value in secrets.items() if value.encode() in data]
    assert found == [], found
    print(f"scanned {len(scanned)} files, {sum(p.stat().st_size for p in scanned) / 1e6:.1f} MB: none in clear")
