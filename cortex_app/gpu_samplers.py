"""Remote hosts' GPUs, read through their own Docker Engines: no agent of Cortex's own.

On each reachable remote host the console keeps one small sampler container (labelled
`cortex.gpu-sampler` and with this install's id, restart policy `no`, every GPU attached)
running `nvidia-smi --query-gpu=… --format=csv -l 5`, and follows its output. The console
is the only thing that keeps it: a sampler that died or was removed is made again at the next
sync (every hosts check, 10 s), extra ones are removed, and removing the host removes it. The
local host needs none: it reads NVML (runtime/gpu.py).

What it reads lands in memory (the GPUs page's figures) and, when the inventory changes (GPU
names and sizes), in the host's row (the Hosts page, the fit check to come).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import sqlalchemy as sa
from sqlmodel import Session

from cortex_app import hosts
from cortex_app.models import Host
from cortex_app.runtime.docker import DockerRuntime, DockerRuntimeError
from cortex_app.runtime.gpu import GpuReading, GpuStatus, parse_smi_line, smi_command
from cortex_app.runtimes import HostRuntimes
from cortex_app.settings import Settings

log = logging.getLogger(__name__)
SAMPLE_EVERY_S = 5
STALE_AFTER_S = 3 * SAMPLE_EVERY_S + 5  # readings older than this are not shown as current


@dataclass
class HostGpus:
    """One remote host's GPUs as its sampler last said, or why there are none."""

    host_id: int
    name: str
    readings: dict[int, GpuReading] = field(default_factory=dict)
    at: float = 0.0  # when the last line came
    notice: str = ""

    @property
    def current(self) -> list[GpuReading]:
        if time.time() - self.at > STALE_AFTER_S:
            return []
        return [self.readings[i] for i in sorted(self.readings)]


class GpuSamplers:
    def __init__(self, db: sa.Engine, settings: Settings, instance: Optional[str],
                 runtimes: Optional[HostRuntimes] = None):
        """`runtimes`: the console's (each host's sampler gets a runtime of its own there)."""
        self.db, self.settings, self.instance = db, settings, instance
        self.runtimes = runtimes or HostRuntimes(db, settings, DockerRuntime(settings.docker_host, instance=instance))
        self._followers: dict[int, tuple[str, threading.Event, threading.Thread]] = {}  # host -> (container, ...)
        self._gpus: dict[int, HostGpus] = {}
        self._busy: set[int] = set()  # hosts a round is still working on
        self._retry_at: dict[int, tuple[int, float]] = {}  # host -> (failures in a row, when to try again)
        self._lock = threading.Lock()

    # --- what the pages read --------------------------------------------------------------

    def hosts(self) -> list[HostGpus]:
        with self._lock:
            return [HostGpus(g.host_id, g.name, dict(g.readings), g.at, g.notice) for g in self._gpus.values()]

    def status(self, host_id: int) -> GpuStatus:
        """A remote host's GPUs now, as the fit check and placement read them (NVML's shape);
        unavailable while its sampler has said nothing lately."""
        with self._lock:
            state = self._gpus.get(host_id)
            gpus = state.current if state is not None else []
            notice = state.notice if state is not None else "no GPU sampler on that host yet"
        return GpuStatus(available=bool(gpus), notice="" if gpus else notice or "no GPU readings yet", gpus=gpus)

    # --- keeping the samplers -------------------------------------------------------------

    def sync(self, keep: bool = True, deadline_s: float = 20.0) -> None:
        """One round over the hosts (a scheduler job of its own, every 10 s): every reachable
        remote host has exactly one running sampler, followed; hosts removed are forgotten
        (and, by the leader, their samplers removed). Hosts are kept at once, each in a thread
        of its own; a host still busy from an earlier round (an engine that hangs) is skipped,
        and the round waits at most `deadline_s` for the others.
        `keep`: make and remove samplers (the leader); else only follow the running one."""
        rows = [h for h in hosts.list_hosts(self.db) if h.endpoint is not None]
        with self._lock:
            known = set(self._gpus)
        for gone in known - {h.id for h in rows}:
            self._forget(gone, remove=keep)
        threads = []
        for host in rows:
            with self._lock:
                state = self._gpus.setdefault(host.id, HostGpus(host.id, host.name))
                state.name = host.name
                if host.id in self._busy or time.monotonic() < self._retry_at.get(host.id, (0, 0.0))[1]:
                    continue  # still at it, or failing: tried again after its backoff
                self._busy.add(host.id)
            t = threading.Thread(target=self._sync_host, args=(host, keep), name=f"gpu-sampler sync {host.name}",
                                 daemon=True)
            t.start()
            threads.append(t)
        end = time.monotonic() + deadline_s
        for t in threads:
            t.join(max(0.0, end - time.monotonic()))

    def _sync_host(self, host: Host, keep: bool) -> None:
        try:
            if not host.reachable:
                self._drop_runtime(host.id)  # a fresh connection when it answers again
                return
            self._keep(host, keep)
            with self._lock:
                self._retry_at.pop(host.id, None)
        except DockerRuntimeError as exc:
            self._drop_runtime(host.id)  # e.g. an ssh transport that died: the next round reconnects
            with self._lock:
                failures = self._retry_at.get(host.id, (0, 0.0))[0] + 1
                self._retry_at[host.id] = (failures, time.monotonic() + min(300.0, 10.0 * 2 ** (failures - 1)))
                if host.id in self._gpus:
                    self._gpus[host.id].notice = f"no GPU readings: {exc}"
            if failures == 1:
                log.info("gpu sampler on %s: %s", host.name, exc)
        finally:
            with self._lock:
                self._busy.discard(host.id)

    def _drop_runtime(self, host_id: int) -> None:
        rt = self.runtimes.release(host_id)
        if rt is not None:
            rt.close()

    def _keep(self, host: Host, make: bool) -> None:
        rt = self.runtimes.sampling(host)
        found = rt.samplers()
        running = [c for c in found if c.running]
        keep = running[0] if running else None
        if not make:
            if keep is None:
                return
        else:
            for c in found:
                if c is not keep:
                    rt.discard(c.id)  # a dead one, or a second one
        if keep is None:
            keep = rt.run_sampler(hosts.sampler_name(self.instance), self.settings.sampler_image,
                                  smi_command(SAMPLE_EVERY_S))
            log.info("gpu sampler started on %s (%s)", host.name, keep.id[:12])
        with self._lock:
            follower = self._followers.get(host.id)
            if follower is not None and follower[0] == keep.id and follower[2].is_alive():
                return
            if follower is not None:
                follower[1].set()
            stop = threading.Event()
            thread = threading.Thread(target=self._follow, args=(host.id, rt, keep.id, stop),
                                      name=f"gpu-sampler {host.name}", daemon=True)
            self._followers[host.id] = (keep.id, stop, thread)
        thread.start()

    def _follow(self, host_id: int, rt: DockerRuntime, container_id: str, stop: threading.Event) -> None:
        try:
            for line in rt.follow_lines(container_id, stop.is_set):
                reading = parse_smi_line(line)
                if reading is None:
                    if line.strip():
                        with self._lock:
                            if host_id in self._gpus:
                                self._gpus[host_id].notice = f"the sampler says: {line.strip()[:200]}"
                    continue
                self._note(host_id, reading)
        except DockerRuntimeError as exc:
            log.debug("gpu sampler stream of host %s ended: %s", host_id, exc)

    def _note(self, host_id: int, reading: GpuReading) -> None:
        with self._lock:
            state = self._gpus.get(host_id)
            if state is None:
                return
            before = {i: (r.name, r.memory_total_mib) for i, r in state.readings.items()}
            state.readings[reading.index] = reading
            state.at, state.notice = time.time(), ""
            after = {i: (r.name, r.memory_total_mib) for i, r in state.readings.items()}
            inventory = [{"index": i, "name": r.name, "memory_total_mib": r.memory_total_mib}
                         for i, r in sorted(state.readings.items())]
        if after != before:  # the inventory changed (first reading, a GPU more): the host's row says so
            with Session(self.db) as session:
                session.execute(sa.update(Host).where(Host.id == host_id).values(gpus=inventory))
                session.commit()

    def _forget(self, host_id: int, remove: bool = False) -> None:
        """A host no longer in the table. `remove`: its samplers go too (the leader; the Hosts
        page removed them already, unless a round made one meanwhile)."""
        with self._lock:
            follower = self._followers.pop(host_id, None)
            self._gpus.pop(host_id, None)
            self._retry_at.pop(host_id, None)
        if follower is not None:
            follower[1].set()
        rt = self.runtimes.release(host_id)
        if rt is None:
            return
        try:
            if remove:
                rt.remove_samplers()
        except DockerRuntimeError as exc:
            log.info("gpu sampler of a removed host left on its engine: %s", exc)
        finally:
            rt.close()

    def close(self) -> None:
        with self._lock:
            known = set(self._gpus)
        for host_id in known:
            self._forget(host_id)
