"""Hosts page in Chromium: the console's own engine is listed and checked; an ssh host with a
key its sshd refuses is not added and the page says why; with the right key it is added, its
host key pinned and shown as a fingerprint (never the key), then removed."""

import pytest
from playwright.sync_api import expect

from tests.e2e.conftest import ADMIN, PASSWORD, sign_in
from tests.hostbed import RemoteHost, ssh_keypair


@pytest.fixture(scope="module")
def console(start_console, docker_host):
    return start_console(DOCKER_HOST=docker_host, CORTEX_ADMIN_USER=ADMIN, CORTEX_ADMIN_PASSWORD=PASSWORD)


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
    row = page.locator(".host-row", has_text="gpu-ssh")
    expect(row.locator(".host-state")).to_contain_text("reachable")
    expect(row).to_contain_text("host key SHA256:")
    expect(page.locator("#host-ssh-key")).to_have_value("")  # the form forgets it
    assert ssh_host.ssh_key.splitlines()[1] not in page.content()  # no part of the key itself

    row.locator(".host-remove").click()
    page.locator(".host-remove-confirm").click()
    expect(page.locator(".host-row")).to_have_count(1)
