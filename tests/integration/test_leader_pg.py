"""Two console processes on one PostgreSQL database: only one leads; when it dies (SIGKILL),
the other takes over at its next try."""

import os
import signal
import subprocess
import sys
import time

import sqlalchemy as sa

from cortex_app.reconcile.leader import LeaderLease
from tests.conftest import ROOT, migrate

HOLDER = """
import sys, time, sqlalchemy as sa
from cortex_app.reconcile.leader import LeaderLease
lease = LeaderLease(sa.create_engine(sys.argv[1]))
print("leader" if lease.acquire_or_renew() else "follower", flush=True)
time.sleep(600)
"""


def test_advisory_lock_single_leader_and_takeover(fresh_postgres_db):
    migrate(fresh_postgres_db)
    other = subprocess.Popen([sys.executable, "-c", HOLDER, fresh_postgres_db], cwd=ROOT,
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert other.stdout.readline().strip() == "leader"
        me = LeaderLease(sa.create_engine(fresh_postgres_db), ttl_s=3)
        assert me.acquire_or_renew() is False
        assert me.acquire_or_renew() is False  # still not: the holder lives
        os.killpg(other.pid, signal.SIGKILL)
        other.wait(10)
        t0 = time.monotonic()
        while not me.acquire_or_renew():
            assert time.monotonic() - t0 < me.ttl_s, "no takeover within one lease period"
            time.sleep(0.1)
        assert me.acquire_or_renew() is True  # renewing keeps it
        me.release()
    finally:
        if other.poll() is None:
            os.killpg(other.pid, signal.SIGKILL)
            other.wait(10)
