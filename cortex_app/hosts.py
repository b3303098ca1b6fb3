"""Hosts: the Docker Engines Cortex drives. Added (after a connection check that says exactly
what failed), listed (never their credentials), checked (one at a time, or all at once with a
deadline each, so one host that hangs never delays another), removed.

Host 1 is the console's own DOCKER_HOST; it cannot be removed and its endpoint is whatever
DOCKER_HOST says at each start.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime
from typing import Callable, Optional, Union

import sqlalchemy as sa
from cryptography import x509
from sqlmodel import Session, select

from cortex_app import journal, webhooks
from cortex_app.ingress import nginx
from cortex_app.models import Host, Model, utcnow
from cortex_app.runtime import gpu
from cortex_app.runtime.docker import DockerRuntime, DockerRuntimeError, check_ssh_key, engine_info
from cortex_app.runtime.endpoints import Endpoint, EndpointInvalid, endpoint, fingerprint, normalize_url
from cortex_app.runtime.types import EngineInfo
from cortex_app.settings import Settings

log = logging.getLogger(__name__)
LOCAL_HOST_ID = 1
CHECK_TIMEOUT_S = 5.0  # a connection check (adding, or the Check button) waits this long for an answer
POLL_TIMEOUT_S = 3.0  # the periodic check of every host: each gets this long, all at once
# A host checked on demand this recently (the Check button, POST /api/hosts/{id}/check) is not
# asked again: that check's result is the answer, so no caller can hammer an engine.
CHECK_AGAIN_AFTER_S = 2.0
# (database, host id) -> (monotonic time, result) of its last check on demand; and the lock held
# while that host is checked on demand.
_on_demand: dict[tuple[str, int], tuple[float, Host]] = {}
_on_demand_locks: dict[tuple[str, int], threading.Lock] = {}
_on_demand_lock = threading.Lock()
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.:\[\]-]{1,255}$")
_FOLDER = re.compile(r"^/[A-Za-z0-9._/@+-]{0,510}$")
_WRITES = threading.Lock()  # adds and removes in this process, one at a time (name uniqueness)

Check = Callable[[Union[str, Endpoint], float], EngineInfo]


class HostInvalid(ValueError):
    """The host as given cannot be added (or removed); nothing was saved. `problem` is set when
    the connection check is what failed."""

    def __init__(self, message: str, problem: Optional[str] = None, seen_host_key: str = ""):
        super().__init__(message)
        self.problem = problem
        self.seen_host_key = seen_host_key  # host-key-unconfirmed: the key to confirm


class HostNotFound(LookupError):
    pass


def target_of(host: Host, settings: Settings) -> Union[str, Endpoint]:
    """How to reach the host's engine: the console's DOCKER_HOST, or its Endpoint."""
    if host.endpoint is None:
        return settings.docker_host
    return Endpoint(host.endpoint, tls_ca=host.tls_ca or "", tls_cert=host.tls_cert or "",
                    tls_key=host.tls_key or "", ssh_key=host.ssh_key or "", ssh_host_key=host.ssh_host_key or "",
                    unreadable=_unreadable(host))


def _unreadable(host: Host) -> str:
    """The credentials a remote host was added with (TLS: all three; ssh: its key) that read
    back empty: sealed with another secret key (secretbox.unseal gives None)."""
    if host.endpoint is None:
        return ""
    if host.endpoint.startswith("ssh://"):
        return "" if host.ssh_key else "its ssh key"
    missing = [what for what, value in (("CA certificate", host.tls_ca), ("client certificate", host.tls_cert),
                                        ("client key", host.tls_key)) if not value]
    return f"its {', '.join(missing)}" if missing else ""


def list_hosts(db: sa.Engine) -> list[Host]:
    with Session(db, expire_on_commit=False) as session:
        return list(session.exec(select(Host).order_by(Host.id)).all())


def get_host(db: sa.Engine, host_id: int) -> Host:
    with Session(db, expire_on_commit=False) as session:
        host = session.get(Host, host_id)
    if host is None:
        raise HostNotFound(f"no host {host_id}")
    return host


def _credential(host: Host) -> str:
    """What the row says about its credentials: never the secrets themselves."""
    if host.endpoint is None:
        return "the console's DOCKER_HOST"
    if host.tls_cert:
        try:
            cert = x509.load_pem_x509_certificate(host.tls_cert.encode())
            return f"TLS client certificate, valid until {cert.not_valid_after_utc:%Y-%m-%d}"
        except ValueError:
            return "TLS client certificate"
    if host.ssh_key is not None or host.endpoint.startswith("ssh://"):
        return f"ssh key; host key {fingerprint(host.ssh_host_key or '') or 'not pinned yet'}"
    return ""


def _when(t: Optional[datetime]) -> str:
    return t.strftime("%Y-%m-%d %H:%M:%S") if t else ""


def host_json(host: Host, settings: Settings, engines: bool = True) -> dict:
    """A host as the API and the Hosts page show it. `engines` false (a read token): nothing of
    where its engine listens or how it is reached (its endpoint, address, credential, folders,
    the last error's words), only its name, state, problem and GPUs."""
    state = "unchecked" if host.reachable is None else "reachable" if host.reachable else "unreachable"
    where = {"endpoint": host.endpoint or settings.docker_host, "address": host.address or "",
             "credential": _credential(host), "models_dir": host.models_dir or str(settings.models_dir),
             "error": host.last_error or ""} if engines else {}
    return {"id": host.id, "name": host.name, "local": host.endpoint is None, **where,
            "state": state, "engine_version": host.engine_version or "", "problem": host.problem or "",
            "gpus": host.gpus, "checked_at": _when(host.checked_at), "last_seen_at": _when(host.last_seen_at)}


def _gpus_of(host: Host) -> Optional[list[dict]]:
    """The local host's GPUs through NVML; None for a remote host, whose inventory its GPU
    sampler writes (gpu_samplers.py): a check never writes over it."""
    if host.endpoint is not None:
        return None
    status = gpu.read_gpus()
    return [{"index": g.index, "name": g.name, "memory_total_mib": g.memory_total_mib} for g in status.gpus]


def _validated(db: sa.Engine, settings: Settings, name: str, url: str, address: str, creds: dict) -> tuple:
    name = (name or "").strip()
    if not _NAME.match(name):
        raise HostInvalid("name: 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    try:
        ep = endpoint(url, **creds)
        if ep.kind == "ssh":
            check_ssh_key(ep.ssh_key)
    except EndpointInvalid as exc:
        raise HostInvalid(str(exc)) from None
    try:
        own = normalize_url(settings.docker_host)
    except EndpointInvalid:
        own = settings.docker_host
    address = ((address or "").strip() or ep.hostname).strip("[]")  # a unix socket's host has none: ""
    if address and not _ADDRESS.match(address):
        raise HostInvalid("address: a host name or IP address where this host's models answer")
    with Session(db) as session:
        for other in session.exec(select(Host)).all():
            if other.name.lower() == name.lower():
                raise HostInvalid(f"name: there is a host called {other.name} already")
            if (other.endpoint or own) == ep.url:
                raise HostInvalid(f"endpoint: {ep.url} is host {other.name} already")
    return name, ep, address


# Folders a model container must never have mounted (every engine container gets the models
# dir and the HF cache): the whole filesystem, the system's own, and what holds the Docker
# socket (root on that machine to whoever can write to it).
_SYSTEM_DIRS = frozenset({"/", "/var", "/var/lib", "/home", "/srv", "/opt", "/mnt", "/media", "/tmp"})
# Whole trees: the system's programs and libraries, root's home, the engines' own state.
_SYSTEM_TREES = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr", "/root", "/boot", "/dev", "/etc",
                 "/proc", "/sys", "/run", "/var/run", "/var/lib/docker", "/var/lib/containerd")


def _folder(field: str, value: str) -> Optional[str]:
    """A folder on the host's machine (None: the console's own path)."""
    value = (value or "").strip()
    if not value:
        return None
    if not _FOLDER.match(value) or ".." in value.split("/"):
        raise HostInvalid(f"{field}: an absolute path on that machine, such as /srv/models")
    path = "/" + "/".join(part for part in value.split("/") if part not in ("", "."))  # "//etc/." is /etc
    if path in _SYSTEM_DIRS or any(path == t or path.startswith(t + "/") for t in _SYSTEM_TREES) \
            or any(part.startswith(".") for part in path.split("/")):  # ~/.ssh, ~/.docker, ~/.config
        raise HostInvalid(f"{field}: {path} is the whole filesystem, a system folder, a hidden one (~/.ssh) or one "
                          "that holds the Docker socket; every model container there mounts it. Give a folder of "
                          "its own, such as /srv/models")
    return path


def add_host(db: sa.Engine, settings: Settings, *, name: str, endpoint_url: str, address: str = "",
             tls_ca: str = "", tls_cert: str = "", tls_key: str = "", ssh_key: str = "", ssh_host_key: str = "",
             models_dir: str = "", hf_cache_dir: str = "", check: Check = engine_info) -> Host:
    """Check the connection, then save the host; HostInvalid (bad input, or the check failed,
    in words that say what failed) saves nothing. An ssh host given without its host key is
    not saved either: the key its first connection saw is handed back (problem
    host-key-unconfirmed) for the admin to compare and give. `models_dir`, `hf_cache_dir`: that machine's folders its models
    mount (default: the same paths as the console's)."""
    creds = dict(tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, ssh_key=ssh_key, ssh_host_key=ssh_host_key)
    with _WRITES:
        name, ep, address = _validated(db, settings, name, endpoint_url, address, creds)
    models_dir, hf_cache_dir = _folder("models_dir", models_dir), _folder("hf_cache_dir", hf_cache_dir)
    info = check(ep, CHECK_TIMEOUT_S)  # outside the lock: an ssh handshake takes a while
    if not info.reachable:
        raise HostInvalid(f"not added: {info.error}", info.problem)
    if ep.kind == "ssh" and not ep.ssh_host_key:
        # Trust on first use would pin whatever machine answered this once (a forged one
        # included): the admin confirms the key before anything is saved.
        seen = info.seen_host_key
        raise HostInvalid(f"not added yet: {ep.hostname} shows host key {fingerprint(seen)}. Compare it with "
                          "`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` on that machine; if they match, "
                          "add the host again with this host key (the form has filled it in)",
                          "host-key-unconfirmed", seen_host_key=seen)
    now = utcnow()
    host = Host(name=name, endpoint=ep.url, address=address or None, tls_ca=ep.tls_ca or None,
                tls_cert=ep.tls_cert or None, tls_key=ep.tls_key or None, ssh_key=ep.ssh_key or None,
                ssh_host_key=ep.ssh_host_key or None, reachable=True,
                models_dir=models_dir, hf_cache_dir=hf_cache_dir,
                engine_version=(info.version or "")[:64], checked_at=now, last_seen_at=now, gpus=[])
    with _WRITES:
        _validated(db, settings, name, endpoint_url, address, creds)  # nobody added it meanwhile
        with Session(db, expire_on_commit=False) as session:
            session.add(host)
            session.commit()
    journal.record(db, "host.added", name, f"{ep.url}: Docker Engine {info.version}")
    return host


def sampler_name(instance: Optional[str]) -> str:
    """The name of this install's GPU sampler container on a remote host (gpu_samplers.py)."""
    return f"cortex-gpu-sampler-{(instance or 'default')[:12]}"


def remove_host(db: sa.Engine, settings: Settings, host_id: int, instance: Optional[str]) -> Host:
    """Forget a host. This install's GPU sampler, ingress and models' network there are removed
    first (best effort: an engine that does not answer keeps them until it restarts; restart
    policy `no`)."""
    if host_id == LOCAL_HOST_ID:
        raise HostInvalid("the console's own engine (DOCKER_HOST) is always a host; it cannot be removed")
    host = get_host(db, host_id)
    _refuse_if_models(db, host)
    rt = DockerRuntime(target_of(host, settings), timeout=5, instance=instance)
    try:
        rt.remove_samplers()
        rt.remove_ingresses()
        rt.remove_network(nginx.network_name(instance))
    except DockerRuntimeError as exc:
        log.warning("hosts: could not remove the GPU sampler or the ingress from %s: %s", host.name, exc)
    finally:
        rt.close()
    with _WRITES, Session(db, expire_on_commit=False) as session:
        host = session.get(Host, host_id)
        if host is None:
            raise HostNotFound(f"no host {host_id}")
        # Only while no model belongs to it, in the same statement: a move or an auto start
        # that landed on it meanwhile keeps it (their own writes check that it still exists).
        gone = session.execute(sa.delete(Host).where(
            Host.id == host_id, ~sa.exists().where(Model.host_id == host_id))).rowcount
        session.commit()
    if not gone:
        _refuse_if_models(db, host)
        raise HostInvalid(f"host {host.name} is in use; try again")
    journal.record(db, "host.removed", host.name, host.endpoint or "")
    return host


def _refuse_if_models(db: sa.Engine, host: Host) -> None:
    with Session(db) as session:
        names = session.exec(select(Model.name).where(Model.host_id == host.id).order_by(Model.name)).all()
    if names:
        raise HostInvalid(f"models belong to host {host.name}: {', '.join(names)}; move them to another host "
                          "(or delete them) first")


def _record(db: sa.Engine, settings: Settings, host: Host, info: EngineInfo, gpus: Optional[list]) -> Host:
    """Write what a check found; a change of reachability is journaled and sent as a webhook."""
    now = utcnow()
    values = dict(reachable=info.reachable, checked_at=now, problem=None if info.reachable else info.problem,
                  last_error=None if info.reachable else (info.error or "")[:500])
    if info.reachable:
        values.update(last_seen_at=now, engine_version=(info.version or "")[:64])
        if gpus is not None:
            values["gpus"] = gpus
    with Session(db, expire_on_commit=False) as session:
        session.execute(sa.update(Host).where(Host.id == host.id).values(**values))
        session.commit()
        fresh = session.get(Host, host.id)
    if host.reachable is not None and host.reachable != info.reachable and fresh is not None:
        kind = "host.reachable" if info.reachable else "host.unreachable"
        why = f"host {host.name}: " + ("its Docker Engine answers again" if info.reachable else info.error or "")
        journal.record(db, kind, host.name, why)
        webhooks.enqueue_system(db, kind, why, settings.public_url)
    return fresh or host


def check_host(db: sa.Engine, settings: Settings, host_id: int, check: Check = engine_info,
               timeout: float = CHECK_TIMEOUT_S) -> Host:
    host = get_host(db, host_id)
    info = check(target_of(host, settings), timeout)
    return _record(db, settings, host, info, _gpus_of(host) if info.reachable else None)


def check_on_demand(db: sa.Engine, settings: Settings, host_id: int, check: Check = engine_info) -> Host:
    """What the Check button and the check route do: check the host now, unless this console
    checked it on demand within CHECK_AGAIN_AFTER_S (that check's result is the answer).
    Checks of one host wait for each other: ten clicks at once make one connection."""
    key = (str(db.url), host_id)
    with _on_demand_lock:
        lock = _on_demand_locks.setdefault(key, threading.Lock())
    with lock:
        last = _on_demand.get(key)
        if last is not None and time.monotonic() - last[0] < CHECK_AGAIN_AFTER_S:
            return last[1]
        row = check_host(db, settings, host_id, check)
        _on_demand[key] = (time.monotonic(), row)
        return row


@dataclass(frozen=True)
class HostsPass:
    duration_s: float
    checked: dict  # host id -> seconds its check took
    late: list  # host ids that missed the deadline (marked unreachable)


def check_all(db: sa.Engine, settings: Settings, check: Check = engine_info,
              timeout: float = POLL_TIMEOUT_S) -> HostsPass:
    """Every host at once, each with `timeout` to answer; one that does not (a hung engine, a
    cut network) is marked unreachable at the deadline, whatever its check is still doing, and
    the others are recorded as they finish."""
    hosts = list_hosts(db)
    t0 = time.perf_counter()
    took: dict[int, float] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, len(hosts)), thread_name_prefix="host-check")
    closed = threading.Event()  # the deadline passed: checks still under way are not recorded
    record_lock = threading.Lock()

    def one(host: Host) -> None:
        start = time.perf_counter()
        info = check(target_of(host, settings), timeout)
        gpus = _gpus_of(host) if info.reachable else None
        with record_lock:
            if closed.is_set():
                return
            took[host.id] = time.perf_counter() - start
            _record(db, settings, host, info, gpus)

    futures = {pool.submit(one, h): h for h in hosts}
    wait(futures, timeout=timeout + 1)
    with record_lock:
        closed.set()
    pool.shutdown(wait=False)  # a check past its deadline finishes on its own, unrecorded
    late = []
    for f, host in futures.items():
        if host.id in took:
            continue
        if f.done() and f.exception() is not None:
            log.warning("hosts: checking %s failed: %s", host.name, f.exception())
            continue
        late.append(host.id)
        _record(db, settings, host, EngineInfo(host=host.endpoint or settings.docker_host, reachable=False,
                                               error=f"unreachable: no answer within {timeout:g} s",
                                               problem="unreachable"), None)
    return HostsPass(time.perf_counter() - t0, dict(took), late)
