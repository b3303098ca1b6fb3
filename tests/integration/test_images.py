"""Pulls the console runs (cortex_app/pulls.py) against a real registry on loopback: progress
from the engine's own messages, cancel, and the errors an admin must be able to act on."""

import time

import pytest

from cortex_app import journal
from cortex_app.images import CANCELLED, DONE, FAILED, canonical
from cortex_app.pulls import Pulls
from cortex_app.runtime.docker import DockerRuntime
from tests.conftest import BUSYBOX_IMAGE
from tests.integration.conftest import wait_for
from tests.registry import Registry


@pytest.fixture
def pulls(migrated_db, docker_host):
    runtime = DockerRuntime(docker_host)
    yield Pulls(migrated_db, runtime)
    runtime.close()


def _watch(pulls, image, timeout=60) -> list[int]:
    """The percentages the pages would have shown, sampled as often as the client tick."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = pulls.views()[canonical(image)]
        seen.append(view["percent"])
        if not view["active"]:
            return seen
        time.sleep(0.1)
    raise AssertionError(f"pull of {image} still running after {timeout} s")


def test_a_pull_reports_progress_as_it_goes_and_ends_present(pulls, registry, docker_client, pulled_images,
                                                             migrated_db):
    image = registry.push_new(docker_client, BUSYBOX_IMAGE, "cortex-test/pull-me", size=16_000_000)
    slow = image.replace(registry.host, registry.slow(6_000_000))  # ~3 s: a pull one can watch
    pulled_images.append(slow)
    assert not pulls.runtime.image_present(slow)
    t0 = time.monotonic()
    pulls.start(slow, actor="admin:test (browser)")
    assert pulls.start(slow, actor="admin:other").actor == "admin:test (browser)"  # one pull per image
    seen = _watch(pulls, slow)
    took = time.monotonic() - t0
    progress = pulls.wait(slow, 10)  # the thread's end: the journal is written too
    assert progress.state == DONE, progress.error
    assert pulls.runtime.image_present(slow)
    between = sorted({p for p in seen if 0 < p < 100})
    print(f"\npull of 16 MB at 6 MB/s: {took:.1f} s, {len(seen)} samples, percentages seen {between}")
    assert len(between) >= 5, f"progress moved in too few steps: {seen}"
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    assert pulls.views()[canonical(slow)]["text"].startswith("pulled in ")
    entry = journal.recent(migrated_db)[0]
    assert (entry.kind, entry.subject) == ("image pulled", canonical(slow))
    assert "admin:test (browser)" in entry.message


def test_cancel_stops_the_pull_and_keeps_nothing(pulls, registry, docker_client, pulled_images, migrated_db):
    image = registry.push_new(docker_client, BUSYBOX_IMAGE, "cortex-test/pull-me", size=16_000_000)
    slow = image.replace(registry.host, registry.slow(2_000_000))  # ~8 s
    pulled_images.append(slow)
    pulls.start(slow, actor="admin:test")
    wait_for(lambda: pulls.views()[canonical(slow)]["percent"] >= 5, 30)
    assert pulls.cancel(slow)
    progress = pulls.wait(slow, 30)
    assert progress.state == CANCELLED
    assert not pulls.cancel(slow)  # nothing under way any more
    time.sleep(10)  # longer than the rest of the pull would have taken
    assert not pulls.runtime.image_present(slow), "the engine went on pulling after cancel"
    assert journal.recent(migrated_db)[0].kind == "image cancelled"


def test_cancel_ends_a_pull_the_registry_stalls(pulls, registry, docker_client, pulled_images):
    """The registry stops sending mid-layer: the engine reports nothing more, and Cancel must
    still end the pull at once (its connection is shut, not left to a read that never returns)."""
    image = registry.push_new(docker_client, BUSYBOX_IMAGE, "cortex-test/pull-me", size=1_000_000)
    stalled = image.replace(registry.host, registry.slow(1))  # the first 16 kB, then a byte a second
    pulled_images.append(stalled)
    pulls.start(stalled, actor="admin:test")
    wait_for(lambda: pulls.views()[canonical(stalled)]["text"].endswith("layers done"), 30)
    time.sleep(1.0)  # stalled: no message comes
    assert pulls.views()[canonical(stalled)]["active"]
    t0 = time.monotonic()
    assert pulls.cancel(stalled)
    progress = pulls.wait(stalled, 10)
    took = time.monotonic() - t0
    print(f"\ncancel of a stalled pull ended it in {took * 1000:.0f} ms")
    assert progress.state == CANCELLED and took < 2, (progress.state, took)


def test_a_tag_the_registry_lacks_says_so(pulls, registry):
    image = f"{registry.host}/cortex-test/nothing-here:1"
    pulls.start(image, actor="admin:test")
    progress = pulls.wait(image, 30)
    assert progress.state == FAILED
    assert progress.error.startswith(f"{image} is not in the registry {registry.host}")


def test_a_registry_nobody_answers_at_says_so(pulls):
    from tests.conftest import free_port

    image = f"127.0.0.1:{free_port()}/cortex-test/x:1"
    pulls.start(image, actor="admin:test")
    progress = pulls.wait(image, 60)
    assert progress.state == FAILED
    assert "cannot be reached from the Docker Engine" in progress.error


def test_a_registry_that_wants_credentials_says_how_to_give_them(pulls, tmp_path, docker_client):
    reg = Registry(tmp_path / "auth-registry", users={"alice": "s3cret-pass"})
    try:
        image = reg.push_new(docker_client, BUSYBOX_IMAGE, "cortex-test/private", size=1000,
                             auth={"username": "alice", "password": "s3cret-pass"})
        pulls.start(image, actor="admin:test")
        progress = pulls.wait(image, 30)
        assert progress.state == FAILED
        assert progress.error.startswith(f"the registry {reg.host} wants credentials for {image}: "
                                         f"run `docker login {reg.host}`")
        assert not pulls.runtime.image_present(image)
    finally:
        reg.close()
