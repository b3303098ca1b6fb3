"""Remote GPU hosts on this machine: real Docker Engines, each in a network namespace of its
own, reached only at that namespace's address, one behind TLS (dockerd --tlsverify with
certificates made here) and one over ssh (Debian's sshd in the namespace; the engine there
listens on a unix socket only).

Nothing here stands in for anything: the console talks to dockerd over TLS, and over ssh
runs `docker system dial-stdio` there, as it would on another machine. The namespace's
network can be cut (its link set down) and restored. Everything is undone by PID, then the
veth pair, then the namespace, then the folder.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

BED_ROOT = Path("/var/tmp/cortex-hostbed")
SUBNET = "10.250"  # 10.250.N.0/30 per namespace: .1 this side, .2 the host's


def _pem_key(key) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def _pem_cert(cert) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass
class Pki:
    """A CA and what it signs: a server certificate for an IP address, and client certificates."""

    name: str
    key: object = field(default=None, repr=False)
    cert: object = None

    def __post_init__(self):
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"cortex test CA {self.name}")])
        now = datetime.datetime.now(datetime.timezone.utc)
        self.cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                     .public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - datetime.timedelta(hours=1))
                     .not_valid_after(now + datetime.timedelta(days=2))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.key, hashes.SHA256()))

    @property
    def ca_pem(self) -> str:
        return _pem_cert(self.cert)

    def issue(self, common_name: str, *, ip: Optional[str] = None) -> tuple[str, str]:
        """(certificate PEM, key PEM): a server certificate for `ip`, else a client one."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        b = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
             .issuer_name(self.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2)))
        if ip:
            b = (b.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(ip))]), critical=False)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return _pem_cert(b.sign(self.key, hashes.SHA256())), _pem_key(key)


def ssh_keypair() -> tuple[str, str]:
    """(private key in OpenSSH form, public key line)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    return private, public


def _wait(pred, timeout: float, what: str, log: Optional[Path] = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.1)
    tail = log.read_text()[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} not ready within {timeout:g} s\n{tail}")


def _run(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=30)


@dataclass
class RemoteHost:
    """One namespace: its dockerd (with TLS on tcp, or a unix socket only), and for ssh its sshd."""

    name: str
    n: int  # the /30's third octet
    tls: bool
    ssh: bool
    gpus: bool = False  # dockerd finds a stand-in for the NVIDIA Container Toolkit's hook
    dir: Path = None
    pki: Optional[Pki] = None
    client_cert: str = ""
    client_key: str = ""
    ssh_key: str = ""  # the console's private key
    ssh_host_key: str = ""  # "ssh-ed25519 AAAA…": what sshd there shows
    _pids: list = field(default_factory=list)

    @property
    def ip(self) -> str:
        return f"{SUBNET}.{self.n}.2"

    @property
    def outside(self) -> str:
        return f"{self.name}-o"

    @property
    def netns(self) -> str:
        return f"/var/run/netns/{self.name}"

    @property
    def tls_url(self) -> str:
        return f"tcp://{self.ip}:2376"

    @property
    def ssh_url(self) -> str:
        return f"ssh://root@{self.ip}"

    @property
    def socket(self) -> str:
        return f"unix://{self.dir}/docker.sock"

    def up(self) -> "RemoteHost":
        self.dir = BED_ROOT / self.name
        self.down()  # what a killed run left behind
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o700)
        _run("ip", "netns", "add", self.name)
        _run("ip", "link", "add", self.outside, "type", "veth", "peer", "name", f"{self.name}-i")
        _run("ip", "link", "set", f"{self.name}-i", "netns", self.name)
        _run("ip", "addr", "add", f"{SUBNET}.{self.n}.1/30", "dev", self.outside)
        _run("ip", "link", "set", self.outside, "up")
        for cmd in (["ip", "addr", "add", f"{self.ip}/30", "dev", f"{self.name}-i"],
                    ["ip", "link", "set", f"{self.name}-i", "up"], ["ip", "link", "set", "lo", "up"]):
            _run("nsenter", f"--net={self.netns}", *cmd)
        self._dockerd()
        if self.ssh:
            self._sshd()
        return self

    def _write(self, name: str, text: str) -> str:
        path = self.dir / name
        path.write_text(text)
        os.chmod(path, 0o600)
        return str(path)

    def _spawn(self, args: list[str], log: str, env: Optional[dict] = None) -> int:
        # nsenter, not `ip netns exec`: the latter remounts /sys and dockerd then finds no cgroups.
        with open(self.dir / log, "wb") as out:
            p = subprocess.Popen(["nsenter", f"--net={self.netns}", *args], stdout=out, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, start_new_session=True, env=env)
        self._pids.append(p.pid)
        (self.dir / "pids").write_text(" ".join(map(str, self._pids)))
        return p.pid

    def _dockerd(self) -> None:
        args = ["dockerd", "--storage-driver=overlay2", "--data-root", str(self.dir / "data"),
                "--exec-root", str(self.dir / "exec"), "--pidfile", str(self.dir / "dockerd.pid"),
                "-H", self.socket]
        if self.tls:
            if self.pki is None:
                self.pki = Pki(self.name)
                self.client_cert, self.client_key = self.pki.issue("cortex console")
            cert, key = self.pki.issue(self.ip, ip=self.ip)
            args += ["-H", f"tcp://{self.ip}:2376", "--tlsverify", "--tlscacert", self._write("ca.pem", self.pki.ca_pem),
                     "--tlscert", self._write("server.pem", cert), "--tlskey", self._write("server-key.pem", key)]
        env = None
        if self.gpus:
            # A STAND-IN for the NVIDIA Container Toolkit: dockerd offers the `nvidia` device
            # driver (--gpus, DeviceRequests) when it finds this hook on its PATH, and runs it
            # before each such container starts; this one does nothing. The container then gets
            # NVIDIA_VISIBLE_DEVICES as on a GPU host, and no device.
            toolkit = self.dir / "toolkit"
            toolkit.mkdir(exist_ok=True)
            hook = toolkit / "nvidia-container-runtime-hook"
            hook.write_text("#!/bin/sh\n# stand-in: a real hook mounts the GPUs and nvidia-smi\ncat >/dev/null\nexit 0\n")
            hook.chmod(0o755)
            env = {**os.environ, "PATH": f"{toolkit}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        self._spawn(args, "dockerd.log", env)
        env = {**os.environ, "DOCKER_HOST": self.socket}
        _wait(lambda: subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], env=env,
                                     capture_output=True, timeout=5).returncode == 0, 30,
              f"dockerd of {self.name}", self.dir / "dockerd.log")

    def _sshd(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation folder
        host_key = ed25519.Ed25519PrivateKey.generate()
        self._write("ssh_host_ed25519_key", host_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()).decode())
        self.ssh_host_key = " ".join(host_key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode().split()[:2])
        self.ssh_key, public = ssh_keypair()
        # As the README tells admins to install it: this key runs the engine's dial-stdio and
        # nothing else (no shell, no forwarding, no other command).
        self._write("authorized_keys", f'restrict,command="docker system dial-stdio" {public}\n')
        config = self._write("sshd_config", "\n".join([
            f"ListenAddress {self.ip}:22", f"HostKey {self.dir}/ssh_host_ed25519_key",
            f"AuthorizedKeysFile {self.dir}/authorized_keys", f"PidFile {self.dir}/sshd.pid",
            "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
            "UsePAM no", "StrictModes no", "LoginGraceTime 10", f"SetEnv DOCKER_HOST={self.socket}", "LogLevel VERBOSE", ""]))
        self._spawn(["/usr/sbin/sshd", "-D", "-e", "-f", config], "sshd.log")

        def answers() -> bool:
            import socket
            try:
                with socket.create_connection((self.ip, 22), timeout=1) as s:
                    return s.recv(4).startswith(b"SSH-")
            except OSError:
                return False
        _wait(answers, 15, f"sshd of {self.name}", self.dir / "sshd.log")

    # --- faults -------------------------------------------------------------------------

    def cut(self) -> None:
        """The host's network goes silent: every packet to it is dropped there, so a connection
        to it hangs until its timeout (a cable pulled, a firewall), rather than failing fast."""
        _run("nsenter", f"--net={self.netns}", "iptables", "-I", "INPUT", "-i", f"{self.name}-i", "-j", "DROP")

    def restore(self) -> None:
        _run("nsenter", f"--net={self.netns}", "iptables", "-D", "INPUT", "-i", f"{self.name}-i", "-j", "DROP")

    def stop_engine(self) -> None:
        """dockerd stops (the machine and its sshd stay up)."""
        pid = int((self.dir / "dockerd.pid").read_text())
        os.kill(pid, signal.SIGTERM)
        _wait(lambda: not Path(f"/proc/{pid}").exists() or
              Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z", 20, f"dockerd of {self.name} to stop")
        self._pids = [p for p in self._pids if p != pid]
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass

    def start_engine(self) -> None:
        self._dockerd()

    def down(self) -> None:
        pids_file = self.dir / "pids" if self.dir else None
        pids = list(self._pids)
        if pids_file and pids_file.exists():
            pids += [int(p) for p in pids_file.read_text().split() if p.isdigit()]
        for pid in set(pids):
            try:
                os.killpg(pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        deadline = time.monotonic() + 15
        for pid in set(pids):
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                    if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                        os.waitpid(pid, os.WNOHANG)
                        break
                except (ProcessLookupError, ChildProcessError, FileNotFoundError):
                    break
                time.sleep(0.1)
            else:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self._pids = []
        # Whatever else still lives in the namespace (an ssh session's processes): gone too.
        left = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout.split()
        for pid in left:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "link", "del", self.outside], capture_output=True)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)
        if self.dir and self.dir.exists():
            subprocess.run(["umount", "-R", str(self.dir / "exec")], capture_output=True)
            shutil.rmtree(self.dir, ignore_errors=True)


@contextmanager
def outsider(host: RemoteHost, name: str, n: int) -> Iterator[str]:
    """A network namespace of its own that stands for anyone else on `host`'s network: linked
    to that host's namespace directly (10.250.N.0/30), with a route to the host's own address
    over that link, as a machine beside it on its LAN would have. Yields its netns path; the
    namespace and its link are gone afterwards."""
    netns, inside, near = f"/var/run/netns/{name}", f"{name}-a", f"{name}-b"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)  # what a killed run left
    try:
        _run("ip", "netns", "add", name)
        _run("ip", "link", "add", inside, "netns", name, "type", "veth", "peer", "name", near, "netns", host.name)
        for cmd in (["ip", "addr", "add", f"{SUBNET}.{n}.1/30", "dev", inside], ["ip", "link", "set", inside, "up"],
                    ["ip", "link", "set", "lo", "up"], ["ip", "route", "add", f"{host.ip}/32", "dev", inside]):
            _run("nsenter", f"--net={netns}", *cmd)
        for cmd in (["ip", "addr", "add", f"{SUBNET}.{n}.2/30", "dev", near], ["ip", "link", "set", near, "up"]):
            _run("nsenter", f"--net={host.netns}", *cmd)
        yield netns
    finally:
        subprocess.run(["nsenter", f"--net={host.netns}", "ip", "link", "del", near], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextmanager
def remote_host(name: str, n: int, *, tls: bool = True, ssh: bool = False, gpus: bool = False,
                images: tuple[str, ...] = (), images_from: str = "") -> Iterator[RemoteHost]:
    """A RemoteHost up for the block, holding `images` (copied from the engine `images_from`,
    there being no registry), and torn down after it, whatever happened."""
    from tests.engines import copy_images

    h = RemoteHost(name, n, tls=tls, ssh=ssh, gpus=gpus)
    try:
        h.up()
        if images:
            copy_images(images_from, h.socket, list(images))
        yield h
    finally:
        h.down()
