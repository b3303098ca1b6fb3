"""The console's own certificate authority, which remote hosts' ingresses trust.

One CA per install (consoles sharing a database share it): an EC P-256 key and a self-signed
certificate, made at first need and kept in the installation row, the key sealed like every
other secret (secretbox.py). From it:
- each ingress gets a server certificate for its host's address, issued when the ingress is
  made and handed to that container only (never stored by the console);
- each console process issues itself a client certificate at start, held in memory files
  (memfd) only, for the one TLS context that probes, scrapes and the gateway use. Only that
  certificate opens an ingress: the ingress checks every client against the CA.
Lose the secret key and the CA's key reads back empty: a new CA is made, and every ingress is
made again with it at its next check (nothing else ever trusted the old one).
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import ssl
from dataclasses import dataclass, field

import sqlalchemy as sa
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sqlmodel import Session, select

from cortex_app.models import Installation
from cortex_app.runtime.docker_connect import Memfiles

log = logging.getLogger(__name__)
CA_VALID_DAYS = 20 * 365
LEAF_VALID_DAYS = 10 * 365


@dataclass(frozen=True)
class Authority:
    cert_pem: str
    key_pem: str = field(repr=False)

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the CA certificate, hex: what an ingress was made to trust."""
        cert = x509.load_pem_x509_certificate(self.cert_pem.encode())
        return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()

    def issue(self, common_name: str, *, address: str = "") -> tuple[str, str]:
        """(certificate PEM, key PEM): for a server at `address` (an IP address or a DNS name),
        else a client certificate."""
        ca_key = serialization.load_pem_private_key(self.key_pem.encode(), None)
        ca = x509.load_pem_x509_certificate(self.cert_pem.encode())
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        b = (x509.CertificateBuilder()
             .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
             .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(hours=1))
             .not_valid_after(now + datetime.timedelta(days=LEAF_VALID_DAYS))
             .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True))
        if address:
            try:
                name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(address.strip("[]")))
            except ValueError:
                name = x509.DNSName(address)
            b = (b.add_extension(x509.SubjectAlternativeName([name]), critical=False)
                 .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False))
        else:
            b = b.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        return _pem_cert(b.sign(ca_key, hashes.SHA256())), _pem_key(key)

    def client_context(self) -> ssl.SSLContext:
        """What the console connects to its ingresses with: TLS 1.3, trusting this CA only (not
        the system's), presenting a client certificate issued now and held in memory only."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=self.cert_pem)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        cert, key = self.issue("cortex console")
        files = Memfiles(cert=cert, key=key)
        try:
            ctx.load_cert_chain(files.path("cert"), files.path("key"))
        finally:
            files.close()
        return ctx


def _pem_cert(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _pem_key(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def make() -> Authority:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Cortex console ingress CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=CA_VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return Authority(_pem_cert(cert), _pem_key(key))


def load(db: sa.Engine) -> Authority:
    """This install's CA: made and stored on first need (compare-and-set: two consoles starting
    at once keep the same one), or made anew when its key no longer unseals."""
    for _ in range(3):
        with Session(db) as session:
            row = session.exec(select(Installation)).first()
            if row is None:
                raise RuntimeError("the database has no installation row; run the migrations (make up does)")
            cert, key = row.ingress_ca_cert, row.ingress_ca_key
        if cert and key:
            return Authority(cert, key)
        if cert:
            log.warning("ingress: the CA's key was sealed with another secret key; a new CA is made, and "
                        "every remote host's ingress is made again with it")
        fresh = make()
        with Session(db) as session:
            cond = (Installation.ingress_ca_cert.is_(None) if not cert  # type: ignore[union-attr]
                    else Installation.ingress_ca_cert == cert)
            done = session.execute(sa.update(Installation).where(cond).values(
                ingress_ca_cert=fresh.cert_pem, ingress_ca_key=fresh.key_pem)).rowcount
            session.commit()
        if done:
            return fresh
    raise RuntimeError("could not store the ingress CA")
