"""What a running model costs, decided in plain functions: CPU and memory from the Docker
Engine's stats messages, tokens/s and requests in flight from the engine's own Prometheus
`/metrics`, GPU memory from NVML's processes; and a bounded history per model that the
pages read. No Docker, NVML or HTTP here (`runtime` and `probes` fetch; `sampler` runs)."""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import Iterable, Optional

KEEP = 300  # samples per model: 10 minutes at the 2 s the sampler records at
FRESH_S = 15.0  # figures older than this are not shown as a model's current ones

# The engine's own series (summed over their labels): generated tokens (a counter) and
# requests being processed now (a gauge). llama-server needs --metrics, which Cortex passes.
ENGINE_SERIES = {
    "llamacpp": ("llamacpp:tokens_predicted_total", "llamacpp:requests_processing"),
    "vllm": ("vllm:generation_tokens_total", "vllm:num_requests_running"),
}


def cpu_percent(stats: dict) -> Optional[float]:
    """CPU use since the engine's previous sample in the same message, in % of one core
    (200 = two cores busy), as `docker stats` computes it."""
    cpu, pre = stats.get("cpu_stats") or {}, stats.get("precpu_stats") or {}
    try:
        delta = cpu["cpu_usage"]["total_usage"] - pre["cpu_usage"]["total_usage"]
        system = cpu["system_cpu_usage"] - pre["system_cpu_usage"]
    except (KeyError, TypeError):
        return None  # the first message of a stream has no previous sample
    cores = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    if system <= 0 or delta < 0:
        return None
    return delta / system * cores * 100.0


def memory_bytes(stats: dict) -> Optional[int]:
    """Memory the container really holds: usage less the page cache it could drop
    (cgroup v2 `inactive_file`, v1 `total_inactive_file`), as `docker stats` shows it."""
    mem = stats.get("memory_stats") or {}
    usage = mem.get("usage")
    if usage is None:
        return None
    extra = mem.get("stats") or {}
    cache = extra.get("inactive_file", extra.get("total_inactive_file", 0)) or 0
    return max(0, int(usage) - int(cache))


def parse_metrics(text: str, engine: str) -> tuple[Optional[float], Optional[float]]:
    """(generated tokens so far, requests in flight) from Prometheus text; None where absent."""
    names = ENGINE_SERIES.get(engine)
    if not names:
        return None, None
    found: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in names:
            try:
                found[name] = found.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
            except (ValueError, IndexError):
                continue
    return found.get(names[0]), found.get(names[1])


def tokens_per_s(prev: Optional[tuple[float, float]], now: tuple[float, float]) -> Optional[float]:
    """Rate between two (time, tokens total) readings; None when there is no earlier one or the
    counter went back (the engine restarted)."""
    if prev is None or now[0] <= prev[0] or now[1] < prev[1]:
        return None
    return (now[1] - prev[1]) / (now[0] - prev[0])


def gpu_memory_of(container_pids: Iterable[int], process_memory: dict[int, int]) -> Optional[int]:
    """GPU memory held by a container's processes (NVML's per-process figures, by host PID);
    None when none of them holds any (no GPU, or NVML cannot attribute processes)."""
    held = [process_memory[p] for p in container_pids if p in process_memory]
    return sum(held) if held else None


def memory_in_use(sample: Optional["Sample"], on_gpu: bool) -> Optional[float]:
    """What a model holds now, in MiB, to set beside its estimate: GPU memory for a model on
    GPUs (NVML), else its container's memory (cgroup, as `docker stats` shows it)."""
    if sample is None:
        return None
    held = sample.gpu_mem_bytes if on_gpu else sample.mem_bytes
    return None if held is None else round(held / (1024 * 1024), 1)


def human_bytes(n: Optional[float]) -> str:
    if n is None:
        return ""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}" if n < 10 * size else f"{n / size:.0f} {unit}"
    return f"{int(n)} B"


@dataclass(frozen=True)
class Sample:
    at: float
    cpu_pct: Optional[float] = None
    mem_bytes: Optional[int] = None
    gpu_mem_bytes: Optional[int] = None
    tokens_s: Optional[float] = None
    in_flight: Optional[float] = None

    def view(self) -> dict:
        """The compact figures the Models page shows ("" where unknown)."""
        return {"cpu": "" if self.cpu_pct is None else f"{self.cpu_pct:.0f} %",
                "mem": human_bytes(self.mem_bytes), "gpu_mem": human_bytes(self.gpu_mem_bytes),
                "tokens_s": "" if self.tokens_s is None else f"{self.tokens_s:.1f} tok/s",
                "in_flight": "" if self.in_flight is None else f"{self.in_flight:.0f}"}


class ResourceHistory:
    """The last KEEP samples of each model, and the newest figures of each kind (stats,
    metrics and GPU memory arrive on their own paces and are merged into one sample)."""

    def __init__(self, keep: int = KEEP, every_s: float = 2.0):
        self.keep, self.every_s = keep, every_s
        self._series: dict[int, deque] = {}
        self._latest: dict[int, Sample] = {}
        self._slot: dict[int, float] = {}  # when the newest kept sample's slot began
        self._lock = threading.Lock()

    def update(self, model_id: int, at: Optional[float] = None, **figures) -> None:
        """Merge new figures into the model's newest sample; a sample is kept every `every_s`."""
        at = time.time() if at is None else at
        with self._lock:
            latest = replace(self._latest.get(model_id) or Sample(at=at), at=at, **figures)
            self._latest[model_id] = latest
            series = self._series.setdefault(model_id, deque(maxlen=self.keep))
            if not series or at - self._slot[model_id] >= self.every_s:
                series.append(latest)
                self._slot[model_id] = at
            else:
                series[-1] = latest

    def latest(self, model_id: int, max_age_s: Optional[float] = None, now: Optional[float] = None
               ) -> Optional[Sample]:
        """The newest figures; None when there are none, or none younger than `max_age_s` (its
        readers stopped: the engine went away while the row still says running)."""
        with self._lock:
            sample = self._latest.get(model_id)
        if sample is not None and max_age_s is not None and (time.time() if now is None else now) - sample.at > max_age_s:
            return None
        return sample

    def series(self, model_id: int) -> list[Sample]:
        with self._lock:
            return list(self._series.get(model_id) or ())

    def drop(self, model_id: int) -> None:
        """A model whose container changed (an Apply, a restart): its figures begin anew."""
        with self._lock:
            self._latest.pop(model_id, None)
            self._series.pop(model_id, None)
            self._slot.pop(model_id, None)

    def forget(self, keep_ids: set[int]) -> None:
        """Drop the models not in `keep_ids` (stopped, deleted): a restart begins a new history."""
        with self._lock:
            for mid in set(self._latest) - keep_ids:
                self._latest.pop(mid, None)
                self._series.pop(mid, None)
                self._slot.pop(mid, None)
