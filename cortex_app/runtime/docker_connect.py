"""How Cortex reaches a Docker Engine: docker.py's other half (only docker.py imports it), and
the one module that speaks ssh (paramiko).

- unix sockets and the console's own DOCKER_HOST: as the docker SDK reaches them;
- tcp with TLS: the CA, certificate and key live in memory files (memfd) for as long as the
  client lives; they never touch the disk (only this process, and root, can reach them);
- ssh: paramiko with the key from memory and the host key pinned (no ~/.ssh, no agent), running
  `docker system dial-stdio` on the remote as the docker CLI does.

A connection that fails raises ConnectFailed with what failed (`problem`: unreachable, tls,
auth, host-key, not-docker) and a message an admin can act on.
"""

from __future__ import annotations

import base64
import errno
import io
import logging
import os
import selectors
import socket
import ssl
import time
import weakref
from typing import Optional, Union

import docker
import docker.errors
import docker.tls
import paramiko
import requests.exceptions
from docker.transport import SSHHTTPAdapter

from cortex_app.runtime.endpoints import SSH_PORT, TLS_PORT, Endpoint, EndpointInvalid, fingerprint

logging.getLogger("paramiko").setLevel(logging.WARNING)

# A TCP connection whose first packet got no answer is tried again by the kernel only after 1,
# 3, 7 s: one begun while a host's network was cut answers that long after the host is back.
# While an engine gives no answer, a fresh try begins this often (the earlier ones go on, so a
# far host's slow answer still counts), and at most this many are open at once.
ANSWER_TRY_EVERY_S = 0.25
ANSWER_TRIES_OPEN = 16


class ConnectFailed(RuntimeError):
    def __init__(self, problem: str, message: str, cause: Optional[BaseException] = None):
        super().__init__(message)
        self.problem = problem
        self.cause = cause  # the error underneath, for callers that word it themselves


def load_ssh_key(text: str) -> paramiko.PKey:
    """A private key in OpenSSH or PEM form (ed25519, ecdsa, rsa), or EndpointInvalid."""
    for cls in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return cls.from_private_key(io.StringIO(text))
        except paramiko.PasswordRequiredException:
            raise EndpointInvalid("ssh key: it is encrypted; give a key without a passphrase (for a user "
                                  "kept for Cortex)") from None
        except (paramiko.SSHException, ValueError, IndexError, TypeError):
            continue
    raise EndpointInvalid("ssh key: not a private key Cortex can read (OpenSSH or PEM; ed25519, ecdsa or rsa)")


class Memfiles:
    """PEM texts as files in memory (memfd), opened by path under /proc/self/fd: on no disk."""

    def __init__(self, **texts: str):
        self._fds = {}
        for name, text in texts.items():
            fd = os.memfd_create(f"cortex-{name}", os.MFD_CLOEXEC)
            os.write(fd, text.encode())
            self._fds[name] = fd

    def path(self, name: str) -> str:
        return f"/proc/self/fd/{self._fds[name]}"

    def close(self) -> None:
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = {}


class _PinnedKeySSH(SSHHTTPAdapter):
    """The SDK's ssh transport with our key and our pinned host key instead of ~/.ssh. With no
    pinned key (only while adding a host), the key the server shows is kept in `seen_host_key`
    for the admin to confirm before anything is saved (hosts.add_host)."""

    def __init__(self, ep: Endpoint, pkey: paramiko.PKey, timeout: float):
        self._ep, self._pkey, self._connect_timeout = ep, pkey, timeout
        self.seen_host_key = ""
        super().__init__(ep.url, timeout=timeout)

    def _create_paramiko_client(self, base_url: str) -> None:
        self.ssh_client = paramiko.SSHClient()
        ep, port = self._ep, self._ep.port or 22
        self.ssh_params = dict(hostname=ep.hostname, port=port, username=ep.user, pkey=self._pkey,
                               look_for_keys=False, allow_agent=False, timeout=self._connect_timeout,
                               banner_timeout=self._connect_timeout, auth_timeout=self._connect_timeout)
        name = ep.hostname if port == 22 else f"[{ep.hostname}]:{port}"
        adapter = self

        class Remember(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client, hostname, key):
                adapter.seen_host_key = f"{key.get_name()} {key.get_base64()}"

        if ep.ssh_host_key:
            kind, blob = ep.ssh_host_key.split()[:2]
            self.ssh_client.get_host_keys().add(name, kind, paramiko.PKey.from_type_string(kind, base64.b64decode(blob)))
            self.ssh_client.set_missing_host_key_policy(paramiko.RejectPolicy())
        else:
            self.ssh_client.set_missing_host_key_policy(Remember())

    def _connect(self) -> None:
        try:
            super()._connect()
        except BaseException:
            self.ssh_client.close()  # a refused key or host key leaves no transport behind
            raise


def _target(ep: Endpoint) -> str:
    return ep.url.replace("tcp://", "").replace("ssh://", "")


def _explain_tls(ep: Endpoint, exc: BaseException) -> ConnectFailed:
    text = str(exc)
    low = text.lower()
    where = _target(ep)
    if "mismatch" in low or "doesn't match" in low or "not valid for" in low:
        return ConnectFailed("tls", f"TLS: the engine's certificate is not for {ep.hostname} (its subject "
                                    "alternative names must hold the address you connect to)")
    if "certificate verify failed" in low:
        return ConnectFailed("tls", f"TLS: the engine at {where} shows a certificate the CA you gave did not sign")
    if any(s in low for s in ("unknown ca", "bad certificate", "certificate required", "certificate unknown",
                              "handshake failure", "alert")):
        return ConnectFailed("tls", f"TLS: the engine at {where} refused the console's client certificate "
                                    "(it is not signed by the CA the engine trusts: its --tlscacert)")
    if "wrong version number" in low or "record layer" in low or "unexpected eof" in low or "http_request" in low:
        return ConnectFailed("tls", f"TLS: {where} does not speak TLS (a plain HTTP port?); start dockerd with "
                                    "--tlsverify and its certificates")
    return ConnectFailed("tls", f"TLS with {where} failed: {text.splitlines()[0][:200]}")


def _explain_network(ep: Endpoint, exc: BaseException, timeout: float) -> ConnectFailed:
    problem, message = _network_words(ep, exc, timeout)
    return ConnectFailed(problem, message, exc)


def _network_words(ep: Endpoint, exc: BaseException, timeout: float) -> tuple[str, str]:
    """(problem, message) for a connection that failed below TLS and ssh."""
    low = str(exc).lower()
    where = _target(ep)
    if isinstance(exc, (socket.timeout, TimeoutError)) or "timed out" in low or "timeout" in low:
        return ("unreachable", f"unreachable: {where} did not answer within {timeout:g} s "
                               "(the host is down, or a firewall drops the traffic)")
    if "refused" in low:
        return ("unreachable", f"unreachable: nothing listens at {where} (connection refused)")
    if "name or service not known" in low or "nodename nor servname" in low or "name resolution" in low:
        return ("unreachable", f"unreachable: the host name {ep.hostname} does not resolve")
    if "no route" in low or "network is unreachable" in low:
        return ("unreachable", f"unreachable: no route to {ep.hostname}")
    if "no such file" in low:
        return ("unreachable", f"unreachable: no socket at {ep.url[len('unix://'):]}")
    if "permission denied" in low:
        return ("auth", f"permission denied on {ep.url}: the console's user may not use that socket")
    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return ("unreachable", f"unreachable: {where}: {first}")


def await_answer(ep: Endpoint, timeout: float) -> None:
    """Return as soon as the endpoint's port accepts a TCP connection; ConnectFailed when it
    refuses, cannot be reached, or gives no answer within `timeout`. With fresh tries every
    ANSWER_TRY_EVERY_S, a host whose network comes back is seen within a fraction of a second,
    not at the kernel's next retry of a connection begun while it was silent."""
    port = ep.port or (SSH_PORT if ep.kind == "ssh" else TLS_PORT)
    deadline = time.monotonic() + timeout
    try:
        family, kind, proto, _, address = socket.getaddrinfo(ep.hostname, port, type=socket.SOCK_STREAM)[0]
    except OSError as exc:
        raise _explain_network(ep, exc, timeout) from None
    tries: list[socket.socket] = []
    with selectors.DefaultSelector() as sel:
        try:
            next_try = 0.0
            while True:
                now = time.monotonic()
                if now >= deadline:
                    raise _explain_network(ep, TimeoutError("timed out"), timeout)
                if now >= next_try:
                    if len(tries) >= ANSWER_TRIES_OPEN:
                        sel.unregister(tries[0])
                        tries.pop(0).close()
                    s = socket.socket(family, kind, proto)
                    s.setblocking(False)
                    s.connect_ex(address)
                    sel.register(s, selectors.EVENT_WRITE)
                    tries.append(s)
                    next_try = now + ANSWER_TRY_EVERY_S
                for key, _ in sel.select(max(0.0, min(next_try, deadline) - time.monotonic())):
                    code = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if code == 0:
                        return
                    if code != errno.ETIMEDOUT:
                        raise _explain_network(ep, OSError(code, os.strerror(code)), timeout)
                    sel.unregister(key.fileobj)
                    tries.remove(key.fileobj)
                    key.fileobj.close()
        finally:
            for s in tries:
                s.close()


def _ssh_remote_says(adapter: _PinnedKeySSH) -> str:
    """Why the remote gave no engine: what `docker version` prints there (first line), if it can."""
    try:
        chan = adapter.ssh_client.get_transport().open_session(timeout=5)
        chan.settimeout(5)
        chan.exec_command("docker version --format '{{.Server.Version}}'")
        err = chan.makefile_stderr("rb").read(2000).decode(errors="replace").strip()
        chan.close()
        return err.splitlines()[-1][:200] if err else ""
    except Exception:  # noqa: BLE001 - only a better message was at stake
        return ""


def _ssh_adapter(ep: Endpoint, timeout: float) -> _PinnedKeySSH:
    pkey = load_ssh_key(ep.ssh_key)
    try:
        return _PinnedKeySSH(ep, pkey, timeout)
    except paramiko.BadHostKeyException as exc:
        raise ConnectFailed("host-key", f"ssh: {ep.hostname} showed host key {fingerprint(_key_line(exc.key))}, "
                                        f"not the pinned {fingerprint(ep.ssh_host_key)}: a different machine, or "
                                        "its key changed (if you expected that, pin the new key)") from None
    except paramiko.AuthenticationException:
        raise ConnectFailed("auth", f"ssh: {ep.user}@{ep.hostname} refused the key (is its public half in "
                                    f"~{ep.user}/.ssh/authorized_keys there?)") from None
    except paramiko.SSHException as exc:
        if "not found in known_hosts" in str(exc) or "Server" in str(exc) and "not found" in str(exc):
            raise ConnectFailed("host-key", f"ssh: {ep.hostname} showed a host key that is not the pinned one") \
                from None
        raise ConnectFailed("unreachable", f"unreachable: ssh to {_target(ep)} failed: {exc}") from None
    except (OSError, EOFError) as exc:
        raise _explain_network(ep, exc, timeout) from None


def _key_line(key: paramiko.PKey) -> str:
    return f"{key.get_name()} {key.get_base64()}"


def _negotiate(api: docker.APIClient, ep: Endpoint, timeout: float, adapter: Optional[_PinnedKeySSH]) -> None:
    """Ask the engine its version (the API version to use from now on); anything that answers
    but is no Docker Engine says so."""
    try:
        v = api.version(api_version=False)
    except docker.errors.APIError:
        raise _not_docker(ep) from None
    except requests.exceptions.SSLError as exc:
        raise _explain_tls(ep, exc) from None
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout, OSError,
            paramiko.SSHException, EOFError) as exc:
        if adapter is not None:
            said = _ssh_remote_says(adapter)
            raise ConnectFailed("not-docker", f"ssh to {_target(ep)} works, but no Docker Engine answered there"
                                              + (f": {said}" if said else "")
                                              + " (the remote needs the docker CLI and an engine its user may use)"
                                ) from None
        raise _explain_network(ep, exc, timeout) from None
    except ValueError:  # an answer that is no JSON
        raise _not_docker(ep) from None
    if not isinstance(v, dict) or not v.get("ApiVersion"):
        raise _not_docker(ep)
    api._version = v["ApiVersion"]  # what the SDK's version="auto" would have found
    api._cortex_engine_version = v.get("Version")


def _not_docker(ep: Endpoint) -> ConnectFailed:
    """Something that is no Docker Engine answered. What it said (its status, its body) is not
    repeated: adding a host must not tell whoever adds one what else listens on a network."""
    return ConnectFailed("not-docker", f"not a Docker Engine: no Docker Engine answered at {_target(ep)}, though "
                                       "something else did (is that the engine's port?)")


def _close_with(api: docker.APIClient, files: "Memfiles") -> None:
    """The memory files go when the client is closed (and, failing that, when it is collected)."""
    close = api.close

    def close_both() -> None:
        try:
            close()
        finally:
            files.close()

    api.close = close_both
    weakref.finalize(api, files.close)


def api_client(target: Union[str, Endpoint], timeout: float, *, fresh_tries: bool = False) -> docker.APIClient:
    """A low-level client talking to the engine at `target` (a DOCKER_HOST string or an
    Endpoint), its API version agreed; raises ConnectFailed. A DOCKER_HOST string is reached
    as the docker SDK reaches it (ssh:// with ~/.ssh); an Endpoint only with its own credentials.
    `fresh_tries`: a tcp or ssh endpoint is first awaited with fresh tries (await_answer), for a
    client that is kept; each try that connects shows up in the engine's log as a connection
    closed before its handshake, so the hosts' periodic checks go without."""
    ep = target if isinstance(target, Endpoint) else Endpoint(target)
    adapter = None
    files = None
    try:
        if ep.unreadable:
            raise ConnectFailed("secret-key", f"{ep.unreadable} for {_target(ep)} cannot be read with this console's "
                                              "secret key (CORTEX_SECRET_KEY or the data dir's secret.key changed): put "
                                              "back the key they were saved with, or remove the host and add it again")
        if isinstance(target, str):
            api = docker.APIClient(base_url=target, timeout=timeout, version="1.41")
        elif ep.kind == "tls":
            if not ep.tls_key:  # never in the clear: anyone who reaches the port is root there
                raise ConnectFailed("tls", f"TLS: no client certificate and key for {_target(ep)}")
            if fresh_tries:
                await_answer(ep, timeout)
            files = Memfiles(ca=ep.tls_ca, cert=ep.tls_cert, key=ep.tls_key)
            tls = docker.tls.TLSConfig(client_cert=(files.path("cert"), files.path("key")),
                                       ca_cert=files.path("ca"), verify=True)
            api = docker.APIClient(base_url=ep.url, tls=tls, timeout=timeout, version="1.41")
            # The host's own CA and nothing else: requests would otherwise let REQUESTS_CA_BUNDLE
            # (set on many machines) replace it, and send the engine's traffic through a proxy.
            api.trust_env = False
            _close_with(api, files)
        elif ep.kind == "ssh":
            if fresh_tries:
                await_answer(ep, timeout)
            adapter = _ssh_adapter(ep, timeout)
            # The SDK's own ssh path would read ~/.ssh: it is replaced by ours before any use.
            api = docker.APIClient(base_url=ep.url, timeout=timeout, version="1.41", use_ssh_client=True)
            api.mount("http+docker://ssh", adapter)
            api._custom_adapter = adapter
            api.seen_host_key = adapter.seen_host_key
        else:
            api = docker.APIClient(base_url=ep.url, timeout=timeout, version="1.41")
    except BaseException as exc:
        if files is not None:
            files.close()
        if adapter is not None:
            adapter.close()
        if isinstance(exc, ConnectFailed):
            raise
        if isinstance(exc, docker.errors.DockerException):
            raise ConnectFailed("unreachable", f"unreachable: {ep.url}: {exc}", exc) from None
        if isinstance(exc, (ssl.SSLError, OSError)):
            raise _explain_network(ep, exc, timeout) from None
        if isinstance(exc, (paramiko.SSHException, EOFError)):  # the SDK's own ssh (a DOCKER_HOST)
            raise ConnectFailed("unreachable", f"unreachable: {ep.url}: {exc}", exc) from None
        raise
    try:
        _negotiate(api, ep, timeout, adapter)
    except BaseException:
        api.close()
        raise
    return api


def client(target: Union[str, Endpoint], timeout: float, *, fresh_tries: bool = False) -> docker.DockerClient:
    """The high-level client over `api_client`."""
    c = docker.DockerClient.__new__(docker.DockerClient)
    c.api = api_client(target, timeout, fresh_tries=fresh_tries)
    return c
