"""Certificates and keys made on the fly: a CA, the API server's serving cert and the
service-account signing key pair."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = dt.timedelta(days=2)


def _key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _write_key(key: rsa.RSAPrivateKey, path: Path) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                       serialization.PrivateFormat.TraditionalOpenSSL,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_pki(folder: Path, *, hosts: list[str], ips: list[str]) -> None:
    """Write ca.crt/ca.key, apiserver.crt/.key (for ``hosts`` and ``ips``), sa.key/sa.pub."""
    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = _key()
    ca = (x509.CertificateBuilder().subject_name(_name("batcomputer-testenv-ca"))
          .issuer_name(_name("batcomputer-testenv-ca")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now)
          .not_valid_after(now + VALIDITY)
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    _write_key(ca_key, folder / "ca.key")
    (folder / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))

    server_key = _key()
    alt_names: list[x509.GeneralName] = [x509.DNSName(h) for h in hosts]
    alt_names += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    server = (x509.CertificateBuilder().subject_name(_name("kube-apiserver"))
              .issuer_name(ca.subject).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number()).not_valid_before(now)
              .not_valid_after(now + VALIDITY)
              .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    _write_key(server_key, folder / "apiserver.key")
    (folder / "apiserver.crt").write_bytes(server.public_bytes(serialization.Encoding.PEM))

    sa_key = _key()
    _write_key(sa_key, folder / "sa.key")
    (folder / "sa.pub").write_bytes(sa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
