"""The checks `make up` runs before serving: one clear line per fault, nothing half-made."""

import os
import socket
import subprocess
import sys

import pytest

from cortex_app.prestart import PrestartError, check_data_dir, check_port, migrate
from tests.conftest import ROOT, free_port


def run_prestart(tmp_path, **env):
    base = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_")}
    base.update({"CORTEX_DATA_DIR": str(tmp_path / "data"), "CORTEX_PORT": str(free_port()),
                 "DOCKER_HOST": "unix:///nonexistent/docker.sock"})
    base.update(env)
    return subprocess.run([sys.executable, "-m", "cortex_app.prestart"], cwd=ROOT, env=base,
                          capture_output=True, text=True, timeout=60)


def test_fresh_data_dir_is_created_and_migrated(tmp_path):
    r = run_prestart(tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "data" / "cortex.db").is_file()
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()
    assert f"migrated empty -> {head}" in r.stdout
    # No engine is not fatal: the console starts and says so.
    assert "WARNING no Docker Engine answers at unix:///nonexistent/docker.sock" in r.stdout
    again = run_prestart(tmp_path)
    assert again.returncode == 0 and "up to date" in again.stdout


@pytest.mark.parametrize("case", ["under-a-file", "port-taken", "db-unreachable", "bad-port"])
def test_faults_give_one_line_naming_the_setting_and_create_nothing(tmp_path, case):
    blocker = None
    env = {}
    if case == "under-a-file":
        (tmp_path / "afile").write_text("x")
        env["CORTEX_DATA_DIR"] = str(tmp_path / "afile" / "data")
        setting = "CORTEX_DATA_DIR"
    elif case == "port-taken":
        blocker = socket.socket()
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        env["CORTEX_PORT"] = str(blocker.getsockname()[1])
        setting = "CORTEX_PORT"
    elif case == "db-unreachable":
        env["CORTEX_DB_URL"] = f"postgresql://cortex:hunter2@127.0.0.1:{free_port()}/cortex"
        setting = "CORTEX_DB_URL"
    else:
        env["CORTEX_PORT"] = "http"
        setting = "CORTEX_PORT"
    try:
        r = run_prestart(tmp_path, **env)
    finally:
        if blocker:
            blocker.close()
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cortex: error: "), r.stderr
    assert setting in lines[0]
    assert "Traceback" not in r.stderr + r.stdout
    assert "hunter2" not in r.stderr + r.stdout
    assert not (tmp_path / "data").exists(), "a failed prestart must not create the data dir"


def test_check_data_dir_refuses_an_unwritable_place(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(PrestartError, match="not a folder"):
        check_data_dir(tmp_path / "f" / "sub")
    check_data_dir(tmp_path / "new" / "deeper")  # creatable: fine, and not created by the check
    assert not (tmp_path / "new").exists()


def test_check_port_sees_a_listener():
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        s.listen()
        with pytest.raises(PrestartError, match="already in use"):
            check_port(s.getsockname()[1])
    check_port(free_port())


def test_migrate_names_an_unopenable_sqlite_file(tmp_path):
    with pytest.raises(PrestartError, match="CORTEX_DB_URL"):
        migrate(f"sqlite:///{tmp_path}/missing-dir/cortex.db")


def test_first_admin_from_the_environment_once(tmp_path):
    r = run_prestart(tmp_path, CORTEX_ADMIN_USER="ops", CORTEX_ADMIN_PASSWORD="a-long-password")
    assert r.returncode == 0 and "admin:     created 'ops' from CORTEX_ADMIN_USER" in r.stdout
    again = run_prestart(tmp_path, CORTEX_ADMIN_USER="other", CORTEX_ADMIN_PASSWORD="another-password")
    assert again.returncode == 0 and "ignored" in again.stdout
    assert "a-long-password" not in r.stdout + r.stderr


def test_too_short_admin_password_names_the_setting(tmp_path):
    r = run_prestart(tmp_path, CORTEX_ADMIN_USER="ops", CORTEX_ADMIN_PASSWORD="short")
    assert r.returncode == 2 and "CORTEX_ADMIN_PASSWORD" in r.stderr and "Traceback" not in r.stderr


def test_without_an_admin_each_start_prints_a_new_one_time_setup_code(tmp_path):
    import re

    import sqlalchemy as sa

    codes = []
    for _ in range(2):
        r = run_prestart(tmp_path)
        assert r.returncode == 0, r.stderr
        found = re.search(r"admin:     none yet: open http://localhost:\d+/setup and create it with the one-time "
                          r"setup code ([A-Z2-9]{4}(?:-[A-Z2-9]{4}){3})", r.stdout)
        assert found, r.stdout
        codes.append(found.group(1))
    assert codes[0] != codes[1]
    db_bytes = b"".join(p.read_bytes() for p in tmp_path.rglob("cortex.db*"))
    assert not any(c.replace("-", "").encode() in db_bytes or c.encode() in db_bytes for c in codes)  # hashed only
    engine = sa.create_engine(f"sqlite:///{tmp_path}/data/cortex.db")
    from cortex_app import auth

    with pytest.raises(auth.AuthError, match="wrong setup code"):
        auth.create_first_admin(engine, "root", "a-long-password", codes[0])  # the older one no longer works
    auth.create_first_admin(engine, "root", "a-long-password", codes[1])
    r = run_prestart(tmp_path)
    assert "admin:     account exists" in r.stdout and "setup code" not in r.stdout
    engine.dispose()
