"""reconcile/leader.py on SQLite: one holder at a time, takeover once the lease expires.
(The PostgreSQL advisory-lock path is in tests/integration/test_leader_pg.py.)"""

import time

import sqlalchemy as sa

from cortex_app.reconcile.leader import LeaderLease
from tests.conftest import migrate


def test_one_leader_then_takeover_after_expiry(tmp_path):
    url = f"sqlite:///{tmp_path}/c.db"
    migrate(url)
    db = sa.create_engine(url)
    a = LeaderLease(db, ttl_s=0.5, holder="a")
    b = LeaderLease(db, ttl_s=0.5, holder="b")
    assert a.acquire_or_renew() is True
    assert b.acquire_or_renew() is False
    assert a.acquire_or_renew() is True  # renewing keeps it
    time.sleep(0.7)  # a "died": it stopped renewing
    assert b.acquire_or_renew() is True and b.is_leader
    assert a.acquire_or_renew() is False
    b.release()
    assert a.acquire_or_renew() is True


def test_a_dead_holder_on_this_host_is_taken_over_at_once(tmp_path):
    import socket
    import subprocess

    url = f"sqlite:///{tmp_path}/c.db"
    migrate(url)
    db = sa.create_engine(url)
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid that no longer runs
    from cortex_app.reconcile.leader import _pid_namespace

    crashed = LeaderLease(db, ttl_s=300, holder=f"{socket.gethostname()}:{gone.pid}:{_pid_namespace()}:abc123")
    assert crashed.acquire_or_renew() is True
    fresh = LeaderLease(db, ttl_s=300)
    assert fresh.acquire_or_renew() is True
    fresh.release()
    elsewhere = LeaderLease(db, ttl_s=300, holder=f"{socket.gethostname()}:{gone.pid}:othernamespace:x")
    assert elsewhere.acquire_or_renew() is True
    # Same host name and a dead-looking pid, but another pid namespace (another container):
    # not ours to judge, wait for the expiry.
    assert LeaderLease(db, ttl_s=300).acquire_or_renew() is False


def test_an_earlier_run_of_this_very_container_is_taken_over_at_once(tmp_path):
    """A restarted container keeps its id and gets a new pid namespace: a lease held under
    that id from another namespace is the console it replaces (it runs one console)."""
    from cortex_app.reconcile.leader import holder_is_dead

    cid = "ab" * 32
    me = f"{cid}:7:ns-new.boot:aaaaaa"
    assert holder_is_dead(f"{cid}:7:ns-old.boot:bbbbbb", me) is True
    # Another container, or a plain host name in another namespace: only the expiry tells.
    assert holder_is_dead(f"{'cd' * 32}:7:ns-old.boot:bbbbbb", me) is False
    assert holder_is_dead("vmhost:7:ns-old.boot:bbbbbb", "vmhost:7:ns-new.boot:aaaaaa") is False


def test_a_reused_pid_or_a_thread_id_is_not_mistaken_for_the_holder():
    """Seen in a container restart: the pid namespace got the old one's number back, and the
    new console's threads took the old console's pids. The start time tells them apart."""
    import os
    import threading

    from cortex_app.reconcile.leader import _start_time, holder_id, holder_is_dead

    me = holder_id()
    host, _, ns, _ = me.split(":")
    parent = os.getppid()
    alive = f"{host}:{parent}:{ns}:{_start_time(parent)}-abcdef"
    assert holder_is_dead(alive, me) is False  # that very process runs
    assert holder_is_dead(f"{host}:{parent}:{ns}:1-abcdef", me) is True  # same pid, another process
    done = threading.Event()
    worker = threading.Thread(target=done.wait)
    worker.start()
    try:
        tid = worker.native_id
        assert holder_is_dead(f"{host}:{tid}:{ns}:1-abcdef", me) is True  # a thread holds that pid now
    finally:
        done.set()
        worker.join()


def test_a_console_container_that_no_longer_runs_leaves_the_lease_at_once(tmp_path):
    """The README's upgrade, as a new user tried it: `docker rm -f cortex`, then `docker run` of
    the new image on the same volume. The old console's container is gone from the engine; its
    lease must not block the new console's boot pass (it did for 30 s, then the new one took
    over as a follower and kept every model running). A live one is still respected, and so
    is one the engine cannot vouch for."""
    url = f"sqlite:///{tmp_path}/c.db"
    migrate(url)
    db = sa.create_engine(url)
    old, new = "ab" * 32, "cd" * 32
    engine = {new: True, old: False}  # what the engine says: the new console runs, the old one does not

    def lease(cid):
        return LeaderLease(db, ttl_s=300, holder=f"{cid}:1:ns.boot:1-aaaaaa", container_running=engine.get)

    assert lease(old).acquire_or_renew() is True
    assert lease(new).acquire_or_renew() is True  # at once, not after 300 s
    engine[old] = True
    assert lease(old).acquire_or_renew() is False  # a running holder is respected
    engine[new] = None  # the engine cannot say (unreachable): wait for the expiry
    assert lease(old).acquire_or_renew() is False
    # An engine that does not know this console's own container (it runs on another one) cannot
    # vouch that the holder is gone either.
    third = "ef" * 32
    engine.update({new: False, third: False})
    assert LeaderLease(db, ttl_s=300, holder=f"{third}:1:ns.boot:1-aaaaaa",
                       container_running=engine.get).acquire_or_renew() is False
    # Without an engine to ask (a console on the host), only the expiry or the pid tells.
    assert LeaderLease(db, ttl_s=300, holder="host:1:ns.boot:1-aaaaaa").acquire_or_renew() is False


def test_the_holder_is_named_readably_and_read_back(tmp_path):
    from cortex_app.reconcile.leader import describe_holder, lease_holder

    assert describe_holder("vm:20214:4026531836:22410bc5-16cce8") == "process 20214 on host vm"
    cid = "0123456789ab" * 5 + "cdef"  # a container id, as the holder records it
    assert describe_holder(f"{cid}:7:4026532000:99-abcdef") == "process 7 in container 0123456789ab"
    assert describe_holder("something else") == "something else"
    url = f"sqlite:///{tmp_path}/c.db"
    migrate(url)
    db = sa.create_engine(url)
    assert lease_holder(db) is None
    a = LeaderLease(db, ttl_s=5, holder="vm:1:2:3-x")
    a.acquire_or_renew()
    assert lease_holder(db) == "vm:1:2:3-x"
    a.release()
    assert lease_holder(db) is None
