"""resources.py: a running model's cost from the engine's stats messages, the engines' own
/metrics, NVML's process list; and the bounded history the pages read."""

import pytest

from cortex_app.resources import (ResourceHistory, Sample, cpu_percent, gpu_memory_of, human_bytes, memory_bytes,
                                  parse_metrics, tokens_per_s)
from cortex_app.states.models import usage_line


def _stats(total, pre_total, system, pre_system, cpus=2, **memory):
    return {"cpu_stats": {"cpu_usage": {"total_usage": total}, "system_cpu_usage": system, "online_cpus": cpus},
            "precpu_stats": {"cpu_usage": {"total_usage": pre_total}, "system_cpu_usage": pre_system},
            "memory_stats": memory}


@pytest.mark.parametrize("msg, want", [
    (_stats(1_500_000_000, 1_000_000_000, 12_000_000_000, 10_000_000_000), 50.0),  # half a core of two
    (_stats(5_000_000_000, 1_000_000_000, 12_000_000_000, 10_000_000_000), 400.0),  # cgroups can say more than system
    (_stats(1_000_000_000, 1_000_000_000, 12_000_000_000, 10_000_000_000), 0.0),
    ({"cpu_stats": {"cpu_usage": {"total_usage": 5}, "system_cpu_usage": 9}, "precpu_stats": {}}, None),  # first
    (_stats(2, 1, 10, 10), None),  # no system time passed
])
def test_cpu_percent_as_docker_stats_computes_it(msg, want):
    assert cpu_percent(msg) == (pytest.approx(want) if want is not None else None)


def test_cpu_cores_fall_back_to_the_per_cpu_list():
    msg = _stats(1_500_000_000, 1_000_000_000, 12_000_000_000, 10_000_000_000, cpus=None)
    msg["cpu_stats"]["cpu_usage"]["percpu_usage"] = [1, 2, 3, 4]
    assert cpu_percent(msg) == pytest.approx(100.0)


@pytest.mark.parametrize("memory, want", [
    ({"usage": 100 << 20, "stats": {"inactive_file": 30 << 20}}, 70 << 20),  # cgroup v2
    ({"usage": 100 << 20, "stats": {"total_inactive_file": 10 << 20}}, 90 << 20),  # cgroup v1
    ({"usage": 5}, 5),
    ({}, None),  # a stopped container's message
])
def test_memory_leaves_out_the_droppable_page_cache(memory, want):
    assert memory_bytes({"memory_stats": memory}) == want


LLAMA_METRICS = """# HELP llamacpp:prompt_tokens_total Number of prompt tokens processed.
# TYPE llamacpp:prompt_tokens_total counter
llamacpp:prompt_tokens_total 120
# TYPE llamacpp:tokens_predicted_total counter
llamacpp:tokens_predicted_total 64
# TYPE llamacpp:requests_processing gauge
llamacpp:requests_processing 2
"""
VLLM_METRICS = """vllm:num_requests_running{model_name="m"} 3.0
vllm:generation_tokens_total{model_name="m"} 1000.0
vllm:generation_tokens_total{model_name="m2"} 24.0
vllm:generation_tokens_created{model_name="m"} 1.7e9
"""


@pytest.mark.parametrize("text, engine, want", [
    (LLAMA_METRICS, "llamacpp", (64.0, 2.0)),
    (VLLM_METRICS, "vllm", (1024.0, 3.0)),
    (LLAMA_METRICS, "vllm", (None, None)),
    ("garbage {{ x", "llamacpp", (None, None)),
    (LLAMA_METRICS, "other", (None, None)),
])
def test_engine_metrics(text, engine, want):
    assert parse_metrics(text, engine) == want


@pytest.mark.parametrize("prev, now, want", [
    (None, (10.0, 50.0), None),
    ((10.0, 50.0), (12.0, 90.0), 20.0),
    ((10.0, 50.0), (12.0, 10.0), None),  # the engine restarted: its counter began again
    ((10.0, 50.0), (10.0, 60.0), None),
])
def test_tokens_per_second(prev, now, want):
    assert tokens_per_s(prev, now) == want


def test_gpu_memory_is_the_sum_over_the_containers_processes():
    held = {100: 4 << 30, 101: 1 << 30, 999: 7 << 30}
    assert gpu_memory_of([100, 101, 5], held) == 5 << 30
    assert gpu_memory_of([5, 6], held) is None


@pytest.mark.parametrize("n, text", [(None, ""), (512, "512 B"), (48 << 20, "48 MiB"), (int(1.5 * (1 << 30)),
                                                                                       "1.5 GiB")])
def test_human_bytes(n, text):
    assert human_bytes(n) == text


def test_history_merges_figures_and_keeps_a_bounded_series():
    h = ResourceHistory(keep=3, every_s=2.0)
    h.update(1, at=100.0, cpu_pct=10.0, mem_bytes=1 << 20)
    h.update(1, at=101.0, tokens_s=5.0)  # metrics arrive apart from stats: merged, same slot
    assert h.latest(1) == Sample(at=101.0, cpu_pct=10.0, mem_bytes=1 << 20, tokens_s=5.0)
    assert len(h.series(1)) == 1
    for t in (102.0, 103.0, 104.0, 105.0, 106.0, 107.0, 108.0):  # stats come every second
        h.update(1, at=t, cpu_pct=t)
    assert [s.at for s in h.series(1)] == [105.0, 107.0, 108.0]  # a sample per 2 s slot; the oldest went
    h.update(2, at=108.0, cpu_pct=1.0)
    h.forget({2})
    assert h.latest(1) is None and h.series(1) == [] and h.latest(2) is not None


def test_the_row_says_what_is_known():
    assert usage_line(None) == {"figures": "", "engine": ""}
    s = Sample(at=0, cpu_pct=12.4, mem_bytes=48 << 20, gpu_mem_bytes=6 << 30, tokens_s=31.25, in_flight=2)
    assert usage_line(s) == {"figures": "12 % CPU · 48 MiB · 6.0 GiB GPU", "engine": "31.2 tok/s · 2 in flight"}
    assert usage_line(Sample(at=0, cpu_pct=0.0, mem_bytes=1 << 20)) == {"figures": "0 % CPU · 1.0 MiB", "engine": ""}


def test_old_figures_are_not_shown_as_current():
    h = ResourceHistory()
    h.update(1, at=100.0, cpu_pct=3.0)
    assert h.latest(1, max_age_s=15, now=110.0) is not None
    assert h.latest(1, max_age_s=15, now=120.0) is None  # its reader stopped: the engine went away
    assert h.latest(1) is not None


def test_a_scrape_that_got_no_answer_clears_the_engine_figures():
    from cortex_app.sampler import ResourceSampler

    s = ResourceSampler(runtime=None)
    s.record_metrics(1, "llamacpp", LLAMA_METRICS, at=10.0)
    s.record_metrics(1, "llamacpp", LLAMA_METRICS.replace("tokens_predicted_total 64", "tokens_predicted_total 84"),
                     at=12.0)
    assert s.history.latest(1).tokens_s == pytest.approx(10.0) and s.history.latest(1).in_flight == 2
    s.record_metrics(1, "llamacpp", "", at=14.0)
    assert s.history.latest(1).tokens_s is None and s.history.latest(1).in_flight is None
