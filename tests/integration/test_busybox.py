"""cortex-test/busybox for the fault cases later issues need: exit codes, and a process
that ignores SIGTERM (stop falls back to SIGKILL: 137) versus one run under init."""

import time

from tests.conftest import BUSYBOX_IMAGE


def test_exit_code_is_kept(docker_client, test_labels):
    c = docker_client.containers.run(BUSYBOX_IMAGE, ["sh", "-c", "echo dying; exit 3"], detach=True,
                                     labels=test_labels, restart_policy={"Name": "no"})
    assert c.wait(timeout=30)["StatusCode"] == 3
    assert c.logs().decode().strip() == "dying"


def test_sigterm_ignoring_pid1_is_killed_after_the_timeout(docker_client, test_labels):
    c = docker_client.containers.run(BUSYBOX_IMAGE, ["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
                                     detach=True, labels=test_labels, restart_policy={"Name": "no"})
    t0 = time.monotonic()
    c.stop(timeout=1)
    took = time.monotonic() - t0
    c.reload()
    assert c.attrs["State"]["ExitCode"] == 137
    assert took >= 1


def test_init_makes_stop_fast(docker_client, test_labels):
    c = docker_client.containers.run(BUSYBOX_IMAGE, ["sleep", "600"], detach=True, init=True,
                                     labels=test_labels, restart_policy={"Name": "no"})
    t0 = time.monotonic()
    c.stop(timeout=10)
    c.reload()
    assert c.attrs["State"]["ExitCode"] == 143
    assert time.monotonic() - t0 < 5
