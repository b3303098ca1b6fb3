"""The memory estimate (cortex_app/engines/memory.py), as the detail page and the API show it,
against what llama-server reports it allocated (its `-lv 4` log: model, KV, output and compute
buffers), for the test model and two generated GGUFs of other shapes, each started the way
the console starts a model (its container spec, real llama-server, real Docker)."""

import re
import subprocess
import sys

import pytest

from cortex_app.engines import memory
from tests.conftest import ROOT

BUFFER = re.compile(r"\b\S+ +(?:model|KV|output|compute) buffer size = +([\d.]+) MiB")
SHAPES = {
    # grouped-query attention (8 heads, 2 for K/V), f16 weights, a larger vocabulary
    "gqa-f16.gguf": ("4096", "embd=256,layers=4,heads=8,kv_heads=2,ff=768,vocab=2000,type=f16"),
    # deeper and wider than the test model, f32
    "deep.gguf": ("8192", "embd=128,layers=6,heads=4,kv_heads=4,ff=512,vocab=300"),
}


def reported_mib(logs: str) -> float:
    found = [float(x) for x in BUFFER.findall(logs)]
    assert len(found) >= 3, f"llama-server's buffer report is not in its log:\n{logs[-3000:]}"
    return sum(found)


@pytest.mark.parametrize("source, settings", [
    ("tiny.gguf", {"context_size": 4096}),
    ("tiny.gguf", {}),  # no context set: llama-server takes the trained one (256)
    ("gqa-f16.gguf", {"context_size": 2048, "cache_type_k": "q8_0", "cache_type_v": "q8_0"}),
    ("deep.gguf", {"context_size": 2048, "flash_attn": False}),
])
def test_the_estimate_is_within_10_percent_of_what_llama_server_allocates(bed, docker_client, source, settings):
    models_dir = bed.settings.models_dir
    if source in SHAPES and not (models_dir / source).exists():
        ctx, shape = SHAPES[source]
        subprocess.run([sys.executable, str(ROOT / "scripts/testimages/make_tiny_gguf.py"), str(models_dir / source),
                        ctx, shape], check=True)
    m = bed.llama(source.removesuffix(".gguf"), source=source, extra_args=["--poll", "0", "-t", "1", "-lv", "4"],
                  **settings)
    est = memory.estimate_model(bed.row(m.id), models_dir)
    row = bed.start_ready(m.id)
    assert row.state.value == "running", row.state_reason
    logs = docker_client.containers.get(row.container_id).logs().decode(errors="replace")
    real = reported_mib(logs)
    print(f"{source} {settings}: estimate {est.total_mib:.2f} MiB, reported {real:.2f} MiB, "
          f"{100 * (est.total_mib - real) / real:+.1f} %")
    assert abs(est.total_mib - real) <= 0.10 * real, f"estimate {est.summary()} against {real:.2f} MiB reported"
    if "context_size" not in settings:
        assert est.n_ctx == 256  # the GGUF's trained context
