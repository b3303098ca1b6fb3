"""The project's own Dockerfile, built and run on the test engine, the way an admin runs it:
the socket mounted, a data volume, a models folder. Used by tests/integration/test_selfhost.py
and bench/image.py.

No registry answers here, so BASE is cortex-test/python-base:bookworm (Debian's python3,
made by scripts/build-test-images.sh) instead of python:3.11-slim, and the build context
carries this machine's extra CA certificates (docker/extra-ca/), which pip and npm inside
the build need to reach the package registries through this network's TLS proxy.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import httpx

ROOT = Path(__file__).resolve().parent.parent
IMAGE = "cortex-test/console:latest"
BASE = "cortex-test/python-base:bookworm"
CONSOLE_PORT = 3000  # the port the image serves on (its CORTEX_PORT)


def build_context(dest: Path) -> Path:
    """The files git knows (tracked, or new and not ignored), as a clean clone would have them,
    plus this host's extra CA certificates."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True,
                            capture_output=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if src.is_file():  # a deleted but still tracked file is skipped
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for cert in glob.glob("/usr/local/share/ca-certificates/*.crt"):
        shutil.copy(cert, dest / "docker/extra-ca" / Path(cert).name)
    return dest


def build_image(client, context: Path, tag: str = IMAGE, *, nocache: bool = False,
                buildargs: Optional[dict] = None) -> tuple[float, list[str]]:
    """`docker build` through the SDK (the classic builder); returns (seconds, output lines).
    A failed step raises with the build's last lines."""
    t0 = time.perf_counter()
    lines: list[str] = []
    before = _image_id(client, tag)
    for chunk in client.api.build(path=str(context), tag=tag, buildargs={"BASE": BASE, **(buildargs or {})},
                                  nocache=nocache, rm=True, forcerm=True, decode=True):
        if "stream" in chunk:
            lines.extend(chunk["stream"].rstrip("\n").splitlines())
        if "error" in chunk:
            tail = "\n".join(lines[-30:])
            raise RuntimeError(f"docker build failed: {chunk['error']}\n{tail}")
    took = time.perf_counter() - t0
    _drop_leftovers(client, before if before != _image_id(client, tag) else None)
    return took, lines


def _image_id(client, tag: str) -> Optional[str]:
    import docker

    try:
        return client.images.get(tag).id
    except docker.errors.ImageNotFound:
        return None


def _drop_leftovers(client, replaced: Optional[str]) -> None:
    """What builds leave: the image this tag named before (now untagged) and the build stages
    of earlier builds. The newest build stage stays: it is the next build's cache."""
    import docker

    stages = sorted(client.images.list(filters={"dangling": True, "label": "cortex.build-stage=build"}),
                    key=lambda i: i.attrs.get("Created", ""))
    doomed = [i.id for i in stages[:-1]]
    if replaced and not client.images.get(replaced).tags:
        doomed.append(replaced)
    for image_id in doomed:
        try:
            client.images.remove(image_id)
        except docker.errors.APIError:
            pass  # a container still uses it, or another build's child: left for docker image prune


def socket_path(docker_host: str) -> str:
    if not docker_host.startswith("unix://"):
        raise ValueError(f"the console container needs the engine's socket; DOCKER_HOST={docker_host} is not one")
    return docker_host[len("unix://"):]


@dataclass
class Console:
    """One console container; `url` is its HTTP surface on a loopback port of this host."""

    client: object
    name: str
    url: str
    volume: str
    network: str
    env: dict = field(default_factory=dict)
    token: Optional[str] = None

    @property
    def container(self):
        return self.client.containers.get(self.name)

    def wait_healthy(self, timeout: float = 30) -> float:
        """Seconds until /api/health answers 200; fails with the container's logs."""
        t0 = time.perf_counter()
        deadline = t0 + timeout
        while time.perf_counter() < deadline:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            c = self.container
            if c.status == "exited":
                raise AssertionError(f"console exited ({c.attrs['State']['ExitCode']}):\n{self.logs()}")
            time.sleep(0.05)
        raise AssertionError(f"console not healthy after {timeout} s:\n{self.logs()}")

    def logs(self) -> str:
        return self.container.logs().decode(errors="replace")[-6000:]

    def sign_in(self, username: str, password: str) -> httpx.Response:
        r = httpx.post(f"{self.url}/api/session", json={"username": username, "password": password}, timeout=10)
        if r.status_code == 200:
            self.token = r.json()["token"]
        return r

    def call(self, method: str, path: str, **kw) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kw)

    def wait_model(self, model_id: int, state: str, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        body: dict = {}
        while time.monotonic() < deadline:
            body = self.call("GET", f"/api/models/{model_id}").json()
            if body.get("state") == state:
                return body
            time.sleep(0.1)
        raise AssertionError(f"model {model_id} not {state} after {timeout} s: {body}\n{self.logs()}")


def run_console(client, docker_host: str, *, name: str, port: int, volume: str, network: str,
                models_dir: Optional[Path] = None, image: str = IMAGE, labels: Optional[dict] = None,
                env: Optional[dict] = None) -> Console:
    """`docker run -d` of the console image, as README "Self-hosting" shows it."""
    volumes = {socket_path(docker_host): {"bind": "/var/run/docker.sock", "mode": "rw"},
               volume: {"bind": "/data", "mode": "rw"}}
    full_env = {"CORTEX_DOCKER_NETWORK": network, **(env or {})}
    if models_dir is not None:
        volumes[str(models_dir)] = {"bind": "/models", "mode": "ro"}
        full_env.setdefault("CORTEX_MODELS_DIR", "/models")
    client.containers.run(image, name=name, detach=True, labels=labels or {}, environment=full_env,
                          volumes=volumes, ports={f"{CONSOLE_PORT}/tcp": ("127.0.0.1", port)})
    return Console(client, name, f"http://127.0.0.1:{port}", volume, network, full_env)


def remove_everything(client, *, consoles: list[str], volume: str, network: str) -> None:
    """The consoles, the model containers on their network, the network and the volume."""
    import docker

    for name in consoles:
        try:
            client.containers.get(name).remove(force=True)
        except docker.errors.NotFound:
            pass
    for c in client.containers.list(all=True, filters={"network": network}):  # exited ones too
        c.remove(force=True)
    for net in client.networks.list(names=[network]):
        if net.name == network:  # the filter also matches longer names that contain it
            net.remove()
    try:
        client.volumes.get(volume).remove(force=True)
    except docker.errors.NotFound:
        pass
