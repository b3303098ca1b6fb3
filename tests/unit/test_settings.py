from pathlib import Path

import pytest

from cortex_app.settings import DEFAULT_DOCKER_HOST, SettingsError, load_settings, redact_url


def test_defaults_put_sqlite_in_the_data_dir(tmp_path):
    s = load_settings({"CORTEX_DATA_DIR": str(tmp_path)})
    assert s.data_dir == tmp_path
    assert s.db_url == f"sqlite:///{tmp_path}/cortex.db"
    assert s.db_kind == "sqlite"
    assert s.port == 3000
    assert s.docker_host == DEFAULT_DOCKER_HOST
    assert s.models_dir == tmp_path / "models"
    assert s.keep_models_on_restart is False


def test_default_data_dir_is_dot_data():
    assert load_settings({}).data_dir == Path("./data").resolve()


@pytest.mark.parametrize("url, expected", [
    ("postgresql://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
    ("postgres://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
    ("postgresql+psycopg://u:p@h/db", "postgresql+psycopg://u:p@h/db"),
    ("sqlite:////x/y.db", "sqlite:////x/y.db"),
])
def test_db_url_uses_psycopg3_for_postgresql(url, expected):
    s = load_settings({"CORTEX_DB_URL": url})
    assert s.db_url == expected


@pytest.mark.parametrize("env, names", [
    ({"CORTEX_PORT": "abc"}, "CORTEX_PORT"),
    ({"CORTEX_PORT": "70000"}, "CORTEX_PORT"),
    ({"CORTEX_PORT": "0"}, "CORTEX_PORT"),
    ({"CORTEX_DB_URL": "just-a-path.db"}, "CORTEX_DB_URL"),
    ({"CORTEX_KEEP_MODELS_ON_RESTART": "maybe"}, "CORTEX_KEEP_MODELS_ON_RESTART"),
    ({"CORTEX_USAGE_RETENTION_DAYS": "0"}, "CORTEX_USAGE_RETENTION_DAYS"),
    ({"CORTEX_USAGE_RETENTION_DAYS": "30d"}, "CORTEX_USAGE_RETENTION_DAYS"),
])
def test_bad_values_name_the_variable(env, names):
    with pytest.raises(SettingsError, match=names):
        load_settings(env)


def test_docker_host_and_images_from_env():
    s = load_settings({"DOCKER_HOST": "tcp://10.0.0.1:2375", "CORTEX_LLAMACPP_IMAGE": "a:b",
                       "CORTEX_VLLM_IMAGE": "c:d", "CORTEX_KEEP_MODELS_ON_RESTART": "true"})
    assert (s.docker_host, s.llamacpp_image, s.vllm_image) == ("tcp://10.0.0.1:2375", "a:b", "c:d")
    assert s.keep_models_on_restart is True
    assert load_settings({}).usage_retention_days == 90
    assert load_settings({"CORTEX_USAGE_RETENTION_DAYS": "400"}).usage_retention_days == 400


@pytest.mark.parametrize("url, shown", [
    ("postgresql+psycopg://user:s3cret@db:5432/cortex", "postgresql+psycopg://user:***@db:5432/cortex"),
    ("postgresql+psycopg://user@db/cortex", "postgresql+psycopg://user@db/cortex"),
    ("sqlite:////data/cortex.db", "sqlite:////data/cortex.db"),
    ("postgresql://u:p@ss@h/db", "postgresql://u:***@h/db"),
])
def test_redact_url_hides_the_password(url, shown):
    assert redact_url(url) == shown


def test_self_hosting_settings():
    s = load_settings({"CORTEX_DOCKER_NETWORK": "cortex", "CORTEX_MODELS_HOST_DIR": "/srv/models/",
                       "CORTEX_PUBLISH_HOST": "0.0.0.0"})
    assert (s.docker_network, s.models_host_dir, s.publish_host) == ("cortex", Path("/srv/models"), "0.0.0.0")
    d = load_settings({})
    assert (d.docker_network, d.models_host_dir, d.publish_host) == (None, None, "127.0.0.1")
    assert load_settings({"CORTEX_PUBLISH_HOST": "none"}).publish_host is None


@pytest.mark.parametrize("env, name", [
    ({"CORTEX_DOCKER_NETWORK": "host"}, "CORTEX_DOCKER_NETWORK"),
    ({"CORTEX_DOCKER_NETWORK": "bad name"}, "CORTEX_DOCKER_NETWORK"),
    ({"CORTEX_MODELS_HOST_DIR": "relative/models"}, "CORTEX_MODELS_HOST_DIR"),
    ({"CORTEX_PUBLISH_HOST": "localhost:80"}, "CORTEX_PUBLISH_HOST"),
])
def test_bad_self_hosting_settings_name_the_variable(env, name):
    with pytest.raises(SettingsError, match=name):
        load_settings(env)


@pytest.mark.parametrize("env, origins", [
    ({}, ("http://localhost:3000", "http://127.0.0.1:3000", "http://[::1]:3000")),
    ({"CORTEX_PORT": "8111"}, ("http://localhost:8111", "http://127.0.0.1:8111", "http://[::1]:8111")),
    ({"CORTEX_PUBLIC_URL": "http://GPU-Host:3000/"},
     ("http://gpu-host:3000", "http://localhost:3000", "http://127.0.0.1:3000", "http://[::1]:3000")),
    ({"CORTEX_PUBLIC_URL": "https://cortex.example.com:443/console"},
     ("https://cortex.example.com", "http://localhost:3000", "http://127.0.0.1:3000", "http://[::1]:3000")),
    ({"CORTEX_PUBLIC_URL": "http://[fd00::5]:3000"},
     ("http://[fd00::5]:3000", "http://localhost:3000", "http://127.0.0.1:3000", "http://[::1]:3000")),
])
def test_only_the_consoles_own_origins_are_allowed(env, origins):
    assert load_settings(env).allowed_origins == origins


@pytest.mark.parametrize("url", ["gpu-host:3000", "ftp://gpu-host", "http://", "http://gpu-host:99999"])
def test_a_public_url_that_is_no_url_is_refused(url):
    with pytest.raises(SettingsError, match="CORTEX_PUBLIC_URL"):
        load_settings({"CORTEX_PUBLIC_URL": url})
