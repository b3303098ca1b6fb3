"""The chaos harness's short form (bench/chaos.py), run by make test: the real console (make
up), the real engine (one this session may restart) and real models under overlapping
faults, every invariant checked all along. A fixed seed that goes through every kind of
fault once, then a random seed (printed, so a failure replays). Any violation fails the run."""

import os
import random
import subprocess
import sys

from tests.conftest import ROOT, free_port

FIXED_SEED = 20261128
MINUTES = "1.0"
PORT = str(free_port())  # one port for both runs: the second reuses the first's compiled frontend


def run_chaos(engine, *args: str) -> str:
    env = {**os.environ, **engine.env, "DOCKER_HOST": engine.host}
    r = subprocess.run([sys.executable, str(ROOT / "bench/chaos.py"), "--restartable", "--minutes", MINUTES,
                        "--port", PORT, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    print(r.stdout[-6000:], r.stderr[-3000:])
    assert r.returncode == 0, f"chaos found violations (or failed):\n{r.stdout[-6000:]}\n{r.stderr[-3000:]}"
    assert " 0 violations" in r.stdout
    return r.stdout


def test_chaos_fixed_seed_covers_every_fault(restartable_engine, docker_client):
    out = run_chaos(restartable_engine, "--seed", str(FIXED_SEED), "--cover")
    for kind in ("docker_kill", "forge", "engine_restart", "console_sigkill", "console_sigkill_mid_start"):
        assert f"\n{kind} " in out, f"{kind} never happened:\n{out}"


def test_chaos_random_seed(restartable_engine, docker_client):
    seed = random.SystemRandom().randrange(1, 10**6)
    print(f"chaos: random seed {seed} (replay: python bench/chaos.py --seed {seed} --minutes {MINUTES})")
    run_chaos(restartable_engine, "--seed", str(seed))
