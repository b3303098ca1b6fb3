"""The console's CA for remote hosts' ingresses (ingress/pki.py) and what an ingress runs
(ingress/nginx.py): certificates that verify only against this install's CA, the CA kept
once (sealed), and an ingress made again whenever anything it was made with changes."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading

import pytest
import sqlalchemy as sa
from cryptography import x509

from cortex_app import secretbox
from cortex_app.ingress import nginx, pki
from cortex_app.runtime.docker_connect import Memfiles
from cortex_app.settings import load_settings


def _serve_once(server_ctx: ssl.SSLContext) -> tuple[int, threading.Thread, list]:
    """A TLS server on loopback answering one handshake; what it saw of the client goes in the list."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list = []

    def run():
        conn, _ = listener.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                seen.append(s.getpeercert())
                s.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            seen.append(exc)
        finally:
            listener.close()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return listener.getsockname()[1], t, seen


def _server_context(auth: pki.Authority, address: str) -> ssl.SSLContext:
    """As the ingress's nginx is set up: its certificate, and a client certificate required."""
    cert, key = auth.issue("ingress", address=address)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    files = Memfiles(cert=cert, key=key)
    try:
        ctx.load_cert_chain(files.path("cert"), files.path("key"))
    finally:
        files.close()
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(cadata=auth.cert_pem)
    return ctx


def test_the_consoles_certificate_opens_its_own_ingress_and_nothing_else_does():
    ours, theirs = pki.make(), pki.make()
    port, t, seen = _serve_once(_server_context(ours, "127.0.0.1"))
    with socket.create_connection(("127.0.0.1", port)) as raw, \
            ours.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
        assert s.recv(2) == b"ok" and s.version() == "TLSv1.3"
    t.join(5)
    assert seen and isinstance(seen[0], dict)  # the ingress saw the console's certificate
    # Another install's console: its certificate is refused by this ingress.
    port, t, seen = _serve_once(_server_context(ours, "127.0.0.1"))
    with pytest.raises((ssl.SSLError, OSError)):
        with socket.create_connection(("127.0.0.1", port)) as raw, \
                theirs.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as s:
            s.recv(2)  # TLS 1.3: the server's refusal of the client arrives after the handshake
    t.join(5)
    # A server another CA signed (someone on the path): the console refuses it.
    port, t, _ = _serve_once(_server_context(theirs, "127.0.0.1"))
    with pytest.raises(ssl.SSLCertVerificationError):
        with socket.create_connection(("127.0.0.1", port)) as raw:
            ours.client_context().wrap_socket(raw, server_hostname="127.0.0.1")
    t.join(5)


@pytest.mark.parametrize("address,want", [("10.0.0.12", x509.IPAddress(ipaddress.ip_address("10.0.0.12"))),
                                          ("[fd00::12]", x509.IPAddress(ipaddress.ip_address("fd00::12"))),
                                          ("gpu-2.lan", x509.DNSName("gpu-2.lan"))])
def test_an_ingress_certificate_names_its_hosts_address(address, want):
    cert = x509.load_pem_x509_certificate(pki.make().issue("ingress", address=address)[0].encode())
    assert cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value == x509.SubjectAlternativeName([want])


def test_the_ca_is_made_once_and_its_key_kept_sealed(migrated_db):
    first = pki.load(migrated_db)
    assert pki.load(migrated_db) == first  # kept, not made again
    with migrated_db.connect() as conn:
        raw = conn.execute(sa.text("SELECT ingress_ca_key FROM installation")).scalar_one()
    assert raw.startswith(secretbox.PREFIX) and "PRIVATE KEY" not in raw
    assert first.key_pem not in repr(first)
    # Another secret key: the old CA's key is lost, so a new CA is made (every ingress follows).
    secretbox.use(load_settings({"CORTEX_SECRET_KEY": "another-key-another-key-another-key-1"}))
    try:
        again = pki.load(migrated_db)
        assert again.fingerprint != first.fingerprint and pki.load(migrated_db) == again
    finally:
        from tests.conftest import TEST_SECRET_KEY
        secretbox.use(load_settings({"CORTEX_SECRET_KEY": TEST_SECRET_KEY}))


@pytest.mark.parametrize("change", ["ca", "address", "image"])
def test_an_ingress_is_made_again_when_what_it_was_made_with_changes(change):
    base = dict(ca_fingerprint="aa", address="10.0.0.2", image="nginx:1.27-alpine")
    other = {**base, {"ca": "ca_fingerprint"}.get(change, change): "changed"}
    assert nginx.config_hash(**base) == nginx.config_hash(**dict(base))
    assert nginx.config_hash(**base) != nginx.config_hash(**other)


def test_an_ingress_passes_only_model_paths_and_asks_for_the_consoles_certificate():
    conf = nginx.config()
    assert "ssl_verify_client on;" in conf and "ssl_protocols TLSv1.3;" in conf and "access_log off;" in conf
    assert nginx.model_path("0123456789abcdef", 8080) == "/m/0123456789ab/8080"
    assert "return 404;" in conf  # anything else
    files = nginx.files("CA", "CERT", "KEY")
    assert set(files) == {"nginx.conf", "ca.pem", "server.pem", "server.key"}
    assert all(mode == 0o400 for _, mode in files.values())
