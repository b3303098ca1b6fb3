"""hosting.py: how model containers are wired to the console, on the host and in a container."""

from pathlib import Path

import pytest

from cortex_app.engines import build_spec
from cortex_app.hosting import (Placement, PlacementError, SelfContainer, SelfMount, container_id_from_mountinfo,
                                decide, host_path, resolve)
from cortex_app.models import Engine, Model
from cortex_app.settings import load_settings

CID = "4f" * 32
MOUNTINFO = (
    "1290 1200 0:88 / / rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X\n"
    f"1301 1290 254:1 /var/lib/docker/containers/{CID}/resolv.conf /etc/resolv.conf rw - ext4 /dev/vda rw\n"
    f"1302 1290 254:1 /var/lib/docker/containers/{CID}/hostname /etc/hostname rw - ext4 /dev/vda rw\n"
)
VOLUME = "/var/lib/docker/volumes/cortex-data/_data"


def settings(**env):
    return load_settings({"CORTEX_DATA_DIR": "/data", "CORTEX_MODELS_DIR": "/models", **env})


def me(*mounts, networks=("bridge",)):
    return SelfContainer(id=CID, name="cortex", mounts=tuple(SelfMount(s, d) for s, d in mounts),
                         networks=networks)


def test_the_container_id_is_read_from_mountinfo_and_absent_on_a_host():
    assert container_id_from_mountinfo(MOUNTINFO) == CID
    assert container_id_from_mountinfo("22 1 254:1 / / rw - ext4 /dev/vda rw\n") is None


@pytest.mark.parametrize("path, expected", [
    ("/models", "/srv/models"),
    ("/models/org/x.gguf", "/srv/models/org/x.gguf"),
    ("/data/hf-cache", f"{VOLUME}/hf-cache"),
    ("/data/sub/deeper", "/mnt/deeper"),  # the deepest mount wins
    ("/modelsfoo", None),  # a prefix of the name is not a parent folder
    ("/etc/x", None),
])
def test_host_path_follows_the_deepest_mount(path, expected):
    mounts = [SelfMount("/srv/models", "/models"), SelfMount(VOLUME, "/data"), SelfMount("/mnt/deeper", "/data/sub/deeper")]
    assert host_path(Path(path), mounts) == expected


def test_on_the_host_models_use_loopback_ports_and_the_console_paths():
    p = decide(settings(), None)
    assert p == Placement("/models", "/data/hf-cache", None, probe_by_name=False, publish_host="127.0.0.1")


def test_in_a_container_models_join_the_network_and_mounts_come_from_the_host():
    s = settings(CORTEX_DOCKER_NETWORK="cortex", CORTEX_MODELS_HOST_DIR="/srv/models")
    p = decide(s, me(("/srv/models", "/models"), (VOLUME, "/data")))
    assert (p.models_source, p.hf_cache_source, p.network, p.probe_by_name, p.in_container) == (
        "/srv/models", f"{VOLUME}/hf-cache", "cortex", True, True)
    # Unset CORTEX_MODELS_HOST_DIR: the mount says the same; a models dir under the volume works too.
    assert decide(settings(CORTEX_DOCKER_NETWORK="cortex"),
                  me(("/srv/models", "/models"), (VOLUME, "/data"))).models_source == "/srv/models"
    under_data = decide(settings(CORTEX_DOCKER_NETWORK="cortex", CORTEX_MODELS_DIR="/data/models"),
                        me((VOLUME, "/data")))
    assert under_data.models_source == f"{VOLUME}/models"


@pytest.mark.parametrize("env, mounts, message", [
    ({"CORTEX_DOCKER_NETWORK": "cortex", "CORTEX_MODELS_HOST_DIR": "/srv/other"},
     [("/srv/models", "/models"), (VOLUME, "/data")],
     "CORTEX_MODELS_HOST_DIR=/srv/other, but CORTEX_MODELS_DIR=/models is mounted from /srv/models"),
    ({"CORTEX_DOCKER_NETWORK": "cortex"}, [(VOLUME, "/data")], "CORTEX_MODELS_DIR=/models is inside the console's"),
    ({"CORTEX_DOCKER_NETWORK": "cortex"}, [("/srv/models", "/models")], "CORTEX_DATA_DIR=/data is not a volume"),
    ({}, [("/srv/models", "/models"), (VOLUME, "/data")], "set CORTEX_DOCKER_NETWORK"),
    ({"CORTEX_MODELS_HOST_DIR": "/srv/models"}, None, "unset CORTEX_MODELS_HOST_DIR"),
    ({"CORTEX_PUBLISH_HOST": "none"}, None, "CORTEX_PUBLISH_HOST=none"),
])
def test_wiring_that_cannot_work_is_refused_naming_the_setting(env, mounts, message):
    with pytest.raises(PlacementError) as err:
        decide(settings(**env), me(*mounts) if mounts is not None else None)
    assert message in str(err.value)


def test_a_console_on_the_host_network_probes_published_ports_but_mounts_from_the_host():
    p = decide(settings(CORTEX_DOCKER_NETWORK="cortex"),
               me(("/srv/models", "/models"), (VOLUME, "/data"), networks=("host",)))
    assert (p.in_container, p.probe_by_name, p.publish_host, p.models_source) == (True, False, "127.0.0.1",
                                                                                   "/srv/models")


class FakeRuntime:
    """A stand-in for runtime/docker.py's three calls that resolve() makes, recording them."""

    def __init__(self, found):
        self.found, self.calls = found, []

    def self_container(self, cid):
        self.calls.append(("inspect", cid))
        return self.found

    def ensure_network(self, name):
        self.calls.append(("network", name))

    def connect_network(self, name, cid):
        self.calls.append(("connect", name, cid))


def test_resolve_in_a_container_creates_and_joins_the_network(monkeypatch):
    monkeypatch.setattr("cortex_app.hosting.own_container_candidates", lambda: [CID, "4f4f4f4f4f4f"])
    rt = FakeRuntime(me(("/srv/models", "/models"), (VOLUME, "/data")))
    p = resolve(settings(CORTEX_DOCKER_NETWORK="cortex"), rt)
    assert p.probe_by_name and rt.calls == [("inspect", CID), ("network", "cortex"), ("connect", "cortex", CID)]
    joined = FakeRuntime(me(("/srv/models", "/models"), (VOLUME, "/data"), networks=("cortex",)))
    resolve(settings(CORTEX_DOCKER_NETWORK="cortex"), joined)
    assert ("connect", "cortex", CID) not in joined.calls
    on_host_net = FakeRuntime(me(("/srv/models", "/models"), (VOLUME, "/data"), networks=("host",)))
    resolve(settings(CORTEX_DOCKER_NETWORK="cortex"), on_host_net)
    assert ("connect", "cortex", CID) not in on_host_net.calls  # Docker refuses it for host networking


def test_resolve_where_no_container_is_ours_is_the_host(monkeypatch):
    # A VM made from a container image has /.dockerenv; a dev container may run an engine of
    # its own. Either way this engine knows no container of ours: its host is ours.
    for candidates in (["vmhost"], [CID, "4f4f4f4f4f4f"]):
        monkeypatch.setattr("cortex_app.hosting.own_container_candidates", lambda: candidates)
        p = resolve(settings(), FakeRuntime(None))
        assert not p.in_container and not p.probe_by_name and p.models_source == "/models"


def test_the_spec_uses_host_paths_and_the_network_and_keeps_old_hashes():
    s = settings(CORTEX_DOCKER_NETWORK="cortex")
    m = Model(id=3, name="m", served_name="m", engine=Engine.LLAMACPP, image="img", source="x.gguf")
    on_host = build_spec(m, s)
    assert on_host.network is None and on_host.mounts[0].source == "/models"
    placed = build_spec(m, s, Placement("/srv/models", "/v/hf", "cortex", probe_by_name=True, publish_host=None))
    assert placed.network == "cortex" and placed.mounts[0].source == "/srv/models"
    assert placed.spec_hash != on_host.spec_hash  # moving the console into a container restarts nothing silently
    # Pinned digests: a change to what a spec holds or how it hashes marks every model running
    # across the upgrade as stale, so it must be deliberate (and said in the README's upgrade
    # notes). Without a network the spec hashes as if networks did not exist (since e50f272);
    # these digests are those of the hardened specs (no-new-privileges, pids limit, CPU `void`).
    assert on_host.spec_hash == "c89b696c2b3e11719b9fb92d227143ec8994b90a215eaacd8ea781c0f6365785"
    v = Model(id=4, name="v", served_name="v", engine=Engine.VLLM, image="img", source="org/name")
    assert build_spec(v, s).spec_hash == "1ff3f2c589a6fad8bac27bb798df066bc0db35a292164d20631db20c8ab6bb45"


def test_another_hosts_models_publish_nothing_and_join_that_hosts_own_network():
    from cortex_app.hosting import remote

    p = remote(settings(), address="10.0.0.12", models_dir="/srv/models", hf_cache_dir=None, network="cortex-models-x")
    assert (p.models_source, p.hf_cache_source) == ("/srv/models", "/data/hf-cache")  # its folder; else the same path
    assert p.publish_host is None and p.reach == "10.0.0.12" and not p.probe_by_name
    assert p.network == "cortex-models-x"
    m = Model(id=3, name="m", served_name="m", engine=Engine.LLAMACPP, image="i", source="a.gguf")
    spec = build_spec(m, settings(), p)
    assert any(mt.source.startswith("/srv/models") for mt in spec.mounts), spec.mounts
    assert spec.network == "cortex-models-x"
    assert remote(settings(), address="h", models_dir=None, hf_cache_dir=None, network="n").models_source == "/models"
    with pytest.raises(PlacementError, match="no address"):
        remote(settings(), address="", models_dir=None, hf_cache_dir=None, network="n")
    v6 = remote(settings(), address="[fd00::12]", models_dir=None, hf_cache_dir=None, network="n")
    assert v6.reach == "fd00::12"


@pytest.mark.parametrize("address,interface", [("10.0.0.12", "10.0.0.12"), ("[fd00::12]", "fd00::12"),
                                               ("fd00::12", "fd00::12"), ("gpu-2.lan", "0.0.0.0")])
def test_a_remote_hosts_ingress_is_published_on_its_address_when_it_is_one(address, interface):
    from cortex_app.hosting import publish_interface

    assert publish_interface(address) == interface
