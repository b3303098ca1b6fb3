"""The one module that imports `pynvml` (nvidia-ml-py): what the host's NVIDIA GPUs are doing.

`read_gpus()` never raises: without the NVIDIA driver (no NVML) or without a GPU it returns
no readings and a notice saying why, and everything else in the console works as before.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

MIB = 1024 * 1024


@dataclass(frozen=True)
class GpuReading:
    index: int
    name: str
    memory_used_mib: int
    memory_total_mib: int
    utilization_pct: int
    temperature_c: Optional[int]
    power_w: Optional[float]
    power_limit_w: Optional[float]

    @property
    def memory_pct(self) -> float:
        return round(100 * self.memory_used_mib / self.memory_total_mib, 1) if self.memory_total_mib else 0.0


@dataclass(frozen=True)
class GpuStatus:
    available: bool
    notice: str = ""
    gpus: list[GpuReading] = field(default_factory=list)
    driver_version: str = ""
    # GPU memory in bytes by host PID, over every GPU (what NVML can attribute to processes;
    # empty where it cannot, e.g. a driver that hides other namespaces' processes)
    process_memory: dict[int, int] = field(default_factory=dict)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def reading(index: int, name: Any, memory: Any, utilization: Any, temperature: Optional[int],
            power_mw: Optional[int], limit_mw: Optional[int]) -> GpuReading:
    """NVML's raw figures (bytes, percent, milliwatts) -> the page's units (MiB, %, W)."""
    return GpuReading(
        index=index,
        name=_text(name),
        memory_used_mib=int(memory.used // MIB),
        memory_total_mib=int(memory.total // MIB),
        utilization_pct=int(utilization.gpu),
        temperature_c=temperature,
        power_w=round(power_mw / 1000, 1) if power_mw is not None else None,
        power_limit_w=round(limit_mw / 1000, 1) if limit_mw is not None else None,
    )


# What a remote host's sampler container runs (gpu_samplers.py): nvidia-smi's CSV of the same
# figures NVML gives locally, one line per GPU, every `-l` seconds.
SMI_FIELDS = ("index", "name", "memory.used", "memory.total", "utilization.gpu", "temperature.gpu", "power.draw",
              "power.limit")


def smi_command(interval_s: int) -> list[str]:
    return ["nvidia-smi", f"--query-gpu={','.join(SMI_FIELDS)}", "--format=csv,noheader,nounits", "-l",
            str(interval_s)]


def _smi_number(text: str) -> Optional[float]:
    try:
        return float(text)
    except ValueError:  # "[N/A]", "[Not Supported]"
        return None


# What a host's sampler may say, at most: a host that lies (or a broken nvidia-smi) fills
# neither the console's memory nor the host's row. 64 GPUs is more than any one machine has.
MAX_GPUS = 64
MAX_GPU_NAME = 96


def parse_smi_line(line: str) -> Optional[GpuReading]:
    """One line of smi_command's output; None for anything else (a blank line, an error, a GPU
    index of MAX_GPUS or more). A name past MAX_GPU_NAME characters is cut there."""
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != len(SMI_FIELDS) or not parts[0].isdigit() or len(parts[0]) > 3:
        return None
    if int(parts[0]) >= MAX_GPUS:
        return None
    used, total, util, temp, power, limit = (_smi_number(p) for p in parts[2:])
    if used is None or total is None:
        return None
    return GpuReading(index=int(parts[0]), name=parts[1][:MAX_GPU_NAME], memory_used_mib=int(used), memory_total_mib=int(total),
                      utilization_pct=int(util or 0), temperature_c=None if temp is None else int(temp),
                      power_w=None if power is None else round(power, 1),
                      power_limit_w=None if limit is None else round(limit, 1))


def read_gpus(nvml: Any = None) -> GpuStatus:
    """Readings of every GPU. `nvml` is the pynvml module (tests pass a stand-in)."""
    if nvml is None:
        try:
            import pynvml as nvml
        except ImportError:
            return GpuStatus(False, "nvidia-ml-py is not installed; GPU figures are not available.")
    try:
        nvml.nvmlInit()
    except nvml.NVMLError as exc:
        return GpuStatus(False, f"No NVIDIA driver found on this host (NVML: {exc}). GPU figures are not shown; "
                                "models can still run on the CPU.")
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        count = nvml.nvmlDeviceGetCount()
        if count == 0:
            return GpuStatus(False, "The NVIDIA driver reports no GPU on this host.", driver_version=driver)
        gpus, processes = [], {}
        for i in range(count):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            for p in _guard(nvml, getattr(nvml, "nvmlDeviceGetComputeRunningProcesses", lambda _h: []), h) or []:
                if getattr(p, "usedGpuMemory", None):  # None: the driver will not say
                    processes[int(p.pid)] = processes.get(int(p.pid), 0) + int(p.usedGpuMemory)
            gpus.append(reading(
                i, nvml.nvmlDeviceGetName(h), _memory(nvml, h),
                nvml.nvmlDeviceGetUtilizationRates(h),
                _guard(nvml, nvml.nvmlDeviceGetTemperature, h, nvml.NVML_TEMPERATURE_GPU),
                _guard(nvml, nvml.nvmlDeviceGetPowerUsage, h),
                _guard(nvml, nvml.nvmlDeviceGetEnforcedPowerLimit, h)))
        return GpuStatus(True, gpus=gpus, driver_version=driver, process_memory=processes)
    except nvml.NVMLError as exc:
        return GpuStatus(False, f"NVML failed while reading the GPUs: {exc}")
    finally:
        try:
            nvml.nvmlShutdown()
        except nvml.NVMLError:
            pass


def _memory(nvml: Any, h) -> Any:
    """Memory info as nvidia-smi shows it. NVML's v1 call counts the driver's reserved memory
    as used (seen on an H200: 615 MiB 'used' on an idle card that nvidia-smi shows at 0); v2
    reports it apart. Drivers without v2 get v1."""
    version = getattr(nvml, "nvmlMemory_v2", None)
    if version is not None:
        try:
            return nvml.nvmlDeviceGetMemoryInfo(h, version=version)
        except nvml.NVMLError:
            pass
    return nvml.nvmlDeviceGetMemoryInfo(h)


def _guard(nvml: Any, fn, *args):
    try:
        return fn(*args)
    except nvml.NVMLError:
        return None


class GpuHistory:
    """The last readings per GPU, sampled by the scheduler, for the GPUs page's chart.
    In memory: a short look back, not a record (it starts empty with each console)."""

    def __init__(self, keep: int = 120):
        self.keep = keep
        self.samples: dict[int, list[dict]] = {}
        self.status: Optional[GpuStatus] = None

    def sample(self, nvml: Any = None, at: Optional[float] = None) -> GpuStatus:
        import time

        status = read_gpus(nvml)
        self.status = status
        stamp = time.time() if at is None else at
        for g in status.gpus:
            series = self.samples.setdefault(g.index, [])
            series.append({"t": stamp, "util": g.utilization_pct, "mem": g.memory_pct})
            del series[:-self.keep]
        return status
