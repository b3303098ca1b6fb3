"""What running models cost, followed live: one streaming stats reader per model container
(a thread each, on its own connection; the engine sends about one message a second), the
engines' /metrics scraped on the sampler's pace, and GPU memory per model from NVML's
process list. Everything lands in a ResourceHistory the pages read; nothing here blocks a
page or a tick, and a reader that fails only leaves its figures empty until the next sync."""

from __future__ import annotations

import logging
import threading
import time
from typing import Optional

from cortex_app.resources import (ResourceHistory, cpu_percent, gpu_memory_of, memory_bytes, parse_metrics,
                                  tokens_per_s)
from cortex_app.runtime.docker import DockerRuntime, DockerRuntimeError

log = logging.getLogger(__name__)


class ResourceSampler:
    def __init__(self, runtime: DockerRuntime, history: Optional[ResourceHistory] = None):
        self.runtime = runtime
        self.history = history or ResourceHistory()
        self._readers: dict[str, tuple[int, threading.Event]] = {}  # container id -> (model id, stop)
        self._tokens: dict[int, tuple[float, float]] = {}  # model id -> (time, tokens total) last scraped
        self._lock = threading.Lock()

    def follow(self, containers: dict[int, str], runtimes: Optional[dict[int, DockerRuntime]] = None) -> None:
        """Keep exactly one reader per (model id -> container id) given; stop the others and
        forget the figures of models no longer given. `runtimes`: the engine of each model on
        another host (model id -> its host's runtime); the others are on this one's."""
        runtimes = runtimes or {}
        wanted = {cid: mid for mid, cid in containers.items() if cid}
        with self._lock:
            for cid, (mid, stop) in list(self._readers.items()):
                if wanted.get(cid) != mid:
                    stop.set()
                    del self._readers[cid]
                    if containers.get(mid):  # the model runs in another container now
                        self.history.drop(mid)
            new = [(cid, mid) for cid, mid in wanted.items() if cid not in self._readers]
            for cid, mid in new:
                stop = threading.Event()
                self._readers[cid] = (mid, stop)
                threading.Thread(target=self._read, args=(mid, cid, stop, runtimes.get(mid, self.runtime)),
                                 name=f"stats {cid[:12]}",
                                 daemon=True).start()
            for mid in set(self._tokens) - set(containers):
                del self._tokens[mid]
        self.history.forget(set(containers))

    @property
    def readers(self) -> int:
        with self._lock:
            return len(self._readers)

    def _read(self, model_id: int, container_id: str, stop: threading.Event, rt: DockerRuntime) -> None:
        try:
            for msg in rt.stats(container_id, stop.is_set):
                cpu = cpu_percent(msg)
                if cpu is not None:
                    self.history.update(model_id, cpu_pct=cpu, mem_bytes=memory_bytes(msg))
        except Exception as exc:  # noqa: BLE001 - the engine went away mid-stream (urllib3's errors too)
            log.debug("stats of %s ended: %s", container_id[:12], exc)
        finally:
            with self._lock:  # the next sync starts a new reader if the container still runs
                if self._readers.get(container_id, (None, None))[1] is stop:
                    del self._readers[container_id]

    def record_metrics(self, model_id: int, engine: str, text: str, at: Optional[float] = None) -> None:
        """One scrape of a model's /metrics ("" when it did not answer)."""
        at = time.time() if at is None else at
        tokens, in_flight = parse_metrics(text, engine)  # "" (no answer): neither is known
        rate = None
        with self._lock:
            if tokens is None:
                self._tokens.pop(model_id, None)
            else:
                rate = tokens_per_s(self._tokens.get(model_id), (at, tokens))
                self._tokens[model_id] = (at, tokens)
        self.history.update(model_id, tokens_s=rate, in_flight=in_flight)

    def record_gpu(self, containers: dict[int, str], process_memory: dict[int, int]) -> None:
        """GPU memory per model from NVML's per-process figures (blocks: one `top` per container)."""
        if not process_memory:
            return
        for mid, cid in containers.items():
            try:
                pids = self.runtime.container_pids(cid)
            except DockerRuntimeError:
                continue
            self.history.update(mid, gpu_mem_bytes=gpu_memory_of(pids, process_memory))

    def close(self) -> None:
        self.follow({})
