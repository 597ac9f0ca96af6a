"""A BatModel serving an s3:// version from a real S3-compatible server (SeaweedFS on
loopback), with credentials from a Secret that only the pods ever read."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from conftest import S3
from testkit import (
    KENT,
    Kubectl,
    OperatorProcess,
    condition,
    get,
    predict,
    served_versions,
    wait_for,
    wait_model_ready,
)

from batcomputer.testenv.cluster import ControlPlane

pytestmark = pytest.mark.e2e


def stored(s3: S3, location: str, secret: str, name: str = "stored") -> str:
    return yaml.safe_dump({
        "apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel", "metadata": {"name": name},
        "spec": {"replicas": 1,
                 "versions": [{"version": "1.0.0", "artifact": f"{location}/crime/1.0.0/"}],
                 "s3": {"endpoint": s3.server.endpoint, "region": "us-east-1",
                        "credentialsSecret": secret}}})


def wait_degraded(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    def degraded() -> dict[str, Any] | None:
        bm = get(kubectl, ns, "bm", name)
        return bm if condition(bm, "Degraded").get("status") == "True" else None
    found: dict[str, Any] = wait_for(degraded, timeout=120, what=f"BatModel {name} Degraded")
    return found


def secret(kubectl: Kubectl, ns: str, name: str, key_id: str, key: str) -> None:
    kubectl("create", "secret", "generic", name, f"--from-literal=AWS_ACCESS_KEY_ID={key_id}",
            f"--from-literal=AWS_SECRET_ACCESS_KEY={key}", namespace=ns)


def test_an_s3_version_is_served_with_credentials_from_a_secret(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess, namespace: str,
        s3: S3, s3_registry: str) -> None:
    secret(kubectl, namespace, "model-store", s3.reader.access_key, s3.reader.secret_key)
    kubectl("apply", "-f", "-", input=stored(s3, s3_registry, "model-store"), namespace=namespace)
    bm = wait_model_ready(kubectl, namespace, "stored", timeout=120)
    assert bm["status"]["versions"][0]["serving"] == "1.0.0"
    assert served_versions(control_plane, namespace, "stored-v1") == {"1.0.0"}
    got = predict(control_plane, namespace, "stored-v1", KENT)
    assert got.status_code == 200 and set(got.json()) == {"not_caught", "caught"}
    env = get(kubectl, namespace, "deployment", "stored-v1")["spec"]["template"]["spec"][
        "containers"][0]["env"]
    refs = {e["name"]: e.get("valueFrom", {}).get("secretKeyRef", {}).get("name") for e in env}
    assert refs["AWS_ACCESS_KEY_ID"] == refs["AWS_SECRET_ACCESS_KEY"] == "model-store"
    # The secret's value is nowhere the operator writes: not in the BatModel, its status,
    # the children, events or the operator's log.
    seen = [kubectl("get", "bm,deployments,services,events", "-o", "yaml",
                    namespace=namespace).stdout, operator.log.read_text(errors="replace")]
    assert not any(s3.reader.secret_key in text for text in seen)


def test_wrong_credentials_are_reported_and_the_good_version_keeps_serving(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess, namespace: str,
        s3: S3, s3_registry: str) -> None:
    secret(kubectl, namespace, "wrong-store", s3.reader.access_key, "not-the-secret-value")
    kubectl("apply", "-f", "-", input=stored(s3, s3_registry, "wrong-store", name="denied"),
            namespace=namespace)

    bm = wait_degraded(kubectl, namespace, "denied")
    message = bm["status"]["versions"][0]["message"]
    assert "access denied to s3://models/registry/crime/1.0.0/metadata.json" in message, message
    assert "not-the-secret-value" not in yaml.safe_dump(bm)
    # The other model, from the same bucket with good credentials, is untouched.
    assert condition(get(kubectl, namespace, "bm", "stored"), "Ready").get("status") == "True"
    assert predict(control_plane, namespace, "stored-v1", KENT).status_code == 200
    kubectl("delete", "bm", "denied", namespace=namespace)


def test_a_missing_secret_is_reported(kubectl: Kubectl, operator: OperatorProcess, namespace: str,
                                      s3: S3, s3_registry: str) -> None:
    kubectl("apply", "-f", "-", input=stored(s3, s3_registry, "absent", name="unkeyed"),
            namespace=namespace)

    bm = wait_degraded(kubectl, namespace, "unkeyed")
    message = bm["status"]["versions"][0]["message"]
    # The kubelet says: secret "absent" not found; the podlet (whose lookups do not tell a
    # missing Secret from a missing key): couldn't find key ... in Secret NS/absent.
    assert f"Secret {namespace}/absent" in message or 'secret "absent"' in message, message
    kubectl("delete", "bm", "unkeyed", "stored", namespace=namespace)
