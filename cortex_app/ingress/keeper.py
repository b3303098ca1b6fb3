"""Keeping each remote host's ingress: one nginx container per reachable remote host (labelled
`cortex.ingress` and with this install's id, restart policy `no`), on the host-local network
its models share, publishing the one port of that host through which the console reaches them.

The console is the only thing that keeps it, like the GPU sampler: made before the first model
starts there (`ensure`, from the Start itself), made again when it died, was removed, or was
made with another CA, address, image or configuration (the ingress job, every few seconds, and
any Start), extra ones removed; removing the host removes it and the network. Its port, read
off the engine, is kept in memory: a model's address (`Lifecycle.base_url_of`) needs no call.
Another console (a follower) only reads which port the running one has.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Optional

import sqlalchemy as sa

from cortex_app import hosting, hosts
from cortex_app.engines.spec import LABEL_INGRESS_CONFIG
from cortex_app.ingress import nginx, pki
from cortex_app.models import Host
from cortex_app.runtime.docker import ContainerConflict, DockerRuntime, DockerRuntimeError
from cortex_app.runtimes import HostRuntimes
from cortex_app.settings import Settings

log = logging.getLogger(__name__)
KEEP_EVERY_S = 5.0  # the ingress job's period
ANSWERS_WITHIN_S = 5.0  # a new ingress accepts the console's TLS within this long
PULL_TIMEOUT_S = 600.0


class IngressError(DockerRuntimeError):
    """The host's ingress cannot be made; the message says what to change."""


@dataclass(frozen=True)
class Door:
    container_id: str
    port: int


class Ingresses:
    def __init__(self, db: sa.Engine, settings: Settings, runtimes: HostRuntimes):
        self.db, self.settings, self.runtimes = db, settings, runtimes
        self._doors: dict[int, Door] = {}
        self._host_locks: dict[int, threading.Lock] = {}
        self._busy: set[int] = set()
        self._lock = threading.Lock()
        self._authority: Optional[pki.Authority] = None
        self._tls: Optional[ssl.SSLContext] = None

    @property
    def network(self) -> str:
        return nginx.network_name(self.runtimes.instance)

    def authority(self) -> pki.Authority:
        with self._lock:
            if self._authority is None:
                self._authority = pki.load(self.db)
            return self._authority

    def tls(self) -> ssl.SSLContext:
        """The one client context probes, scrapes and the gateway reach ingresses with."""
        auth = self.authority()
        with self._lock:
            if self._tls is None:
                self._tls = auth.client_context()
            return self._tls

    def port(self, host_id: int) -> Optional[int]:
        """The port the host's ingress is published on, as last seen (None: none known yet)."""
        door = self._doors.get(host_id)
        return door.port if door is not None else None

    def _host_lock(self, host_id: int) -> threading.Lock:
        with self._lock:
            return self._host_locks.setdefault(host_id, threading.Lock())

    # --- keeping one host's ----------------------------------------------------------------

    def ensure(self, host: Host, make: bool = True) -> Optional[int]:
        """The host's ingress runs as it should: its published port. `make` (the leader, and any
        Start): make it when missing or made otherwise, and remove the others; else only find
        the running one (None if there is none). DockerRuntimeError (IngressError) says why not."""
        if host.id == hosts.LOCAL_HOST_ID or host.endpoint is None:
            raise IngressError("the console's own host has no ingress: its models publish on loopback")
        if not host.address:
            raise IngressError(f"host {host.name} has no address its models can be reached at")
        with self._host_lock(host.id):
            rt = self.runtimes.ingress(host)
            auth = self.authority()
            image = self.settings.ingress_image
            want = nginx.config_hash(auth.fingerprint, host.address, image)
            found = rt.ingresses()
            keep = next((c for c in found if c.running and c.labels.get(LABEL_INGRESS_CONFIG) == want), None)
            if not make:
                if keep is None:
                    self._doors.pop(host.id, None)
                    return None
                return self._note(host.id, rt, keep.id)
            for c in found:
                if c is not keep:
                    rt.discard(c.id, grace_s=0)  # dead, made otherwise, or a second one
            if keep is not None:
                return self._note(host.id, rt, keep.id)
            return self._make(host, rt, auth, image, want)

    def _note(self, host_id: int, rt: DockerRuntime, container_id: str) -> int:
        door = self._doors.get(host_id)
        if door is not None and door.container_id == container_id:
            return door.port
        port = rt.published_port(container_id, nginx.CONTAINER_PORT)
        if port is None:
            raise IngressError("the ingress there publishes no port")
        self._doors[host_id] = Door(container_id, port)
        return port

    def _make(self, host: Host, rt: DockerRuntime, auth: pki.Authority, image: str, want: str) -> int:
        self._doors.pop(host.id, None)
        rt.ensure_network(self.network)
        if not rt.image_present(image):
            log.info("ingress: pulling %s on %s", image, host.name)
            cancel = threading.Event()
            timer = threading.Timer(PULL_TIMEOUT_S, cancel.set)
            timer.start()
            try:
                for _ in rt.pull(image, cancel):
                    pass
            except DockerRuntimeError as exc:
                raise IngressError(f"the ingress image {image} is not on host {host.name} and could not be pulled "
                                   f"({exc}); pull it there (Images page), or set CORTEX_INGRESS_IMAGE to one it "
                                   "has") from None
            finally:
                timer.cancel()
            if not rt.image_present(image):
                raise IngressError(f"the ingress image {image} is not on host {host.name} and could not be pulled "
                                   f"within {PULL_TIMEOUT_S:g} s; pull it there (Images page), or set "
                                   "CORTEX_INGRESS_IMAGE to one it has")
        reach = host.address.strip("[]")
        cert, key = auth.issue(f"cortex ingress {host.name}", address=reach)
        try:
            info, port = rt.run_ingress(
                nginx.container_name(self.runtimes.instance), image, network=self.network,
                publish_host=hosting.publish_interface(host.address), container_port=nginx.CONTAINER_PORT,
                files=nginx.files(auth.cert_pem, cert, key), folder=nginx.FOLDER, command=nginx.COMMAND,
                labels={LABEL_INGRESS_CONFIG: want})
        except ContainerConflict:
            raise IngressError(f"another ingress is being made on host {host.name} right now; try again") from None
        if not _answers(reach, port, self.tls(), ANSWERS_WITHIN_S):
            logs = rt.logs_tail(info.id, 20)
            rt.discard(info.id, grace_s=0)
            raise IngressError(f"the ingress on host {host.name} did not answer within {ANSWERS_WITHIN_S:g} s"
                               + (f": {logs.strip()[-300:]}" if logs else ""))
        log.info("ingress started on %s (%s), port %d", host.name, info.id[:12], port)
        self._doors[host.id] = Door(info.id, port)
        return port

    # --- every host, on the job's pace -----------------------------------------------------

    def sync(self, keep: bool = True, deadline_s: float = 20.0) -> None:
        """One round: every reachable remote host's ingress kept (`keep`: the leader) or found;
        hosts removed forgotten. Each host in a thread of its own; one still busy from an
        earlier round (an engine that hangs) is skipped."""
        rows = [h for h in hosts.list_hosts(self.db) if h.endpoint is not None]
        for gone in set(self._doors) - {h.id for h in rows}:
            self._doors.pop(gone, None)
        todo = []
        for h in rows:
            if not h.reachable or not h.address:
                continue
            with self._lock:
                if h.id in self._busy:
                    continue
                self._busy.add(h.id)
            todo.append(h)
        if not todo:
            return
        pool = ThreadPoolExecutor(max_workers=len(todo), thread_name_prefix="ingress")
        futures = [pool.submit(self._sync_host, h, keep) for h in todo]
        wait(futures, timeout=deadline_s)
        pool.shutdown(wait=False)

    def _sync_host(self, host: Host, keep: bool) -> None:
        try:
            self.ensure(host, make=keep)
        except DockerRuntimeError as exc:
            log.info("ingress on %s: %s", host.name, exc)
        finally:
            with self._lock:
                self._busy.discard(host.id)

    def forget(self, host_id: int) -> None:
        self._doors.pop(host_id, None)


def _answers(address: str, port: int, tls: ssl.SSLContext, within: float) -> bool:
    """Whether the ingress at address:port completes a TLS handshake with the console's
    certificate and answers HTTP (its 404 for `/`) within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((address, port), timeout=1.0) as raw:
                with tls.wrap_socket(raw, server_hostname=address) as s:
                    s.settimeout(1.0)
                    s.sendall(f"GET / HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n".encode())
                    if s.recv(16).startswith(b"HTTP/1.1 "):
                        return True
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.05)
    return False
