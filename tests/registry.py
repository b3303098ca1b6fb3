"""A real container registry on loopback for pull tests: Debian's `docker-registry` (the
CNCF distribution registry) on a free port, optionally behind htpasswd auth, and a
bandwidth-limited TCP relay in front of it, so a pull lasts long enough for its progress to
be seen (a slow network, not a stand-in: every byte still comes from the registry).

The Docker Engine trusts plain HTTP for 127.0.0.0/8 registries by default. Everything is
stopped by `close()`: the registry by its process, the relay's threads by their sockets.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from pathlib import Path
from typing import Optional

import httpx

REGISTRY_BIN = "/usr/bin/docker-registry"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowRelay:
    """127.0.0.1:<port> -> target, passing the target's answers on at `rate` bytes/s per
    connection."""

    def __init__(self, target_port: int, rate: int):
        self.target_port, self.rate = target_port, rate
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self._open: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self._open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, 0), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.rate), daemon=True).start()

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket, rate: int) -> None:
        t0, sent = time.monotonic(), 0
        try:
            while True:
                data = src.recv(16384)
                if not data:
                    break
                dst.sendall(data)
                sent += len(data)
                if rate:
                    ahead = sent / rate - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        for s in self._open:
            s.close()


class Registry:
    """`docker-registry serve` on 127.0.0.1:<port>, its storage in `root`."""

    def __init__(self, root: Path, users: Optional[dict[str, str]] = None):
        self.root = root
        self.port = _free_port()
        self.host = f"127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        auth = ""
        if users:
            import bcrypt

            (root / "htpasswd").write_text("".join(
                f"{u}:{bcrypt.hashpw(p.encode(), bcrypt.gensalt(rounds=4)).decode()}\n" for u, p in users.items()))
            auth = f"auth:\n  htpasswd:\n    realm: cortex-test\n    path: {root / 'htpasswd'}\n"
        (root / "config.yml").write_text(
            "version: 0.1\nlog:\n  level: warn\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n{auth}")
        self.log = open(root / "registry.log", "wb")
        self.proc = subprocess.Popen([REGISTRY_BIN, "serve", str(root / "config.yml")], stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://{self.host}/v2/", timeout=1).status_code in (200, 401):
                    break
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not answer: {(root / 'registry.log').read_text()[-500:]}")
            time.sleep(0.1)
        self._relays: list[SlowRelay] = []

    def slow(self, rate: int) -> str:
        """Another address for this registry, `rate` bytes/s per connection."""
        relay = SlowRelay(self.port, rate)
        self._relays.append(relay)
        return f"127.0.0.1:{relay.port}"

    def push_new(self, client, base: str, repo: str, size: int = 24_000_000, auth: Optional[dict] = None) -> str:
        """Build `base` + one layer of `size` random bytes, push it here as `repo:<unique tag>`
        and remove it from the engine (the new layer with it): a pull must fetch that layer."""
        tag = f"{self.host}/{repo}:{uuid.uuid4().hex[:8]}"
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in (("Dockerfile", f"FROM {base}\nCOPY blob /opt/pull-test.blob\n".encode()),
                               ("blob", os.urandom(size))):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        buf.seek(0)
        client.images.build(fileobj=buf, custom_context=True, tag=tag, rm=True, labels={"cortex.test-image": "pull"})
        try:
            for msg in client.api.push(tag, stream=True, decode=True, auth_config=auth):
                if msg.get("error"):
                    raise RuntimeError(f"push of {tag} failed: {msg['error']}")
        finally:
            client.images.remove(tag, force=True)
        return tag

    def close(self) -> None:
        for relay in self._relays:
            relay.close()
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.root, ignore_errors=True)
