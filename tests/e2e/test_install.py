"""The path users take: `kubectl apply -k manifests/` installs the operator image, which
then runs a BatModel's whole life with the server image, every pod a real container.

This module has a local cluster of its own (beside the session's): the operator installed
from manifests/ watches every namespace, and must not meet the other tests' operators.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from testkit import (
    KENT,
    Kubectl,
    batmodel,
    condition,
    get,
    predict,
    served_versions,
    wait_for,
    wait_model_ready,
)

from batcomputer.cli import project_version
from batcomputer.testenv.cluster import ControlPlane
from batcomputer.testenv.harness import serve_files
from batcomputer.testenv.network import local_address
from batcomputer.testenv.runtime import podman_environment

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
SYSTEM = "batcomputer-system"
VERSION = project_version()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ControlPlane(tmp_path_factory.mktemp("install-plane"), runtime="podman",
                      tie_to_parent=True) as plane:
        yield plane


@pytest.fixture(scope="module")
def kube(cluster: ControlPlane) -> Kubectl:
    return Kubectl(cluster)


def operator_log(cluster: ControlPlane) -> str:
    logs = sorted((cluster.dir / "pods").glob(f"{SYSTEM}_batcomputer-operator-*/container.log"))
    return "\n".join(f"== {log.parent.name}\n" + log.read_text(errors="replace")[-4000:]
                     for log in logs) or "(no operator log)"


@pytest.fixture(scope="module")
def installed(cluster: ControlPlane, kube: Kubectl) -> dict[str, Any]:
    """As the README says: apply the kustomization, wait for the rollout."""
    kube("apply", "-k", str(REPO / "manifests"))
    done = kube("rollout", "status", "deployment/batcomputer-operator", "--timeout=120s",
                namespace=SYSTEM, check=False)
    if done.returncode != 0:
        print(operator_log(cluster))
        pytest.fail(f"the operator Deployment did not become Ready: {done.stderr}")
    pods = get(kube, SYSTEM, "pods", "-l", "app.kubernetes.io/name=batcomputer-operator")["items"]
    assert len(pods) == 2  # one active, one standby

    def leader() -> str | None:
        found = kube("get", "lease", "batcomputer-operator", "-o", "jsonpath={.spec.holderIdentity}",
                     namespace=SYSTEM, check=False)
        return found.stdout.strip() or None if found.returncode == 0 else None
    active = wait_for(leader, timeout=60, what="an operator replica to take the Lease")
    [pod] = [p for p in pods if p["metadata"]["name"] == active]
    return pod


@pytest.fixture(scope="module")
def artifacts(cluster: ControlPlane, model_registry: Path) -> str:
    return serve_files(cluster, model_registry)


@pytest.fixture(scope="module")
def ns(kube: Kubectl) -> str:
    name = f"install-{secrets.token_hex(3)}"
    kube("create", "namespace", name)
    return name


def podman_inspect(name: str) -> dict[str, Any]:
    done = subprocess.run(["podman", "inspect", name], capture_output=True, text=True,
                          env=podman_environment(), check=True)
    inspected: dict[str, Any] = json.loads(done.stdout)[0]
    return inspected


def test_the_operator_runs_from_its_image_as_a_restricted_container(installed: dict[str, Any]) -> None:
    status = installed["status"]
    [container] = status["containerStatuses"]
    assert container["ready"] and container["image"] == f"batcomputer-operator:{VERSION}"
    assert container["containerID"].startswith("podman://")
    # The kubelet's probe target answers: kopf's liveness endpoint on the pod's address.
    url = f"http://{local_address(status['podIP'])}:8081/healthz"
    assert requests.get(url, timeout=5).status_code == 200
    inspected = podman_inspect(container["containerID"].removeprefix("podman://"))
    assert inspected["Config"]["User"] == "10001:10001"
    assert inspected["HostConfig"]["ReadonlyRootfs"] is True
    assert "no-new-privileges" in inspected["HostConfig"]["SecurityOpt"]
    assert len(inspected["HostConfig"]["CapDrop"]) >= 14 and not inspected["HostConfig"]["CapAdd"]
    mounts = {m["Destination"]: m for m in inspected["Mounts"]}
    assert mounts["/var/run/secrets/kubernetes.io/serviceaccount"]["RW"] is False


def test_a_batmodels_whole_life_on_the_installed_operator(
        cluster: ControlPlane, kube: Kubectl, installed: dict[str, Any], ns: str,
        artifacts: str) -> None:
    def ready(timeout: float = 120) -> dict[str, Any]:
        try:
            return wait_model_ready(kube, ns, timeout=timeout)
        except AssertionError:
            print(operator_log(cluster))
            raise

    # Two majors side by side, from real server containers.
    kube("apply", "-f", "-", input=batmodel(artifacts, "1.0.0", "2.0.0", promoted="1.0.0",
                                            replicas=1), namespace=ns)
    bm = ready()
    assert [v["phase"] for v in bm["status"]["versions"]] == ["Ready", "Ready"]
    assert predict(cluster, ns, "crime-v1", KENT).status_code == 200
    v2 = predict(cluster, ns, "crime-v2", {**KENT, "place": "Supermarket"})
    assert v2.status_code == 200 and set(v2.json()) == {"not_caught", "caught"}
    assert predict(cluster, ns, "crime-v2", KENT).status_code == 422
    assert served_versions(cluster, ns, "crime") == {"1.0.0"}
    [server] = get(kube, ns, "pods", "-l", "batcomputer.io/major=1")["items"]
    inspected = podman_inspect(server["status"]["containerStatuses"][0]["containerID"]
                               .removeprefix("podman://"))
    assert inspected["Config"]["User"] == "10001:10001" and inspected["HostConfig"]["ReadonlyRootfs"]
    assert inspected["ImageName"].endswith(f"batcomputer-server:{VERSION}")

    # A MINOR release rolls crime-v1 in place.
    kube("apply", "-f", "-", input=batmodel(artifacts, "1.1.0", "2.0.0", promoted="1.1.0",
                                            replicas=1), namespace=ns)
    ready()
    wait_for(lambda: served_versions(cluster, ns, "crime-v1") == {"1.1.0"}, what="crime-v1 on 1.1.0")

    # Promotion moves the stable Service.
    kube("patch", "bm", "crime", "--type=merge", "-p", '{"spec":{"promoted":"2.0.0"}}', namespace=ns)
    assert ready()["status"]["serving"] == "2.0.0"
    wait_for(lambda: served_versions(cluster, ns, "crime") == {"2.0.0"}, what="stable on 2.0.0")

    # A version whose artifact does not exist never takes traffic from 1.1.0.
    kube("apply", "-f", "-", input=batmodel(artifacts, "1.2.0", "2.0.0", promoted="2.0.0",
                                            replicas=1), namespace=ns)

    def degraded() -> dict[str, Any] | None:
        bm = get(kube, ns, "bm", "crime")
        return bm if condition(bm, "Degraded").get("status") == "True" else None
    bm = wait_for(degraded, timeout=90, what="Degraded")
    assert "404" in bm["status"]["versions"][0]["message"]
    assert served_versions(cluster, ns, "crime-v1") == {"1.1.0"}
    assert predict(cluster, ns, "crime-v1", KENT).status_code == 200

    # Deleting the BatModel removes everything it owns, containers included.
    kube("delete", "bm", "crime", namespace=ns)
    wait_for(lambda: not get(kube, ns, "deployments,services,replicasets,pods",
                             "-l", "batcomputer.io/model=crime")["items"],
             timeout=90, what="children garbage-collected")
    left = subprocess.run(["podman", "ps", "--format", "{{.Names}}"], capture_output=True, text=True,
                          env=podman_environment(), check=True).stdout
    assert f"k8s_{ns}_crime" not in left


def test_manifests_name_the_images_of_this_version() -> None:
    docs = list(yaml.safe_load_all((REPO / "manifests" / "operator.yaml").read_text()))
    [container] = docs[0]["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"] == f"batcomputer-operator:{VERSION}"
    assert env["BATCOMPUTER_OPERATOR_SERVER_IMAGE"] == f"batcomputer-server:{VERSION}"


def test_uninstall_as_the_readme_says_leaves_nothing(cluster: ControlPlane, kube: Kubectl,
                                                     installed: dict[str, Any], ns: str,
                                                     artifacts: str) -> None:
    """The models first (`kubectl delete batmodels --all -A --cascade=foreground`: each
    goes once its children have), then `kubectl delete -k manifests/`: nothing is left,
    nothing is stuck (BatModels carry no finalizer; issue 19 saw one stuck). The other
    order can leave children running: the garbage collector may no longer resolve the
    deleted CRD's kind (tests/e2e/test_walkthrough.py runs the README's commands)."""
    kube("apply", "-f", "-", input=batmodel(artifacts, "1.0.0", replicas=1), namespace=ns)
    wait_for(lambda: get(kube, ns, "deployments", "-l", "batcomputer.io/model=crime")["items"],
             timeout=60, what="the model's Deployment")
    assert not get(kube, ns, "bm", "crime")["metadata"].get("finalizers")
    kube("delete", "batmodels", "--all", "-A", "--cascade=foreground", "--timeout=120s")
    assert not get(kube, ns, "deployments,services,configmaps",
                   "-l", "batcomputer.io/model=crime")["items"]
    kube("delete", "-k", str(REPO / "manifests"), "--wait=false")

    def gone() -> bool:
        crd = kube("get", "crd", "batmodels.batcomputer.io", check=False)
        children = get(kube, ns, "deployments,services,configmaps",
                       "-l", "batcomputer.io/model=crime")["items"]
        return crd.returncode != 0 and not children
    wait_for(gone, timeout=120, what="the CRD, the BatModel and its children deleted")
