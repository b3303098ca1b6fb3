"""Hosts page in Chromium: the console's own engine is listed and checked; an ssh host with a
key its sshd refuses is not added and the page says why; with the right key the page shows
the host key's fingerprint to compare and fills the key in; confirmed, the host is added, its
host key pinned and shown as a fingerprint (never the private key), then removed. And the GPUs page
shows a remote host's GPUs, read by the sampler the console keeps there."""

import httpx
import pytest
from playwright.sync_api import expect

from cortex_app.runtime.endpoints import fingerprint
from tests.e2e.conftest import ADMIN, PASSWORD, sign_in
from tests.engines import copy_images
from tests.hostbed import RemoteHost, ssh_keypair

SMI_IMAGE = "cortex-test/nvidia-smi-standin:latest"


@pytest.fixture(scope="module")
def console(start_console, docker_host):
    return start_console(DOCKER_HOST=docker_host, CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD,
                         CORTEX_GPU_SAMPLER_IMAGE=SMI_IMAGE)


@pytest.fixture(scope="module")
def ssh_host():
    h = RemoteHost("cxh-e2e", 9, tls=False, ssh=True)
    try:
        yield h.up()
    finally:
        h.down()


def test_add_check_and_remove_an_ssh_host(console, page, ssh_host):
    sign_in(page, console.url)
    page.goto(console.url + "/hosts")
    local = page.locator(".host-row", has_text="local")
    expect(local.locator(".host-state")).to_contain_text("reachable", timeout=30_000)
    expect(local.locator(".host-version")).not_to_be_empty()
    local.locator(".host-check").click()
    expect(page.get_by_text("Docker Engine", exact=False).first).to_be_visible()

    page.locator("#host-kind").get_by_role("radio", name="ssh").click()
    page.locator("#host-name").fill("gpu-ssh")
    page.locator("#host-endpoint").fill(ssh_host.ssh_url)
    page.locator("#host-ssh-key").fill(ssh_keypair()[0])  # a key its sshd does not know
    page.locator("#host-add").click()
    expect(page.locator("#host-error")).to_contain_text("refused the key")
    expect(page.locator(".host-row")).to_have_count(1)

    page.locator("#host-ssh-key").fill(ssh_host.ssh_key)
    page.locator("#host-add").click()
    # The key the machine shows is filled in, with its fingerprint to compare; nothing saved yet.
    expect(page.locator("#host-error")).to_contain_text(fingerprint(ssh_host.ssh_host_key))
    expect(page.locator("#host-ssh-host-key")).to_have_value(ssh_host.ssh_host_key)
    expect(page.locator(".host-row")).to_have_count(1)
    page.locator("#host-add").click()  # confirmed
    row = page.locator(".host-row", has_text="gpu-ssh")
    expect(row.locator(".host-state")).to_contain_text("reachable")
    expect(row).to_contain_text("host key SHA256:")
    expect(page.locator("#host-ssh-key")).to_have_value("")  # the form forgets it
    assert ssh_host.ssh_key.splitlines()[1] not in page.content()  # no part of the key itself

    row.locator(".host-remove").click()
    page.locator(".host-remove-confirm").click()
    expect(page.locator(".host-row")).to_have_count(1)


def test_the_gpus_page_groups_a_remote_hosts_gpus_under_it(console, page, docker_host):
    h = RemoteHost("cxh-e2egpu", 12, tls=True, ssh=False, gpus=True)  # stand-in toolkit hook
    try:
        h.up()
        copy_images(docker_host, h.socket, [SMI_IMAGE])
        token = httpx.post(console.url + "/api/session", json={"username": ADMIN, "password": PASSWORD}).json()["token"]
        made = httpx.post(console.url + "/api/hosts", headers={"Authorization": f"Bearer {token}"}, timeout=30,
                          json={"name": "gpu-box", "endpoint": h.tls_url, "tls_ca": h.pki.ca_pem,
                                "tls_cert": h.client_cert, "tls_key": h.client_key})
        assert made.status_code == 201, made.text
        sign_in(page, console.url)
        page.goto(console.url + "/gpus")
        expect(page.locator("#gpu-notice")).to_contain_text("No NVIDIA driver")  # this host has none
        cards = page.locator("#remote-gpus .gpu-card")
        for _ in range(10):  # the hosts job runs every 10 s; the page reads at load (Refresh)
            if cards.count() == 2:
                break
            page.wait_for_timeout(2_000)
            page.get_by_role("button", name="Refresh").click()
        expect(cards).to_have_count(2)
        expect(cards.first).to_contain_text("gpu-box")
        expect(cards.first).to_contain_text("NVIDIA H200")
        expect(cards.nth(1)).to_contain_text("9,074 / 143,771 MiB")
    finally:
        h.down()
