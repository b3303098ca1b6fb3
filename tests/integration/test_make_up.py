"""`make up` as the README has it, in a fresh clone: it changes no tracked file, a second start
with nothing changed compiles nothing and serves in seconds, a `make up` while the console
runs with other settings says so (and changes nothing), and `make restart` applies them."""

from __future__ import annotations

import os
import subprocess
import time

import httpx

from tests.conftest import ROOT, free_port


def _make(clone, target: str, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(["make", "-s", target], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_make_up_in_a_fresh_clone_leaves_it_clean_and_restarts_fast(tmp_path, docker_host):
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    # This checkout's venv and bun, so the clone installs nothing (a fresh machine's install is
    # what CI's own `make test` does); the links are the test's, so git is told to overlook them.
    for name in (".venv", ".tools"):
        (clone / name).symlink_to(ROOT / name)
    (clone / ".git" / "info" / "exclude").write_text("/.venv\n/.tools\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
    env |= {"CORTEX_PORT": str(port), "DOCKER_HOST": docker_host}
    try:
        first = _make(clone, "up", env)
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"listening on 0.0.0.0:{port}" in first.stdout
        assert (clone / ".run" / "cortex.settings").stat().st_mode & 0o077 == 0  # hashes of secrets: owner only
        again = _make(clone, "up", env)  # nothing changed: nothing to do
        assert again.returncode == 0 and "already running" in again.stderr and "with these settings" in again.stderr
        other = _make(clone, "up", env | {"CORTEX_RECONCILE_INTERVAL": "7"})
        assert other.returncode != 0 and "other settings than this shell's: CORTEX_RECONCILE_INTERVAL;" in other.stderr, \
            other.stderr
        assert "make restart" in other.stderr

        assert _make(clone, "down", env).returncode == 0
        t0 = time.monotonic()
        second = _make(clone, "up", env)
        second_s = time.monotonic() - t0
        assert second.returncode == 0 and "compiling" not in second.stdout, second.stdout
        print(f"second make up served in {second_s:.1f} s")
        assert second_s < 10, second_s

        restarted = _make(clone, "restart", env | {"CORTEX_LISTEN": "127.0.0.1"})
        assert restarted.returncode == 0 and f"listening on 127.0.0.1:{port}" in restarted.stdout, restarted.stdout
        assert httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=10).status_code == 200
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=clone,
                                capture_output=True, text=True, check=True).stdout
        assert status == "", status
    finally:
        _make(clone, "down", env, timeout=120)
