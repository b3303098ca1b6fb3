"""A model on another host, in Chromium against the production build: chosen in the form's Host
select, started from the Models page on that machine's engine (a real dockerd behind TLS in a
network namespace, the real llama-server), reached at that host's address; its host cut off
shows as `host unreachable` (state kept), and it comes back by itself when the host does."""

import shutil

import docker
import httpx
import pytest
from playwright.sync_api import expect

from tests.conftest import INGRESS_IMAGE, LLAMA_IMAGE
from tests.e2e.conftest import ADMIN, PASSWORD, sign_in
from tests.hostbed import remote_host


@pytest.fixture(scope="module")
def box(docker_host):
    with remote_host("cxh-e2ebox", 17, images=(LLAMA_IMAGE, INGRESS_IMAGE), images_from=docker_host) as h:
        yield h


@pytest.fixture(scope="module")
def console(start_console, tmp_path_factory, tiny_gguf, docker_host, box):
    models = tmp_path_factory.mktemp("models")
    shutil.copy(tiny_gguf, models / "tiny.gguf")  # the box mounts the same path (one filesystem here)
    c = start_console(DOCKER_HOST=docker_host, CORTEX_MODELS_DIR=str(models), CORTEX_LLAMACPP_IMAGE=LLAMA_IMAGE,
                      CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD)
    token = httpx.post(c.url + "/api/session", json={"username": ADMIN, "password": PASSWORD}).json()["token"]
    made = httpx.post(c.url + "/api/hosts", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                      json={"name": "box", "endpoint": box.tls_url, "tls_ca": box.pki.ca_pem,
                            "tls_cert": box.client_cert, "tls_key": box.client_key})
    assert made.status_code == 201, made.text
    return c


def test_a_model_placed_on_another_host_through_the_form(console, page, box, docker_client):
    sign_in(page, console.url)
    page.goto(console.url + "/models/new")
    page.locator("#field-name").fill("far")
    page.locator("#field-source").fill("tiny.gguf")
    page.locator("#field-host").click()
    expect(page.get_by_role("option")).to_have_text(["local", "box", "auto"])
    page.get_by_role("option", name="box", exact=True).click()
    page.locator("#toggle-advanced").click()
    page.locator("#field-extra_args").fill("-t 1 --poll 0")
    page.locator("#save").click()
    page.wait_for_url("**/models/*")
    expect(page.locator("#detail-host")).to_have_text("on box")

    page.goto(console.url + "/models")
    row = page.locator("#model-row-far")
    expect(row.locator(".row-host")).to_have_text("box")
    row.locator(".act-start").click()
    expect(row.locator(".state-badge")).to_have_text("running", timeout=30_000)
    # Reached through the console's gateway: the host's ingress answers nothing but the console.
    expect(row.locator("code").nth(1)).to_have_text(f"http://localhost:{console.url.rsplit(':', 1)[1]}/v1")
    expect(row).not_to_contain_text(box.ip)
    remote = docker.DockerClient(base_url=box.socket, timeout=30)
    try:
        assert len(remote.containers.list(filters={"label": "cortex.managed=true"})) == 1
        assert docker_client.containers.list(filters={"label": "cortex.model-name=far"}) == []
        expect(row).to_contain_text("healthy", timeout=20_000)

        box.cut()
        try:  # the hosts check (every 10 s, 3 s deadline) finds it silent; the page follows
            expect(row.locator(".host-unreachable")).to_be_visible(timeout=30_000)
            expect(row.locator(".state-badge")).to_have_text("running")  # state kept, not failed
        finally:
            box.restore()
        expect(row.locator(".host-unreachable")).to_have_count(0, timeout=30_000)
        expect(row).to_contain_text("healthy", timeout=30_000)
        expect(row.locator(".state-badge")).to_have_text("running")

        row.locator(".act-stop").click()
        expect(row.locator(".state-badge")).to_have_text("stopped", timeout=30_000)
        assert remote.containers.list(all=True, filters={"label": "cortex.managed=true"}) == []
    finally:
        remote.close()
