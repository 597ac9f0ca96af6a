"""Where the API server is told to call the webhook, and the certificate it checks."""

from __future__ import annotations

import base64
import ipaddress
import subprocess
import sys
from pathlib import Path

from cryptography import x509

from batcomputer.operator import webhook
from batcomputer.operator.settings import Settings


def test_on_loopback_or_a_pod_ip_the_webhook_is_a_url() -> None:
    settings = Settings(webhook_host="127.0.0.1", webhook_port=19443)
    listener, ca = webhook.server(settings)
    config = webhook.configuration(settings, ca)
    (hook,) = config["webhooks"]
    assert config["metadata"]["name"] == "batmodels.batcomputer.io"
    assert hook["name"] == "artifacts.batmodels.batcomputer.io"
    assert hook["clientConfig"]["url"] == "https://127.0.0.1:19443/artifacts"
    assert hook["failurePolicy"] == "Ignore" and hook["sideEffects"] == "None"
    assert hook["rules"][0]["operations"] == ["CREATE", "UPDATE"]
    cert = x509.load_pem_x509_certificate(base64.b64decode(hook["clientConfig"]["caBundle"]))
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert listener.port == 19443 and listener.host == "127.0.0.1"


def test_the_self_signed_key_goes_with_the_process() -> None:
    program = ("from batcomputer.operator import webhook, settings\n"
               "listener, _ = webhook.server(settings.Settings(webhook_host='127.0.0.1'))\n"
               "print(listener.pkeyfile)\n")
    key = Path(subprocess.run([sys.executable, "-c", program], check=True, capture_output=True,
                              text=True).stdout.strip())
    assert key.name == "tls.key" and key.parent.name.startswith("batcomputer-webhook-")
    assert not key.parent.exists()


def test_through_a_service_where_the_api_server_cannot_reach_pods(tmp_path: Path) -> None:
    settings = Settings(webhook_service="batcomputer-system/batcomputer-webhook")
    cert, _ = webhook.self_signed(webhook.names(settings), tmp_path)
    config = webhook.configuration(settings, cert.read_bytes())
    client = config["webhooks"][0]["clientConfig"]
    assert client["service"] == {"namespace": "batcomputer-system", "name": "batcomputer-webhook",
                                 "port": 443, "path": "/artifacts"}
    assert "url" not in client
    sans = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "batcomputer-webhook.batcomputer-system.svc",
        "batcomputer-webhook.batcomputer-system.svc.cluster.local"]
    assert (tmp_path / "tls.key").stat().st_mode & 0o777 == 0o600


def test_the_manifest_installs_the_configuration_the_operator_patches() -> None:
    import yaml
    installed = yaml.safe_load((Path(__file__).parents[2] / "manifests" / "webhook.yaml").read_text())
    wanted = webhook.configuration(Settings(webhook_host="10.0.0.1"), b"ca")
    assert installed["metadata"]["name"] == wanted["metadata"]["name"]
    strip = ("clientConfig",)
    assert ([{k: v for k, v in h.items() if k not in strip} for h in installed["webhooks"]]
            == [{k: v for k, v in h.items() if k not in strip} for h in wanted["webhooks"]])
