"""The admission webhook's endpoint: TLS and where the API server is told to call it.

kopf serves the webhook; the operator points the ValidatingWebhookConfiguration
(settings.webhook_name, installed by manifests/webhook.yaml) at it at every start, with the
CA bundle of the certificate it serves. (kopf's own "managed" mode would also need to
create a MutatingWebhookConfiguration, a privilege the operator should not have: creating
one can intercept any object in the cluster.) The certificate comes from
settings.webhook_cert_dir (e.g. cert-manager) or is made here at every start, self-signed
for the names the API server uses; its key stays in a private temporary folder, removed
when the process exits.
"""

from __future__ import annotations

import atexit
import base64
import datetime as dt
import ipaddress
import shutil
import tempfile
from pathlib import Path
from typing import Any, Final

import kopf
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from batcomputer.operator import labels
from batcomputer.operator.settings import Settings

VALIDITY = dt.timedelta(days=365)
HANDLER: Final = "artifacts"
"""The kopf handler id, which is also the webhook's URL path."""


def service_reference(text: str) -> dict[str, Any]:
    """namespace/name[:port] -> the clientConfig.service of a webhook."""
    namespace, _, rest = text.partition("/")
    name, _, port = rest.partition(":")
    return {"namespace": namespace, "name": name, "port": int(port or 443)}


def names(settings: Settings) -> list[str]:
    """What the API server calls the webhook: the certificate's subject alternative names."""
    if settings.webhook_service:
        ref = service_reference(settings.webhook_service)
        base = f"{ref['name']}.{ref['namespace']}.svc"
        return [base, f"{base}.cluster.local"]
    return [settings.webhook_host]


def self_signed(hosts: list[str], folder: Path) -> tuple[Path, Path]:
    """A self-signed serving certificate for ``hosts`` (DNS names or IPs): (cert, key)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    alt: list[x509.GeneralName] = []
    for host in hosts:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            alt.append(x509.DNSName(host))
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / "tls.crt", folder / "tls.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def server(settings: Settings) -> tuple[kopf.WebhookServer, bytes]:
    """kopf's server for the webhook, and the CA bundle (PEM) that verifies it."""
    if settings.webhook_cert_dir:
        folder = Path(settings.webhook_cert_dir)
        cert, key = folder / "tls.crt", folder / "tls.key"
        ca = folder / "ca.crt" if (folder / "ca.crt").is_file() else cert
    else:
        folder = Path(tempfile.mkdtemp(prefix="batcomputer-webhook-"))
        # kopf reads the files while it serves (it restarts when they change): they go
        # when the process does, not one folder with a private key per start.
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        cert, key = self_signed(names(settings), folder)
        ca = cert
    listener = kopf.WebhookServer(addr=settings.webhook_addr, port=settings.webhook_port,
                                  host=settings.webhook_host or None, certfile=cert, pkeyfile=key,
                                  cafile=ca)
    return listener, ca.read_bytes()


def configuration(settings: Settings, ca_bundle: bytes) -> dict[str, Any]:
    """The ValidatingWebhookConfiguration that sends BatModel creates and updates here.

    failurePolicy Ignore: while the operator is down, admins can still apply (a fix, a
    roll-back); the servers' own API check then keeps a bad version from serving."""
    client: dict[str, Any] = {"caBundle": base64.b64encode(ca_bundle).decode()}
    if settings.webhook_service:
        client["service"] = {**service_reference(settings.webhook_service), "path": f"/{HANDLER}"}
    else:
        host = settings.webhook_host
        host = f"[{host}]" if ":" in host else host
        client["url"] = f"https://{host}:{settings.webhook_port}/{HANDLER}"
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": settings.webhook_name,
                     "labels": {labels.PART_OF: "batcomputer", labels.MANAGED_BY: labels.MANAGER}},
        "webhooks": [{
            "name": f"{HANDLER}.{settings.webhook_name}",
            "rules": [{"apiGroups": [labels.GROUP], "apiVersions": [labels.VERSION],
                       "resources": [labels.PLURAL], "operations": ["CREATE", "UPDATE"],
                       "scope": "Namespaced"}],
            "clientConfig": client,
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "timeoutSeconds": 10,
            "admissionReviewVersions": ["v1"],
            "matchPolicy": "Equivalent",
        }],
    }
