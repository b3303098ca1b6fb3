"""One reconciler at a time when several console processes share a database.

PostgreSQL: a session-level advisory lock on a connection this process keeps open; when
the process dies its connection closes and another process gets the lock at its next try.
Anything else (SQLite): a lease row that the holder renews; another process takes it over
once `expires_at` has passed, or at once when the holder is provably gone: its process no
longer exists on this host, or the container it ran in no longer runs on the engine (the
README's upgrade: `docker rm -f cortex`, then `docker run` of the new image). A holder that
may still live (another host, an engine that does not answer) is waited out.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import uuid
from datetime import timedelta
from typing import Callable, Optional

import sqlalchemy as sa

from cortex_app.hosting import container_id_from_mountinfo
from cortex_app.models import LeaderLease as LeaseRow, utcnow

log = logging.getLogger(__name__)
LEASE_NAME = "reconciler"
ADVISORY_KEY = 0x636F7274  # "cort"
_CONTAINER_ID = re.compile(r"^[0-9a-f]{64}$")


def _pid_namespace() -> str:
    """Which pid namespace (and boot) this process lives in: pids are only comparable within one."""
    try:
        ns = os.readlink("/proc/self/ns/pid").split("[")[-1].rstrip("]")
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()[:8]
        return f"{ns}.{boot}"
    except OSError:
        return "unknown"


def _host() -> str:
    """This console's container id when it runs in one, else the hostname."""
    try:
        with open("/proc/self/mountinfo") as f:
            cid = container_id_from_mountinfo(f.read())
    except OSError:
        cid = None
    return cid or socket.gethostname()


def _start_time(pid: int) -> Optional[str]:
    """When process (or thread) `pid` started, in clock ticks since boot; None if there is none.
    A pid plus its start time names one process for good: pids (and thread ids, which kill(2)
    also accepts) are reused, start times within one boot are not."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def holder_id() -> str:
    """host:pid:pid-namespace:start-time-random"""
    start = _start_time(os.getpid()) or "0"
    return f"{_host()}:{os.getpid()}:{_pid_namespace()}:{start}-{uuid.uuid4().hex[:6]}"


def holder_is_dead(holder: str, me: str) -> bool:
    """A lease written by a process that no longer exists: in this very pid namespace and boot
    (a crashed console restarting on the same machine), or in an earlier run of this very
    container (a restarted container gets a new pid namespace, and runs one console). No need
    to wait for the lease to expire then. Anywhere else (another container, another host)
    only the expiry tells."""
    parts = holder.split(":")
    if holder == me or len(parts) != 4 or not parts[1].isdigit():
        return False
    host, pid_text, namespace, tail = parts
    my_host, _, my_namespace, _ = (me.split(":") + ["", "", "", ""])[:4]
    if host != my_host:
        return False
    if namespace != my_namespace:
        # Same host name, another pid namespace: only a container id proves it is our container.
        return bool(_CONTAINER_ID.match(host)) and my_namespace != "unknown"
    if namespace == "unknown":
        return False
    pid = int(pid_text)
    if pid == os.getpid():
        return True  # our pid in our namespace under another holder id: that process is gone
    started = _start_time(pid)
    if started is None:
        return True
    # The pid is in use, but by another process (or a thread) than the holder, when the start
    # time it recorded differs. A recycled namespace number makes this the usual case after a
    # container restart: the new console's own threads take the old console's pids.
    recorded = tail.split("-", 1)[0] if "-" in tail else None
    return recorded is not None and recorded != started


def describe_holder(holder: str) -> str:
    """A holder id as an admin reads it: which process on which host or in which container."""
    parts = holder.split(":")
    if len(parts) != 4 or not parts[1].isdigit():
        return holder
    host, pid = parts[0], parts[1]
    if _CONTAINER_ID.match(host):
        return f"process {pid} in container {host[:12]}"
    return f"process {pid} on host {host}"


def lease_holder(db: sa.Engine) -> Optional[str]:
    """Who holds the lease row (SQLite); None where nobody does or the lock is PostgreSQL's."""
    if db.dialect.name == "postgresql":
        return None
    table = LeaseRow.__table__
    with db.connect() as conn:
        return conn.execute(sa.select(table.c.holder).where(table.c.name == LEASE_NAME,
                                                            table.c.expires_at >= utcnow())).scalar()


def holder_container(holder: str) -> Optional[str]:
    """The container id a holder ran in, if it ran in one."""
    host = holder.split(":", 1)[0]
    return host if _CONTAINER_ID.match(host) else None


class LeaderLease:
    def __init__(self, db: sa.Engine, *, ttl_s: float = 30.0, holder: Optional[str] = None,
                 container_running: Optional[Callable[[str], Optional[bool]]] = None):
        """container_running(id): does that container run on the engine (None: cannot tell)."""
        self.db = db
        self.ttl_s = ttl_s
        self.holder = holder or holder_id()
        self.container_running = container_running
        self._pg_conn: Optional[sa.Connection] = None
        self.is_leader = False

    @property
    def _postgres(self) -> bool:
        return self.db.dialect.name == "postgresql"

    def acquire_or_renew(self) -> bool:
        """Try to be (or stay) the leader; True if this process is it now."""
        try:
            self.is_leader = self._pg() if self._postgres else self._row()
        except sa.exc.SQLAlchemyError as exc:
            log.warning("leader lease: database error, not leading this round: %s", exc)
            self._drop_pg()
            self.is_leader = False
        return self.is_leader

    def _pg(self) -> bool:
        if self._pg_conn is not None:
            try:
                self._pg_conn.execute(sa.text("SELECT 1"))
                self._pg_conn.commit()  # never sit "idle in transaction" (servers may kill that)
                return True  # the lock lives as long as this connection
            except sa.exc.SQLAlchemyError:
                self._drop_pg()
        conn = self.db.connect()
        got = False
        try:
            got = bool(conn.execute(sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": ADVISORY_KEY}).scalar())
            conn.commit()
        finally:
            if got:
                self._pg_conn = conn
            else:
                conn.close()
        return got

    def _drop_pg(self) -> None:
        if self._pg_conn is not None:
            try:
                self._pg_conn.invalidate()
            finally:
                self._pg_conn = None

    def _row(self) -> bool:
        now = utcnow()
        until = now + timedelta(seconds=self.ttl_s)
        table = LeaseRow.__table__
        with self.db.begin() as conn:
            current = conn.execute(sa.select(table.c.holder).where(table.c.name == LEASE_NAME)).scalar()
            takeable = [table.c.holder == self.holder, table.c.expires_at < now]
            if current is not None and current != self.holder and self._gone(current):
                takeable.append(table.c.holder == current)
            taken = conn.execute(table.update().where(
                table.c.name == LEASE_NAME, sa.or_(*takeable),
            ).values(holder=self.holder, expires_at=until)).rowcount
            if taken:
                return True
            exists = conn.execute(sa.select(table.c.name).where(table.c.name == LEASE_NAME)).first()
            if exists:
                return False
        try:
            with self.db.begin() as conn:
                conn.execute(table.insert().values(name=LEASE_NAME, holder=self.holder, expires_at=until))
            return True
        except sa.exc.IntegrityError:
            return False  # another process inserted it first

    def _gone(self, holder: str) -> bool:
        if holder_is_dead(holder, self.holder):
            return True
        theirs, mine = holder_container(holder), holder_container(self.holder)
        if theirs is None or mine is None or theirs == mine or self.container_running is None:
            return False
        # Another container held it. Only an engine that runs this console's own container can
        # vouch that the other one is gone (a console on another engine, sharing the file, is
        # not "gone" just because this engine never heard of it).
        return self.container_running(mine) is True and self.container_running(theirs) is False

    def release(self) -> None:
        if self._postgres:
            if self._pg_conn is not None:
                try:
                    self._pg_conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": ADVISORY_KEY})
                    self._pg_conn.close()
                finally:
                    self._pg_conn = None
        else:
            table = LeaseRow.__table__
            with self.db.begin() as conn:
                conn.execute(table.delete().where(table.c.name == LEASE_NAME, table.c.holder == self.holder))
        self.is_leader = False
