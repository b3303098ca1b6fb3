"""runtime/gpu.py: NVML readings -> the page's figures, and the hosts without NVML.

No GPU runs here, so `FakeNvml` is a small STAND-IN for the pynvml module, with NVML's own
units (bytes, percent, milliwatts) and its error type; the real module is exercised by the
"no NVML" test (this machine has no NVIDIA driver).
"""

from types import SimpleNamespace

import pytest

from cortex_app.runtime.gpu import GpuReading, read_gpus, reading


class FakeNvml:
    """Stand-in for pynvml on a host with two GPUs; GPU 1 reports no power figures."""

    NVML_TEMPERATURE_GPU = 0

    class NVMLError(Exception):
        pass

    def __init__(self, count=2, init_error=None):
        self.count, self.init_error, self.shut = count, init_error, False

    def nvmlInit(self):
        if self.init_error:
            raise self.NVMLError(self.init_error)

    def nvmlShutdown(self):
        self.shut = True

    def nvmlSystemGetDriverVersion(self):
        return b"550.54.15"

    def nvmlDeviceGetCount(self):
        return self.count

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        return ["NVIDIA H100 80GB HBM3", "NVIDIA L4"][h]

    nvmlMemory_v2 = 0x2000028
    v2_supported = True
    RESERVED = 615 * 1024**2  # what v1 adds to `used` on an idle card (seen on an H200)

    def nvmlDeviceGetMemoryInfo(self, h, version=None):
        used = [42760404992, 0][h]
        if version is None:
            return SimpleNamespace(total=[85520809984, 24146608128][h], used=used + self.RESERVED)
        if not self.v2_supported:
            raise self.NVMLError("Function Not Found")
        assert version == self.nvmlMemory_v2
        return SimpleNamespace(total=[85520809984, 24146608128][h], used=used, reserved=self.RESERVED)

    def nvmlDeviceGetUtilizationRates(self, h):
        return SimpleNamespace(gpu=[87, 0][h], memory=[40, 0][h])

    def nvmlDeviceGetTemperature(self, h, sensor):
        return [71, 34][h]

    def nvmlDeviceGetPowerUsage(self, h):
        if h == 1:
            raise self.NVMLError("Not Supported")
        return 612345

    def nvmlDeviceGetComputeRunningProcesses(self, h):
        # One model's process on both GPUs, and one whose memory the driver will not say.
        return [[SimpleNamespace(pid=4242, usedGpuMemory=40 * 1024**3), SimpleNamespace(pid=77, usedGpuMemory=None)],
                [SimpleNamespace(pid=4242, usedGpuMemory=1024**3)]][h]

    def nvmlDeviceGetEnforcedPowerLimit(self, h):
        if h == 1:
            raise self.NVMLError("Not Supported")
        return 700000


def test_readings_are_mapped_to_page_units():
    nvml = FakeNvml()
    status = read_gpus(nvml)
    assert status.available and status.driver_version == "550.54.15" and nvml.shut
    h100, l4 = status.gpus
    assert h100 == GpuReading(index=0, name="NVIDIA H100 80GB HBM3", memory_used_mib=40779, memory_total_mib=81559,
                              utilization_pct=87, temperature_c=71, power_w=612.3, power_limit_w=700.0)
    assert h100.memory_pct == 50.0
    assert (l4.power_w, l4.power_limit_w, l4.memory_pct) == (None, None, 0.0)


def test_memory_used_leaves_out_the_driver_reserve_as_nvidia_smi_does():
    assert read_gpus(FakeNvml()).gpus[1].memory_used_mib == 0  # v2: an idle card uses nothing
    old_driver = FakeNvml()
    old_driver.v2_supported = False
    assert read_gpus(old_driver).gpus[1].memory_used_mib == 615  # v1 is what such drivers have


def test_reading_converts_bytes_and_milliwatts():
    r = reading(3, b"GPU", SimpleNamespace(total=2 * 1024**3, used=512 * 1024**2), SimpleNamespace(gpu=5),
                40, 1500, None)
    assert (r.name, r.memory_used_mib, r.memory_total_mib, r.power_w, r.power_limit_w) == ("GPU", 512, 2048, 1.5, None)


@pytest.mark.parametrize("nvml, words", [
    (FakeNvml(init_error="NVML Shared Library Not Found"), "No NVIDIA driver found"),
    (FakeNvml(count=0), "reports no GPU"),
])
def test_no_driver_or_no_gpu_gives_a_notice(nvml, words):
    status = read_gpus(nvml)
    assert not status.available and status.gpus == [] and words in status.notice


def test_the_real_module_on_this_gpu_less_host():
    status = read_gpus()  # the real pynvml: no driver here
    assert status.available is False and status.gpus == []
    assert "No NVIDIA driver found" in status.notice or "no GPU" in status.notice


def test_history_keeps_the_last_samples_per_gpu():
    from cortex_app.runtime.gpu import GpuHistory

    history = GpuHistory(keep=3)
    for t in range(5):
        history.sample(FakeNvml(), at=float(t))
    assert [p["t"] for p in history.samples[0]] == [2.0, 3.0, 4.0]
    assert history.samples[0][-1] == {"t": 4.0, "util": 87, "mem": 50.0}
    assert history.samples[1][-1]["util"] == 0
    empty = GpuHistory()
    empty.sample(FakeNvml(init_error="NVML Shared Library Not Found"))
    assert empty.samples == {} and not empty.status.available


def test_gpu_memory_is_attributed_to_processes_across_gpus():
    assert read_gpus(FakeNvml()).process_memory == {4242: 41 * 1024**3}


def test_a_driver_without_the_process_list_still_reads_the_gpus():
    nvml = FakeNvml()
    nvml.nvmlDeviceGetComputeRunningProcesses = lambda h: (_ for _ in ()).throw(nvml.NVMLError("Not Supported"))
    status = read_gpus(nvml)
    assert status.available and status.process_memory == {} and len(status.gpus) == 2


@pytest.mark.parametrize("line, expected", [
    ("0, NVIDIA H200, 0, 143771, 0, 31, 74.52, 700.00", (0, "NVIDIA H200", 0, 143771, 0, 31, 74.5, 700.0)),
    ("3, NVIDIA A100-SXM4-80GB, 61234, 81920, 87, 70, 301.10, 400.00",
     (3, "NVIDIA A100-SXM4-80GB", 61234, 81920, 87, 70, 301.1, 400.0)),
    # a GPU that reports no temperature or power (nvidia-smi's own words for it)
    ("1, Tesla T4, 5, 15360, [N/A], [N/A], [Not Supported], [Not Supported]", (1, "Tesla T4", 5, 15360, 0, None, None, None)),
])
def test_the_samplers_csv_lines_read_as_nvml_readings(line, expected):
    from cortex_app.runtime.gpu import parse_smi_line

    g = parse_smi_line(line)
    assert (g.index, g.name, g.memory_used_mib, g.memory_total_mib, g.utilization_pct, g.temperature_c, g.power_w,
            g.power_limit_w) == expected


@pytest.mark.parametrize("line", ["", "No devices were found", "NVIDIA-SMI has failed because it couldn't communicate",
                                  "0, H200, [N/A], [N/A], 0, 0, 0, 0", "index, name, memory.used [MiB]",
                                  # a host that lies: GPU 64 and beyond (MAX_GPUS), or an index past any
                                  "64, H200, 0, 143771, 0, 31, 74.52, 700.00",
                                  "99999999999999999999, H200, 0, 143771, 0, 31, 74.52, 700.00"])
def test_what_is_no_reading_is_skipped(line):
    from cortex_app.runtime.gpu import parse_smi_line

    assert parse_smi_line(line) is None


def test_the_sampler_asks_for_what_the_parser_reads():
    from cortex_app.runtime.gpu import SMI_FIELDS, smi_command

    cmd = smi_command(5)
    assert cmd[0] == "nvidia-smi" and cmd[-2:] == ["-l", "5"] and f"--query-gpu={','.join(SMI_FIELDS)}" in cmd


def test_a_gpu_name_past_its_cap_is_cut():
    from cortex_app.runtime.gpu import MAX_GPU_NAME, parse_smi_line

    g = parse_smi_line(f"63, {'H' * 10_000}, 0, 143771, 0, 31, 74.52, 700.00")
    assert g.index == 63 and g.name == "H" * MAX_GPU_NAME


@pytest.mark.parametrize("chunks, lines", [
    ([b"a\nb\n"], [b"a", b"b"]),
    ([b"a", b"b\nc", b"\n"], [b"ab", b"c"]),
    ([b"12345678\n"], [b"12345678"]),  # at the cap: kept
    ([b"123456789\nok\n"], [b"ok"]),  # past it: dropped, the next line kept
    ([b"12345", b"6789", b"more", b"\nok\n"], [b"ok"]),  # past it across chunks, to its newline
    ([b"123456789" * 1000, b"x" * 5000, b"\nok"], []),  # never finished: nothing (and nothing kept)
    ([b"a"], []),  # a line not ended yet is not a line
])
def test_a_followed_containers_lines_are_split_and_capped(chunks, lines):
    from cortex_app.runtime.docker import split_lines

    assert list(split_lines(chunks, max_line=8)) == lines


def test_what_is_kept_between_chunks_stays_under_the_cap():
    import tracemalloc

    from cortex_app.runtime.docker import split_lines

    endless = (b"x" * 65536 for _ in range(2000))  # 128 MiB with no newline
    tracemalloc.start()
    assert list(split_lines(endless)) == []
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 1_000_000, peak
