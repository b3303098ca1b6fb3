"""A check for a host WITH an NVIDIA GPU (none here): runtime/gpu.py's readings against
nvidia-smi's, idle and under load. nvidia-smi is run with the query a remote host's GPU
sampler runs (gpu.smi_command) and read with the sampler's own parser (gpu.parse_smi_line),
so this also compares what the console reads of a remote GPU with NVML on the same GPU.
Needs nvidia-ml-py; loads the GPU with PyTorch if present.

    python3 bench/gpu_check.py

Prints: the readings idle, nvidia-smi's view of the same moment, the readings while a
matrix-multiply loop holds ~8 GiB and keeps the GPU busy, and GpuHistory's series. Exits 1
when a reading disagrees with nvidia-smi beyond a small tolerance or load is not seen.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from cortex_app.runtime.gpu import GpuHistory, parse_smi_line, read_gpus, smi_command  # noqa: E402


def smi() -> list[dict]:
    """One round of the sampler's query (without its `-l`), as the sampler's parser reads it."""
    out = subprocess.run(smi_command(5)[:-2], capture_output=True, text=True, check=True).stdout
    readings = [r for r in map(parse_smi_line, out.splitlines()) if r is not None]
    return [{"index": r.index, "name": r.name, "mem_used": str(r.memory_used_mib), "mem_total": str(r.memory_total_mib),
             "util": str(r.utilization_pct), "temp": "" if r.temperature_c is None else str(r.temperature_c),
             "power": str(r.power_w), "limit": str(r.power_limit_w)} for r in readings]


def show(label: str, status) -> None:
    print(f"{label}: available={status.available} driver={status.driver_version!r} notice={status.notice!r}")
    for g in status.gpus:
        print(f"  #{g.index} {g.name}: {g.memory_used_mib}/{g.memory_total_mib} MiB ({g.memory_pct}%), "
              f"util {g.utilization_pct}%, {g.temperature_c} C, {g.power_w}/{g.power_limit_w} W")


def main() -> int:
    problems = []
    idle = read_gpus()
    show("idle", idle)
    if not idle.available:
        print("no NVIDIA GPU on this host: nothing to check (the notice above is what the GPUs page shows)")
        return 2
    ref = smi()
    print("nvidia-smi:", ref)
    if not idle.available or len(idle.gpus) != len(ref):
        problems.append("GPU count differs from nvidia-smi")
    for g, r in zip(idle.gpus, ref):
        if g.name != r["name"]:
            problems.append(f"name {g.name!r} != {r['name']!r}")
        if g.memory_total_mib != int(r["mem_total"]):
            problems.append(f"memory total {g.memory_total_mib} != {r['mem_total']}")
        if abs(g.memory_used_mib - int(r["mem_used"])) > 64:
            problems.append(f"memory used {g.memory_used_mib} vs {r['mem_used']}")
        if r["temp"].isdigit() and g.temperature_c is not None and abs(g.temperature_c - int(r["temp"])) > 3:
            problems.append(f"temperature {g.temperature_c} vs {r['temp']}")

    try:
        import torch
    except ImportError:
        print("no torch: load step skipped")
        torch = None
    if torch is not None and torch.cuda.is_available():
        stop = threading.Event()
        hold = torch.empty(8 * 1024**3 // 4, dtype=torch.float32, device="cuda")
        a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)

        def burn():
            while not stop.is_set():
                for _ in range(20):
                    a @ a
                torch.cuda.synchronize()

        t = threading.Thread(target=burn)
        t.start()
        history = GpuHistory()
        time.sleep(2)
        busy = None
        for _ in range(5):
            busy = history.sample()  # what the scheduler's GPU job does every 5 s
            time.sleep(0.5)
        stop.set()
        t.join()
        show("under load", busy)
        g0 = busy.gpus[0]
        if g0.memory_used_mib - idle.gpus[0].memory_used_mib < 8000:
            problems.append(f"8 GiB allocation not seen: {idle.gpus[0].memory_used_mib} -> {g0.memory_used_mib} MiB")
        if g0.utilization_pct < 50:
            problems.append(f"utilization under load only {g0.utilization_pct}%")
        del hold, a
        series = history.samples.get(0, [])
        print("history of GPU 0 (util %, mem %):", [(s["util"], s["mem"]) for s in series])
        if len(series) != 5:
            problems.append(f"history kept {len(series)} samples of 5")
    print("PROBLEMS:" if problems else "OK: readings match nvidia-smi and follow load", problems or "")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
