"""Fixtures that start real things (the Docker Engine client, containers, PostgreSQL, the
console, a browser) and clean up after themselves, pass or fail.

Under `make test` (CORTEX_TEST_STRICT=1) a missing test bed is an error; a bare `pytest`
on a machine without one skips those tests with the reason.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable, Iterator

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
STRICT = os.environ.get("CORTEX_TEST_STRICT") == "1"
RUN_ID = uuid.uuid4().hex[:8]
TEST_LABEL = "cortex.test-run"  # every container a test creates carries it

LLAMA_IMAGE = "cortex-test/llama-server:latest"
VLLM_STANDIN_IMAGE = "cortex-test/vllm-standin:latest"
BUSYBOX_IMAGE = "cortex-test/busybox:latest"
INGRESS_IMAGE = "cortex-test/nginx:latest"  # nginx from Debian, for the stock image remote ingresses run


def missing(what: str) -> None:
    """A part of the test bed is missing: fail under `make test`, skip otherwise."""
    if STRICT:
        pytest.fail(f"test bed incomplete: {what} (make test sets it up)", pytrace=False)
    pytest.skip(f"{what}; run `make test` to set up the test bed")


from tests.console import Console, free_port, launch, port_is_free  # noqa: E402,F401 - tests import free_port

SESSION_CONSOLE_PORT = free_port()
TEST_SECRET_KEY = "cortex-tests-only-secret-key-0123456789"


@pytest.fixture(autouse=True)
def secret_key():
    """The key the tests' own processes seal secrets with (secretbox.py), as the console loads
    its own at start; a test on a console's database uses that console's key (Console.db)."""
    from cortex_app import secretbox
    from cortex_app.settings import load_settings

    secretbox.use(load_settings({"CORTEX_SECRET_KEY": TEST_SECRET_KEY}))


def wait_http(url: str, timeout: float, ok=lambda r: r.status_code == 200, proc=None,
              interval: float = 0.1) -> httpx.Response:
    """Poll `url` until `ok(response)`; fail with the last error after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} while waiting for {url}")
        try:
            r = httpx.get(url, timeout=2)
            if ok(r):
                return r
            last = f"HTTP {r.status_code}"
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"{url} not ready after {timeout} s (last: {last})")


# --- Docker -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def docker_host() -> str:
    host = os.environ.get("DOCKER_HOST")
    if not host:
        missing("DOCKER_HOST is not set")
    from cortex_app.runtime.docker import engine_info

    info = engine_info(host)
    if not info.reachable:
        missing(f"no Docker Engine answers: {info.error}")
    return host


@pytest.fixture(scope="session")
def docker_client(docker_host: str):
    import docker

    client = docker.DockerClient(base_url=docker_host, timeout=60)
    for image in (LLAMA_IMAGE, VLLM_STANDIN_IMAGE, BUSYBOX_IMAGE):
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            missing(f"image {image} is not built (scripts/build-test-images.sh)")
    yield client
    leftovers = client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={RUN_ID}"})
    for c in leftovers:
        c.remove(force=True)
    client.close()
    assert not leftovers, f"tests left containers behind: {[c.name for c in leftovers]}"


@pytest.fixture(scope="session")
def restartable_engine(docker_host, docker_client):
    """An engine this session may stop and restart (tests/engines.py): make test's private one,
    or, where the machine's own engine answers, a private one beside it with the test images."""
    from tests import engines

    engine = engines.restartable(docker_host, images=(LLAMA_IMAGE, VLLM_STANDIN_IMAGE, BUSYBOX_IMAGE))
    yield engine
    engine.start()  # a test that stopped it and failed must not leave the rest without one
    import docker

    client = docker.DockerClient(base_url=engine.host, timeout=60)
    left = client.containers.list(all=True, filters={"label": f"{TEST_LABEL}={RUN_ID}"})
    for c in left:
        c.remove(force=True)
    client.close()
    engines.release(engine)
    assert not left, f"tests left containers behind on the restartable engine: {[c.name for c in left]}"


@pytest.fixture
def test_labels(request, docker_client) -> Iterator[dict[str, str]]:
    """Labels for the containers one test creates; they are all removed after it."""
    labels = {TEST_LABEL: RUN_ID, "cortex.test": request.node.nodeid[-60:]}
    yield labels
    for c in docker_client.containers.list(all=True, filters={"label": f"cortex.test={labels['cortex.test']}"}):
        c.remove(force=True)


@pytest.fixture(scope="session")
def registry(tmp_path_factory) -> Iterator:
    """A real registry on loopback (Debian's docker-registry; tests/registry.py)."""
    from tests.registry import REGISTRY_BIN, Registry

    if not Path(REGISTRY_BIN).exists():
        missing("Debian's docker-registry is not installed")
    reg = Registry(tmp_path_factory.mktemp("registry"))
    yield reg
    reg.close()


@pytest.fixture
def pulled_images(docker_client) -> Iterator[list[str]]:
    """Images a test pulls (it appends them): removed from the engine after it."""
    import docker

    images: list[str] = []
    yield images
    for image in images:
        try:
            docker_client.images.remove(image, force=True)
        except docker.errors.ImageNotFound:
            pass


# --- a database and settings for code under test ------------------------------------

@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    """The tiny test model, made by the same script that bakes it into the llama image."""
    out = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
    subprocess.run([sys.executable, str(ROOT / "scripts/testimages/make_tiny_gguf.py"), str(out)], check=True)
    return out


@pytest.fixture(scope="session")
def long_gguf(tmp_path_factory) -> Path:
    """The tiny model with a 4096-token trained context: a stream of a thousand tokens and more
    (llama-server caps a slot at the trained context), for what needs a stream that lasts."""
    out = tmp_path_factory.mktemp("gguf-long") / "tiny-long.gguf"
    subprocess.run([sys.executable, str(ROOT / "scripts/testimages/make_tiny_gguf.py"), str(out), "4096"], check=True)
    return out


@pytest.fixture
def bed_settings(tmp_path, tiny_gguf, docker_host):
    from cortex_app.settings import load_settings

    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(tiny_gguf, models / "tiny.gguf")
    return load_settings({"CORTEX_DATA_DIR": str(tmp_path / "data"), "CORTEX_MODELS_DIR": str(models),
                          "DOCKER_HOST": docker_host, "CORTEX_LLAMACPP_IMAGE": LLAMA_IMAGE,
                          "CORTEX_VLLM_IMAGE": VLLM_STANDIN_IMAGE, "CORTEX_INGRESS_IMAGE": INGRESS_IMAGE})


def migrate(url: str) -> None:
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        cfg = Config(str(ROOT / "alembic.ini"))
        cfg.attributes["connection"] = conn
        cfg.attributes["configure_logging"] = False
        command.upgrade(cfg, "head")
    engine.dispose()


@pytest.fixture
def migrated_db(tmp_path):
    """A fresh SQLite database, schema from the migrations (as in production)."""
    from cortex_app.db import make_engine

    url = f"sqlite:///{tmp_path}/cortex.db"
    migrate(url)
    engine = make_engine(url)
    yield engine
    engine.dispose()


def record_at(meter, at, *record_args) -> None:
    """`meter.record(*record_args)` as if the request had ended at `at` (the meter stamps the
    time itself; tests need records from other hours and days)."""
    meter.record(*record_args)
    meter._pending[-1] = (at, *meter._pending[-1][1:])


# --- PostgreSQL ------------------------------------------------------------------------

def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A private PostgreSQL server on a free loopback port, for this session only."""
    bindir = _pg_bin()
    if bindir is None:
        missing("PostgreSQL server binaries are not installed (Debian package postgresql)")
    data = Path(f"/var/tmp/cortex-pg-{RUN_ID}")
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        as_user = ["runuser", "-u", "postgres", "--"]
    data.mkdir(parents=True)
    if as_user:
        shutil.chown(data, "postgres", "postgres")
    try:
        subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data / "db"), "-U", "cortex",
                        "--auth=trust", "-E", "UTF8"], check=True, capture_output=True)
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-w", "-l", str(data / "log"),
                        "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"],
                       check=True, capture_output=True)
        yield f"postgresql+psycopg://cortex@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data / "db"), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture
def fresh_postgres_db(postgres_url: str) -> Iterator[str]:
    """An empty database of its own on the session's server."""
    import sqlalchemy as sa

    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield postgres_url.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


# --- the console ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def start_console(tmp_path_factory) -> Iterator[Callable[..., Console]]:
    """Start a console as `make up` does (tests/console.py) with a fresh data dir (or
    `data_dir=` to restart on an existing one); every console a module starts is stopped at
    its end."""
    if not (Path(os.environ.get("REFLEX_BUN_PATH", "")).is_file() or shutil.which("bun")):
        missing("bun is not installed (scripts/bootstrap.sh)")
    started: list[Console] = []

    def start(data_dir: Path | None = None, **settings: str) -> Console:
        # A restart on the same data dir keeps its port, as an admin's would; any other console
        # takes the session's port while it is free. make up compiles the frontend once per port
        # (and version of the code): a fresh port costs ~20 s, a known one nothing.
        port = next((int(c.url.rsplit(":", 1)[1]) for c in reversed(started) if c.data_dir == data_dir), None)
        if port is None and port_is_free(SESSION_CONSOLE_PORT):
            port = SESSION_CONSOLE_PORT
        settings.setdefault("CORTEX_INGRESS_IMAGE", INGRESS_IMAGE)
        console = launch(data_dir or tmp_path_factory.mktemp("console"), port, **settings)
        started.append(console)
        return console

    yield start
    for console in started:
        console.stop()
        console.close()
        if console.env.get("DOCKER_HOST") and (console.data_dir / "cortex.db").exists():
            import docker

            try:
                client = docker.DockerClient(base_url=console.env["DOCKER_HOST"], timeout=30)
                console.remove_containers(client)  # a console killed by its test leaves its models
                client.close()
            except docker.errors.DockerException:
                pass  # that engine is gone (a test of an unreachable one)


# --- the browser ---------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser():
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        missing("Debian's chromium is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=chromium, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"])
        yield b
        b.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    p = context.new_page()
    p.set_default_timeout(15_000)
    yield p
    context.close()
