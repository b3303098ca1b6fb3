"""A remote host's GPUs through its own Docker Engine (cortex_app/gpu_samplers.py): a real
dockerd behind TLS in a network namespace, with a stand-in for the NVIDIA Container Toolkit's
hook (so it offers `--gpus` as a GPU host's engine does) and the stand-in nvidia-smi image
(fixed H200 readings in nvidia-smi's CSV form). The sampler container is kept as the console
keeps its truth: made when missing, one only, restart policy `no`, removed with the host."""

import dataclasses
import time

import docker
import pytest

from cortex_app import hosts
from cortex_app.gpu_samplers import GpuSamplers
from tests.conftest import INGRESS_IMAGE
from tests.engines import copy_images
from tests.hostbed import RemoteHost, remote_host
from tests.integration.conftest import wait_for

SMI_IMAGE = "cortex-test/nvidia-smi-standin:latest"
INSTANCE = "samplertest01"


@pytest.fixture(scope="module")
def gpu_host(docker_host):
    with remote_host("cxh-gpu", 10, gpus=True, images=(SMI_IMAGE, INGRESS_IMAGE), images_from=docker_host) as h:
        yield h


def _add(db, settings, h: RemoteHost, name: str):
    return hosts.add_host(db, settings, name=name, endpoint_url=h.tls_url, tls_ca=h.pki.ca_pem,
                          tls_cert=h.client_cert, tls_key=h.client_key)


def test_a_remote_hosts_gpus_are_read_through_a_sampler_the_console_keeps(migrated_db, bed_settings, gpu_host):
    settings = dataclasses.replace(bed_settings, sampler_image=SMI_IMAGE)
    host = _add(migrated_db, settings, gpu_host, "gpu-1")
    remote = docker.DockerClient(base_url=gpu_host.socket, timeout=30)
    samplers = GpuSamplers(migrated_db, settings, INSTANCE)
    try:
        t0 = time.perf_counter()
        samplers.sync()
        [state] = wait_for(lambda: [g for g in samplers.hosts() if len(g.current) == 2], timeout=20)
        print(f"first readings {time.perf_counter() - t0:.2f} s after the sync")
        gpu0, gpu1 = state.current
        assert (gpu0.name, gpu0.memory_total_mib, gpu0.memory_used_mib) == ("NVIDIA H200", 143_771, 0)
        assert (gpu1.memory_used_mib, gpu1.utilization_pct, gpu1.temperature_c, gpu1.power_w) == (9_074, 99, 62, 690.1)
        # The inventory is written by the follower's thread as the lines come: a moment after.
        wait_for(lambda: hosts.get_host(migrated_db, host.id).gpus == [
            {"index": 0, "name": "NVIDIA H200", "memory_total_mib": 143_771},
            {"index": 1, "name": "NVIDIA H200", "memory_total_mib": 143_771}], timeout=5)

        [c] = remote.containers.list(all=True, filters={"label": "cortex.gpu-sampler=true"})
        attrs = c.attrs
        assert attrs["HostConfig"]["RestartPolicy"]["Name"] == "no"
        assert attrs["HostConfig"]["DeviceRequests"][0]["Driver"] == "nvidia"
        # Least privilege: nvidia-smi needs its devices and nothing else (and still reads here).
        assert attrs["HostConfig"]["CapDrop"] == ["ALL"] and attrs["HostConfig"]["NetworkMode"] == "none"
        assert attrs["HostConfig"]["PidsLimit"] == 32 and attrs["HostConfig"]["Memory"] == 128 * 1024 * 1024
        assert "no-new-privileges:true" in attrs["HostConfig"]["SecurityOpt"]
        assert attrs["Config"]["Labels"]["cortex.instance"] == INSTANCE
        assert "cortex.managed" not in attrs["Config"]["Labels"]  # no model reconcile pass sees it
        # The engine's GPU path: its nvidia driver put the GPUs to give in the process's environment.
        assert b"NVIDIA_VISIBLE_DEVICES=all" in c.exec_run(["cat", "/proc/1/environ"]).output.split(b"\0")

        samplers.sync()  # converged: nothing made twice
        assert len(remote.containers.list(all=True, filters={"label": "cortex.gpu-sampler=true"})) == 1
        c.remove(force=True)  # gone from outside: the next sync makes it again
        samplers.sync()
        [again] = remote.containers.list(filters={"label": "cortex.gpu-sampler=true"})
        assert again.id != c.id
        wait_for(lambda: [g for g in samplers.hosts() if g.current and g.at > time.time() - 3], timeout=15)

        follower = GpuSamplers(migrated_db, settings, INSTANCE)  # a console that does not lead
        try:
            follower.sync(keep=False)
            wait_for(lambda: [g for g in follower.hosts() if len(g.current) == 2], timeout=15)
            assert len(remote.containers.list(all=True, filters={"label": "cortex.gpu-sampler=true"})) == 1
        finally:
            follower.close()

        hosts.remove_host(migrated_db, settings, host.id, INSTANCE)
        assert remote.containers.list(all=True, filters={"label": "cortex.gpu-sampler=true"}) == []
        samplers.sync()
        assert samplers.hosts() == []
    finally:
        samplers.close()
        remote.close()


def test_a_host_without_the_nvidia_toolkit_says_so(migrated_db, bed_settings, docker_host):
    plain = RemoteHost("cxh-nogpu", 11, tls=True, ssh=False)  # an engine that offers no --gpus
    try:
        plain.up()
        copy_images(docker_host, plain.socket, [SMI_IMAGE])
        settings = dataclasses.replace(bed_settings, sampler_image=SMI_IMAGE)
        _add(migrated_db, settings, plain, "cpu-only")
        samplers = GpuSamplers(migrated_db, settings, INSTANCE)
        remote = docker.DockerClient(base_url=plain.socket, timeout=30)
        try:
            samplers.sync()
            [state] = samplers.hosts()
            assert state.current == [] and "no GPU readings" in state.notice and "GPU runtime" in state.notice, \
                state.notice
            assert remote.containers.list(all=True, filters={"label": "cortex.gpu-sampler=true"}) == []  # none left
            samplers.sync()  # within its backoff: not tried again, nothing made
            assert remote.containers.list(all=True, filters={"label": "cortex.gpu-sampler=true"}) == []
        finally:
            samplers.close()
            remote.close()
    finally:
        plain.down()


def test_auto_places_a_model_on_the_host_whose_sampler_reports_room(bed, gpu_host):
    """Placement on the production path: the GPU host's readings come from the sampler the
    console keeps there (the stand-in nvidia-smi's two H200s), wired into the lifecycle as the
    scheduler wires them. This machine has no GPU: its NVML reading is a stand-in, nearly full."""
    from cortex_app.models import ModelState
    from tests.integration.test_fit import H200_MIB, h200

    settings = dataclasses.replace(bed.settings, sampler_image=SMI_IMAGE)
    host = _add(bed.db, settings, gpu_host, "gpu-auto")
    samplers = GpuSamplers(bed.db, settings, INSTANCE)
    try:
        samplers.sync()
        wait_for(lambda: len(samplers.status(host.id).gpus) == 2, timeout=20)
        bed.lc.remote_gpu_status = samplers.status  # as ConsoleScheduler does
        bed.lc.gpu_status = lambda: h200(H200_MIB - 100)  # stand-in NVML here: 100 MiB free
        m = bed.llama("big", device="cuda", context_size=4096, host="auto")
        started = bed.lc.start(m.id, actor="admin:test")
        assert started.host_id == host.id, started.state_reason
        assert any("placed on host gpu-auto" in e.reason for e in bed.events(m.id))
        # Its engine lacks the model's image (only the sampler's is there): Start says so, there.
        assert started.state == ModelState.FAILED and gpu_host.tls_url in started.state_reason, started.state_reason
    finally:
        samplers.close()  # its sampler container goes with the test host (module fixture)
