"""The fit check at Start, through the lifecycle the pages and the API call, with real Docker
and real model files. GPU readings come from a stand-in for NVML (no GPU here): one H200 as
NVML reports it (143,771 MiB, the figure bench/gpu_check.py read on a real one), with as much
memory in use as each case needs. And what a model really held, set beside its estimate by
the scheduler's resources job."""

import json

import pytest
import sqlalchemy as sa

from cortex_app.fit import CUDA_CONTEXT_MIB
from cortex_app.lifecycle import DoesNotFit
from cortex_app.models import Model, ModelState
from cortex_app.runtime.gpu import GpuReading, GpuStatus
from tests.integration.conftest import wait_for

H200_MIB = 143_771


def h200(used_mib: int) -> GpuStatus:
    """Stand-in NVML reading: one H200 with `used_mib` in use."""
    return GpuStatus(available=True, gpus=[GpuReading(0, "NVIDIA H200", used_mib, H200_MIB, 0, None, None, None)])


def test_a_llama_model_that_does_not_fit_is_refused_with_the_numbers_unless_overridden(bed, docker_client):
    m = bed.llama(device="cuda", context_size=4096)
    need = bed.lc.estimate(bed.row(m.id)).total_mib + CUDA_CONTEXT_MIB
    bed.lc.gpu_status = lambda: h200(H200_MIB - int(need) + 10)  # 10 MiB short
    before = len(bed.events(m.id))
    with pytest.raises(DoesNotFit) as refused:
        bed.lc.start(m.id, actor="admin:test")
    why = str(refused.value)
    assert f"needs ~{need:,.0f} MiB" in why and "GPU 0:" in why and "free of 143,771 MiB" in why, why
    assert "KV cache" in why and "short" in why, why
    row = bed.row(m.id)
    assert row.state == ModelState.STOPPED and row.container_id is None and len(bed.events(m.id)) == before
    assert not docker_client.containers.list(all=True, filters={"label": f"cortex.model-id={m.id}"})

    # An admin starts it anyway: the check lets it through, once. (This engine has no GPU
    # runtime, so the container itself cannot get the GPU: that failure is the engine's.)
    overridden = bed.lc.start(m.id, actor="admin:test", override_fit=True)
    reasons = [e.reason for e in bed.events(m.id)]
    assert any("fit check overridden" in r and "short" in r for r in reasons), reasons
    assert overridden.state == ModelState.FAILED and "GPU runtime" in overridden.state_reason
    with pytest.raises(DoesNotFit):
        bed.lc.start(m.id, actor="admin:test")  # the override was for that start only

    bed.lc.gpu_status = lambda: h200(1_000)  # room enough: no refusal
    assert "GPU runtime" in bed.lc.start(m.id, actor="admin:test").state_reason
    # Unless another model is still loading there: it has not allocated yet, but will.
    other = bed.llama(name="loading-one", device="cuda")
    with bed.db.begin() as conn:
        conn.execute(sa.update(Model).where(Model.id == other.id).values(
            state=ModelState.LOADING, memory_estimate_mib=H200_MIB - 1_000 - need + 10, memory_used_mib=0))
    with pytest.raises(DoesNotFit, match="short"):
        bed.lc.start(m.id, actor="admin:test")
    with bed.db.begin() as conn:
        conn.execute(sa.update(Model).where(Model.id == other.id).values(state=ModelState.STOPPED))
    bed.lc.gpu_status = lambda: GpuStatus(available=False, notice="no NVML")  # nothing to check against
    assert "GPU runtime" in bed.lc.start(m.id, actor="admin:test").state_reason


def test_a_vllm_model_is_refused_when_its_gpu_lacks_the_share_vllm_claims(bed):
    folder = bed.settings.models_dir / "llama-1b"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "num_hidden_layers": 16, "num_attention_heads": 32, "num_key_value_heads": 8, "hidden_size": 2048,
        "max_position_embeddings": 131072, "torch_dtype": "bfloat16"}))
    with open(folder / "model.safetensors", "wb") as f:  # 2.3 GiB of weights, as a sparse file
        f.truncate(2_471_645_608)
    from cortex_app import crud

    m = crud.create_model(bed.db, bed.settings, {"name": "llama-1b", "engine": "vllm", "source": "./llama-1b",
                                                 "device": "cuda", "max_model_len": 8192})
    bed.lc.gpu_status = lambda: h200(80_000)  # 63,771 MiB free; vLLM claims 90 %: 129,394
    with pytest.raises(DoesNotFit, match=r"vLLM claims 90% of GPU 0 \(129,394 MiB of 143,771 MiB\), which has "
                                         r"63,771 MiB free"):
        bed.lc.start(m.id, actor="admin:test")
    assert bed.row(m.id).state == ModelState.STOPPED


def test_what_a_model_held_is_recorded_beside_its_estimate(bed):
    bed.scheduler()  # its resources job follows the container and writes the most it held
    m = bed.llama(context_size=2048)
    ready = bed.start_ready(m.id)
    assert ready.memory_estimate_mib == pytest.approx(bed.lc.estimate(ready).total_mib, abs=0.1)
    row = wait_for(lambda: (r := bed.row(m.id)).memory_used_mib and r, timeout=30)
    print(f"tiny model, CPU, context 2048: estimated {row.memory_estimate_mib:.1f} MiB, "
          f"held {row.memory_used_mib:.1f} MiB (container memory, llama-server's process and all)")
    assert 0 < row.memory_used_mib < 1024
    restarted = bed.lc.stop(m.id, actor="admin:test")
    assert restarted.memory_used_mib == row.memory_used_mib  # kept after the run, until the next start
    again = bed.lc.start(m.id, actor="admin:test")
    assert again.memory_used_mib is None and again.memory_estimate_mib == row.memory_estimate_mib
