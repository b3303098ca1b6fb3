"""Host id -> the DockerRuntime that drives that host's engine: the one place the lifecycle,
the reconciler and the pages get a host's engine from.

Host 1 is the console's own DOCKER_HOST (the runtime the console was built with). Another
host's runtime is made on first use from its row (endpoint and sealed credentials,
hosts.target_of) and kept; it is made anew when the row's endpoint or credentials change,
and closed when the host is removed.
"""

from __future__ import annotations

import hashlib
import threading
from typing import Optional

import sqlalchemy as sa

from cortex_app import hosts
from cortex_app.models import Host
from cortex_app.runtime.docker import DockerRuntime
from cortex_app.settings import Settings

REMOTE_TIMEOUT_S = 30.0  # one call to a remote engine (a stop waits its own grace on top)
SAMPLER_TIMEOUT_S = 15.0  # one call of a GPU sampler's or an ingress's upkeep
PAGE_TIMEOUT_S = 3.0  # one read a page asks of another host (a model's logs): pages never wait on a host


def credentials_key(host: Host) -> str:
    """Changes when the host's endpoint or credentials do: its runtime is then made anew."""
    material = "\0".join(x or "" for x in (host.endpoint, host.tls_ca, host.tls_cert, host.tls_key, host.ssh_key,
                                           host.ssh_host_key))
    return hashlib.sha256(material.encode()).hexdigest()


class HostRuntimes:
    def __init__(self, db: sa.Engine, settings: Settings, local: DockerRuntime):
        self.db, self.settings, self.local = db, settings, local
        self._remote: dict[object, tuple[str, DockerRuntime]] = {}  # host id (or a lister's slot) -> (key, runtime)
        self._lock = threading.Lock()

    @property
    def instance(self) -> Optional[str]:
        return self.local.instance

    def get(self, host_id: Optional[int]) -> DockerRuntime:
        """The runtime of host `host_id` (HostNotFound when there is no such host)."""
        if host_id in (None, hosts.LOCAL_HOST_ID):
            return self.local
        return self.of(hosts.get_host(self.db, host_id))

    def of(self, host: Host) -> DockerRuntime:
        """The runtime of this host row (no query)."""
        return self._made(host, host.id, REMOTE_TIMEOUT_S)

    def lister(self, host: Host, timeout: float) -> DockerRuntime:
        """A runtime of its own for the reconcile pass's list of that host, whose calls give up
        after `timeout`: a list that hung on a silent host ends near its deadline, rather than
        holding a thread and the next passes' lists behind it for the full timeout."""
        return self._made(host, ("list", host.id), timeout)

    def page_reader(self, host_id: Optional[int]) -> DockerRuntime:
        """A runtime of its own for what a page reads from a host (a model's logs), whose calls
        give up after PAGE_TIMEOUT_S: a silent host costs a page that long at most, and never
        holds up the reconciler's calls."""
        if host_id in (None, hosts.LOCAL_HOST_ID):
            return self.local
        return self._made(hosts.get_host(self.db, host_id), ("page", host_id), PAGE_TIMEOUT_S)

    def sampling(self, host: Host) -> DockerRuntime:
        """A runtime of its own for the host's GPU sampler (gpu_samplers.py): its upkeep and its
        log stream never share a connection with the reconciler's calls."""
        return self._made(host, ("gpu", host.id), SAMPLER_TIMEOUT_S)

    def ingress(self, host: Host) -> DockerRuntime:
        """A runtime of its own for the host's ingress upkeep (cortex_app/ingress)."""
        return self._made(host, ("ingress", host.id), SAMPLER_TIMEOUT_S)

    def drop_lister(self, host_id: int) -> None:
        """The host's list failed (no answer in time, or unreachable): its next list connects
        afresh, so it waits on no connection that hung while the host was silent."""
        with self._lock:
            old = self._remote.pop(("list", host_id), None)
        if old is not None:
            old[1].close()

    def release(self, host_id: int) -> Optional[DockerRuntime]:
        """Hand back the host's sampler runtime, made anew at the next `sampling` (a connection
        that died, or a host forgotten); the caller closes it."""
        with self._lock:
            old = self._remote.pop(("gpu", host_id), None)
        return old[1] if old is not None else None

    def _made(self, host: Host, slot, timeout: float) -> DockerRuntime:
        if host.id == hosts.LOCAL_HOST_ID or host.endpoint is None:
            return self.local
        key = credentials_key(host)
        with self._lock:
            old = self._remote.get(slot)
            if old is not None and old[0] == key:
                return old[1]
            rt = DockerRuntime(hosts.target_of(host, self.settings), timeout=timeout,
                               extra_labels=self.local.extra_labels, instance=self.local.instance)
            self._remote[slot] = (key, rt)
        if old is not None:
            old[1].close()
        return rt

    def forget(self, host_id: int) -> None:
        """The host was removed: close its runtimes."""
        with self._lock:
            slots = (host_id, ("list", host_id), ("gpu", host_id), ("page", host_id), ("ingress", host_id))
            olds = [self._remote.pop(slot) for slot in slots if slot in self._remote]
        for _, rt in olds:
            rt.close()

    def close(self) -> None:
        with self._lock:
            olds, self._remote = list(self._remote.values()), {}
        for _, rt in olds:
            rt.close()
