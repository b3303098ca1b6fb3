"""A real console on this host, started the way the README says (`make up`: scripts/up.sh),
for tests, benchmarks and the chaos harness.

`launch()` runs scripts/up.sh with the settings given (a data dir, a free port, a run dir of
its own so several consoles of one checkout do not share a PID file) and returns once it
serves; `stop()` is `make down` (SIGTERM to the process group), `kill()` a crash (SIGKILL).
The HTTP helpers sign in over POST /api/session and act through the API, as a script would.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


class ConsoleFailed(AssertionError):
    pass


@dataclass
class Console:
    url: str
    data_dir: Path
    run_dir: Path
    env: dict
    token: Optional[str] = None
    output: str = ""  # what the last `make up` printed (the first run's setup code, for one)
    _http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60), repr=False)

    # --- the process ------------------------------------------------------------------------

    @property
    def pid(self) -> Optional[int]:
        try:
            return int((self.run_dir / "cortex.pid").read_text())
        except (OSError, ValueError):
            return None

    @property
    def log(self) -> Path:
        return self.run_dir / "cortex.log"

    @property
    def alive(self) -> bool:
        pid = self.pid
        if pid is None:
            return False
        try:
            os.killpg(pid, 0)
            return True
        except ProcessLookupError:
            return False

    def start(self, timeout: float = 300) -> float:
        """`make up` (scripts/up.sh) with this console's settings; seconds until it served."""
        t0 = time.monotonic()
        r = subprocess.run([str(ROOT / "scripts/up.sh")], cwd=ROOT, env=self.env, capture_output=True, text=True,
                           timeout=timeout)
        if r.returncode != 0:
            raise ConsoleFailed(f"make up failed ({r.returncode}):\n{r.stderr[-3000:]}\n--- log ---\n{self.tail()}")
        self.output = r.stdout
        return time.monotonic() - t0

    def stop(self, timeout: float = 60) -> None:
        """`make down`: SIGTERM to the console's process group, then wait for all of it."""
        pid = self.pid
        subprocess.run([str(ROOT / "scripts/down.sh")], cwd=ROOT, env=self.env, capture_output=True, timeout=timeout)
        if pid is not None:
            _wait_group_gone(pid, timeout)

    def kill(self) -> None:
        """A crash: SIGKILL to the whole process group, no shutdown policy."""
        pid = self.pid
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _wait_group_gone(pid, 10)
        (self.run_dir / "cortex.pid").unlink(missing_ok=True)

    def tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    @property
    def db_url(self) -> str:
        return self.env.get("CORTEX_DB_URL") or f"sqlite:///{self.data_dir}/cortex.db"

    @property
    def settings(self):
        """Its settings, as it reads them from its environment."""
        from cortex_app.settings import load_settings

        return load_settings(self.env)

    def db(self):
        """Its database, with its secret key loaded in this process (the key file the console
        made in its data dir, or its CORTEX_SECRET_KEY): what this process seals there, the
        console reads, and the other way round."""
        from cortex_app import secretbox
        from cortex_app.db import make_engine

        secretbox.use(self.settings)
        return make_engine(self.db_url)

    # --- the HTTP API, as a script uses it ----------------------------------------------------

    def sign_in(self, username: str, password: str) -> httpx.Response:
        r = self._http.post(f"{self.url}/api/session", json={"username": username, "password": password})
        if r.status_code == 200:
            self.token = r.json()["token"]
        return r

    def call(self, method: str, path: str, timeout: float = 60, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return self._http.request(method, f"{self.url}{path}", headers=headers, timeout=timeout, **kw)

    def model(self, model_id: int) -> dict:
        r = self.call("GET", f"/api/models/{model_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait_model(self, model_id: int, *states: str, timeout: float = 60) -> dict:
        """Poll GET /api/models/{id} until its state is one of `states` (the console's reconciler
        judges readiness; a script waits for the row, as the Models page does)."""
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            body = self.model(model_id)
            if body.get("state") in states:
                return body
            time.sleep(0.05)
        raise AssertionError(f"model {model_id} not {'/'.join(states)} after {timeout} s: {body}\n{self.tail()}")

    def start_ready(self, model_id: int, timeout: float = 60) -> dict:
        """POST .../start, then wait for the row to leave `loading`."""
        r = self.call("POST", f"/api/models/{model_id}/start")
        assert r.status_code in (202, 503), r.text
        return self.wait_model(model_id, "running", "failed", "stopped", timeout=timeout)

    def instance(self) -> str:
        """This console's installation id: the `cortex.instance` label on its containers."""
        from cortex_app.db import installation_id, make_engine

        db = make_engine(self.db_url)
        try:
            return installation_id(db)
        finally:
            db.dispose()

    def containers(self, client, all: bool = True) -> list:
        """This console's model containers on the engine `client` talks to (by label)."""
        return client.containers.list(all=all, filters={"label": f"cortex.instance={self.instance()}"})

    def remove_containers(self, client) -> int:
        """Clean-up by label: whatever of this console's containers is left (e.g. after a kill)."""
        left = self.containers(client)
        for c in left:
            c.remove(force=True)
        return len(left)

    def close(self) -> None:
        self._http.close()


def _wait_group_gone(pid: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def console_env(data_dir: Path, port: int, run_dir: Path, **settings: str) -> dict:
    """The environment `make up` gets: this process's, minus any CORTEX_* of the caller's
    shell (only the settings given here count), plus the console's own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CORTEX_") or k == "CORTEX_TEST_STRICT"}
    env.update(CORTEX_DATA_DIR=str(data_dir), CORTEX_PORT=str(port), CORTEX_RUN_DIR=str(run_dir), **settings)
    return env


def launch(data_dir: Path, port: Optional[int] = None, **settings: str) -> Console:
    """A console on a fresh (or an existing) data dir, serving when this returns."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    run_dir = data_dir / f"run-{port}"
    console = Console(f"http://127.0.0.1:{port}", data_dir, run_dir, console_env(data_dir, port, run_dir, **settings))
    console.start()
    return console
