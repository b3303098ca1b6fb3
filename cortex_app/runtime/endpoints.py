"""Where a Docker Engine answers, and the credentials that reach it: parsed and checked here,
before anything connects (pure: no SDK, no network).

Three kinds, as Docker itself offers them:
- `unix:///path/docker.sock`: an engine on this machine;
- `tcp://host:2376` with TLS client certificates (a CA, a certificate and its key). A tcp
  engine without TLS is refused: anyone who reaches its port is root on that host;
- `ssh://user@host[:port]` with a private key. The remote runs `docker system dial-stdio`
  (the docker CLI on the remote host), as the docker CLI itself does over ssh.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Optional
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import serialization

TLS_PORT = 2376
SSH_PORT = 22
MAX_PEM = 64 * 1024
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}"
                       r"[A-Za-z0-9])?)*$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}$")


class EndpointInvalid(ValueError):
    """What is wrong with an endpoint or its credentials, in words an admin can act on."""


@dataclass(frozen=True)
class Endpoint:
    url: str
    tls_ca: str = ""
    tls_cert: str = ""
    tls_key: str = ""
    ssh_key: str = ""
    ssh_host_key: str = ""  # "ssh-ed25519 AAAA…": the key the engine's sshd must show (pinned)
    # Which of its saved credentials this console could not read (sealed with another secret
    # key): every connection then says so, and none is tried with what is left.
    unreadable: str = ""

    def __repr__(self) -> str:  # never the credentials
        return f"Endpoint({self.url!r})"

    @property
    def kind(self) -> str:
        return self.url.split("://", 1)[0].replace("tcp", "tls")

    @property
    def hostname(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> Optional[int]:
        return urlsplit(self.url).port

    @property
    def user(self) -> str:
        return urlsplit(self.url).username or ""


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return bool(_HOSTNAME.match(host))


def normalize_url(raw: str) -> str:
    """`raw` as Cortex stores it (default ports filled in), or EndpointInvalid."""
    raw = raw.strip()
    if not raw:
        raise EndpointInvalid("endpoint: required (unix:///var/run/docker.sock, tcp://host:2376 or ssh://user@host)")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise EndpointInvalid(f"endpoint: {raw!r} is not a URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme == "unix":
        if not parts.path.startswith("/") or parts.netloc:
            raise EndpointInvalid("endpoint: a unix socket is unix:///absolute/path/docker.sock")
        return f"unix://{parts.path}"
    if scheme in ("http", "https"):
        raise EndpointInvalid(f"endpoint: write tcp://{parts.netloc or 'host'}:{TLS_PORT} (Docker's own form), "
                              f"not {scheme}://")
    if scheme not in ("tcp", "ssh"):
        raise EndpointInvalid(f"endpoint: {scheme or 'no'} scheme; use unix://, tcp:// (with TLS) or ssh://")
    host = parts.hostname or ""
    if not host or not _host_ok(host):
        raise EndpointInvalid(f"endpoint: {host or 'no host'} is not a host name or IP address")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise EndpointInvalid("endpoint: no path or query after the host and port")
    shown = f"[{host}]" if ":" in host else host
    if scheme == "tcp":
        if parts.username or parts.password:
            raise EndpointInvalid("endpoint: tcp:// takes no user; TLS client certificates say who the console is")
        return f"tcp://{shown}:{port or TLS_PORT}"
    if parts.password:
        raise EndpointInvalid("endpoint: no password in the URL; ssh uses the private key below")
    if not parts.username or not _USER.match(parts.username):
        raise EndpointInvalid("endpoint: ssh needs a user, as ssh://user@host (one allowed to use the remote "
                              "engine, e.g. in its docker group)")
    return f"ssh://{parts.username}@{shown}" + (f":{port}" if port and port != SSH_PORT else "")


def _pem(label: str, text: str) -> bytes:
    text = text.strip()
    if not text:
        raise EndpointInvalid(f"{label}: required for a tcp:// engine (TLS); without TLS anyone who reaches the "
                              "port is root on that host")
    if len(text) > MAX_PEM:
        raise EndpointInvalid(f"{label}: over {MAX_PEM // 1024} KiB; paste the PEM file itself")
    return text.encode()


def check_tls(ca: str, cert: str, key: str) -> None:
    """The three PEMs parse, and the key belongs to the certificate."""
    ca_pem, cert_pem, key_pem = _pem("CA certificate", ca), _pem("client certificate", cert), _pem("client key", key)
    try:
        x509.load_pem_x509_certificates(ca_pem)
    except ValueError:
        raise EndpointInvalid("CA certificate: not a PEM certificate (-----BEGIN CERTIFICATE-----, e.g. ca.pem)") \
            from None
    try:
        certs = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise EndpointInvalid("client certificate: not a PEM certificate (e.g. cert.pem)") from None
    try:
        private = serialization.load_pem_private_key(key_pem, password=None)
    except TypeError:
        raise EndpointInvalid("client key: it is encrypted; give the key without a passphrase") from None
    except ValueError:
        raise EndpointInvalid("client key: not a PEM private key (e.g. key.pem)") from None
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certs[0].public_key().public_bytes(*raw) != private.public_key().public_bytes(*raw):
        raise EndpointInvalid("client key: it does not belong to the client certificate")


def parse_host_key(text: str) -> str:
    """An ssh host key as `ssh-keyscan` or known_hosts show it ("[host] type base64 [comment]"),
    reduced to "type base64"; empty stays empty (the first connection's key is then pinned)."""
    words = text.split()
    for i, w in enumerate(words):
        if w.startswith(("ssh-", "ecdsa-", "sk-")) and i + 1 < len(words):
            try:
                blob = base64.b64decode(words[i + 1], validate=True)
            except ValueError:
                break
            if blob[4:4 + int.from_bytes(blob[:4], "big")].decode(errors="replace") != w:
                break
            if len(w) + 1 + len(words[i + 1]) > 1024:
                raise EndpointInvalid("ssh host key: over 1,024 characters; give the host's ed25519 or ecdsa key "
                                      "(ssh-keyscan -t ed25519 HOST)")
            return f"{w} {words[i + 1]}"
    if words:
        raise EndpointInvalid("ssh host key: not a public key line (as `ssh-keyscan HOST` prints, e.g. "
                              "ssh-ed25519 AAAA…); leave it empty to pin the key the first connection sees")
    return ""


def fingerprint(host_key: str) -> str:
    """SHA256:… as ssh shows a host key's fingerprint."""
    if not host_key:
        return ""
    blob = base64.b64decode(host_key.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def endpoint(url: str, *, tls_ca: str = "", tls_cert: str = "", tls_key: str = "", ssh_key: str = "",
             ssh_host_key: str = "") -> Endpoint:
    """An Endpoint whose URL and credentials are checked (an ssh key is parsed when connecting,
    by the module that speaks ssh); credentials the kind does not use are dropped."""
    url = normalize_url(url)
    if url.startswith("unix://"):
        # A socket on the console's own machine: an engine there is host local (DOCKER_HOST),
        # and any other socket the console can open is nothing an admin should point it at.
        raise EndpointInvalid("endpoint: another host is reached as tcp:// (with TLS) or ssh://; a unix socket is "
                              "this machine's, whose engine is host local (DOCKER_HOST)")
    if url.startswith("tcp://"):
        check_tls(tls_ca, tls_cert, tls_key)
        return Endpoint(url, tls_ca=tls_ca.strip() + "\n", tls_cert=tls_cert.strip() + "\n",
                        tls_key=tls_key.strip() + "\n")
    if url.startswith("ssh://"):
        if not ssh_key.strip():
            raise EndpointInvalid("ssh key: required for an ssh:// engine (a private key the remote user accepts)")
        if len(ssh_key) > MAX_PEM:
            raise EndpointInvalid("ssh key: too long; paste the private key file itself")
        return Endpoint(url, ssh_key=ssh_key.strip() + "\n", ssh_host_key=parse_host_key(ssh_host_key))
    return Endpoint(url)
