"""hosts.add_host (what POST /api/hosts and the Hosts page call) refuses, before it connects
anywhere and saving nothing: an endpoint that is a socket on the console's own machine, and a
models dir or HF cache that every model container there would mount from the wrong place."""

import pytest

from cortex_app import hosts
from cortex_app.runtime.types import EngineInfo
from cortex_app.settings import load_settings
from tests.hostbed import ssh_keypair


@pytest.fixture
def add(migrated_db, tmp_path):
    settings = load_settings({"CORTEX_DATA_DIR": str(tmp_path), "DOCKER_HOST": "unix:///run/none.sock"})
    key, _ = ssh_keypair()
    _, host_key = ssh_keypair()  # the machine's host key, as given (confirmed)
    checked = []

    def check(target, timeout):
        checked.append(target.url)
        return EngineInfo(host=target.url, reachable=True, version="28.2.2", seen_host_key="")

    def add(**fields):
        body = dict(name="gpu-2", endpoint_url="ssh://ops@10.0.0.12", ssh_key=key, ssh_host_key=host_key) | fields
        return hosts.add_host(migrated_db, settings, check=check, **body)

    add.checked = checked
    return add


def _names(migrated_db):
    return [h.name for h in hosts.list_hosts(migrated_db)]


@pytest.mark.parametrize("url", ["unix:///var/run/docker.sock", "unix:///tmp/other.sock"])
def test_a_unix_socket_is_no_other_host(add, migrated_db, url):
    with pytest.raises(hosts.HostInvalid, match="tcp:// \\(with TLS\\) or ssh://; a unix socket is this machine's"):
        add(endpoint_url=url)
    assert add.checked == [] and _names(migrated_db) == ["local"]


@pytest.mark.parametrize("field, folder", [
    ("models_dir", "/"), ("hf_cache_dir", "/"), ("models_dir", "/etc/ssl"), ("hf_cache_dir", "/usr"),
    ("models_dir", "/var/run"), ("hf_cache_dir", "/run/docker"), ("models_dir", "/var/lib/docker/volumes"),
    ("hf_cache_dir", "/proc/1"), ("models_dir", "/home"), ("hf_cache_dir", "/srv/../etc"), ("models_dir", "//etc/."),
    # whole trees, and hidden folders (the HF cache is mounted read-write)
    ("hf_cache_dir", "/root/.ssh"), ("hf_cache_dir", "/home/ops/.ssh"), ("models_dir", "/usr/local/bin"),
    ("hf_cache_dir", "/lib/modules"), ("models_dir", "/var/lib/containerd/io"), ("hf_cache_dir", "/home/ops/.docker"),
])
def test_a_system_folder_is_no_models_dir(add, migrated_db, field, folder):
    with pytest.raises(hosts.HostInvalid, match=f"{field}: "):
        add(**{field: folder})
    assert add.checked == [] and _names(migrated_db) == ["local"]


def test_a_folder_of_its_own_is_kept(add, migrated_db):
    host = add(models_dir="/srv/models", hf_cache_dir="/data/hf-cache/")
    assert (host.models_dir, host.hf_cache_dir) == ("/srv/models", "/data/hf-cache")
    other = add(name="gpu-3", endpoint_url="ssh://ops@10.0.0.13", models_dir="/var/lib/cortex/models",
                hf_cache_dir="/home/ops/hf-cache")
    assert (other.models_dir, other.hf_cache_dir) == ("/var/lib/cortex/models", "/home/ops/hf-cache")
    assert add.checked == ["ssh://ops@10.0.0.12", "ssh://ops@10.0.0.13"]
    assert _names(migrated_db) == ["local", "gpu-2", "gpu-3"]
