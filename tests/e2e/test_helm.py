"""Installing with Helm: a real helm binary (hack/build-helm.sh, from the Go module proxy,
cached) lints and renders the chart, the real API server validates what it renders, and
install / upgrade / uninstall run on a local cluster of this module's own, with the
operator from its image reconciling a BatModel of real server containers.

The chart's defaults render exactly what `kubectl apply -k manifests/` installs, so the two
cannot drift apart."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from testkit import KENT, Kubectl, batmodel, get, predict, served_versions, wait_for, wait_model_ready

from batcomputer.testenv.cluster import ControlPlane
from batcomputer.testenv.harness import serve_files

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "batcomputer"
SYSTEM = "batcomputer-system"


@pytest.fixture(scope="module")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    built = subprocess.run([str(REPO / "hack" / "build-helm.sh")], capture_output=True, text=True,
                           check=False, timeout=1800)
    assert built.returncode == 0, built.stderr
    return Helm(Path(built.stdout.strip().splitlines()[-1]), tmp_path_factory.mktemp("helm-home"))


class Helm:
    """The helm binary, with its cache, config and data in a folder of the test's own."""

    def __init__(self, binary: Path, home: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, **{f"HELM_{kind}_HOME": str(home / kind.lower())
                                     for kind in ("CACHE", "CONFIG", "DATA")}}

    def __call__(self, cluster: ControlPlane | None, *args: str) -> subprocess.CompletedProcess[str]:
        env = dict(self.env)
        if cluster is not None:
            env["KUBECONFIG"] = str(cluster.kubeconfig_path)
        return subprocess.run([str(self.binary), *args], capture_output=True, text=True, env=env,
                              timeout=600, check=False)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    with ControlPlane(tmp_path_factory.mktemp("helm-plane"), runtime="podman",
                      tie_to_parent=True) as plane:
        yield plane


@pytest.fixture(scope="module")
def kube(cluster: ControlPlane) -> Kubectl:
    return Kubectl(cluster)


def objects(text: str) -> dict[tuple[str, str], Any]:
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(text) if doc}


def test_lint_and_the_defaults_render_what_kustomize_installs(helm: Helm, kube: Kubectl) -> None:
    lint = helm(None, "lint", str(CHART), "--strict")
    assert lint.returncode == 0, lint.stdout + lint.stderr
    rendered = helm(None, "template", "batcomputer", str(CHART), "--namespace", SYSTEM,
                        "--include-crds")
    assert rendered.returncode == 0, rendered.stderr
    from_chart = objects(rendered.stdout)
    from_kustomize = objects(kube("kustomize", str(REPO / "manifests")).stdout)
    from_kustomize.pop(("Namespace", SYSTEM))  # helm install --create-namespace makes it
    assert sorted(from_chart) == sorted(from_kustomize)
    for key, obj in from_kustomize.items():
        assert from_chart[key] == obj, key
    # The optional operator NetworkPolicy, both ways.
    with_policy = helm(None, "template", "batcomputer", str(CHART), "--namespace", SYSTEM,
                       "--set", "operatorNetworkPolicy.enabled=true")
    optional = objects((REPO / "manifests" / "optional" / "operator-networkpolicy.yaml").read_text())
    key = ("NetworkPolicy", "batcomputer-operator")
    assert key not in from_chart and objects(with_policy.stdout)[key] == optional[key]
    # The chart's copy of the CRD is the CRD.
    assert ((CHART / "crds" / "batmodels.batcomputer.io.yaml").read_bytes()
            == (REPO / "crds" / "batmodels.batcomputer.io.yaml").read_bytes())


def test_values_reach_the_rendered_objects_and_the_api_server_accepts_them(
        helm: Helm, cluster: ControlPlane, kube: Kubectl) -> None:
    digest = "sha256:" + "a" * 64
    rendered = helm(None, "template", "bc", str(CHART), "--namespace", "ops",
                        "--set", f"image.operator.digest={digest}",
                        "--set", "image.server.repository=reg.example/batcomputer-server",
                        "--set", "image.server.tag=9.9.9", "--set", "replicas=3",
                        "--set", "watchNamespaces={team-a,team-b}", "--set", "logLevel=debug",
                        "--set", "webhook.enabled=false", "--set", "serverDefaults.memoryLimit=1Gi",
                        "--set", "leaderElection.leaseSeconds=12",
                        "--set", "operatorNetworkPolicy.enabled=true",
                        "--set", "operatorNetworkPolicy.apiServerPorts={8443}")
    assert rendered.returncode == 0, rendered.stderr
    docs = objects(rendered.stdout)
    assert ("ValidatingWebhookConfiguration", "batmodels.batcomputer.io") not in docs
    deployment = docs[("Deployment", "batcomputer-operator")]
    assert deployment["metadata"]["namespace"] == "ops" and deployment["spec"]["replicas"] == 3
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert container["image"] == f"batcomputer-operator@{digest}"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["BATCOMPUTER_OPERATOR_SERVER_IMAGE"] == "reg.example/batcomputer-server:9.9.9"
    assert env["BATCOMPUTER_OPERATOR_NAMESPACES"] == "team-a,team-b"
    assert env["BATCOMPUTER_OPERATOR_LOG_LEVEL"] == "debug"
    assert env["BATCOMPUTER_OPERATOR_MEMORY_LIMIT"] == "1Gi"
    assert env["BATCOMPUTER_OPERATOR_LEASE_SECONDS"] == "12"
    assert "BATCOMPUTER_OPERATOR_WEBHOOK_HOST" not in env
    policy = docs[("NetworkPolicy", "batcomputer-operator")]
    assert policy["spec"]["egress"][1]["ports"] == [{"port": 8443, "protocol": "TCP"},
                                                    {"port": 80, "protocol": "TCP"},
                                                    {"port": 443, "protocol": "TCP"}]
    binding = docs[("ClusterRoleBinding", "batcomputer-operator")]
    assert binding["subjects"][0]["namespace"] == "ops"
    # The real API server validates every object (CRD first, as helm installs it).
    kube("create", "namespace", "ops")
    kube("apply", "-f", str(REPO / "crds" / "batmodels.batcomputer.io.yaml"))
    checked = kube("apply", "--dry-run=server", "-f", "-", input=rendered.stdout, check=False)
    assert checked.returncode == 0, checked.stderr


def test_install_upgrade_and_uninstall(helm: Helm, cluster: ControlPlane, kube: Kubectl,
                                       model_registry: Path) -> None:
    artifacts = serve_files(cluster, model_registry)
    installed = helm(cluster, "install", "batcomputer", str(CHART), "--namespace",
                         SYSTEM, "--create-namespace", "--wait", "--timeout", "4m")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert get(kube, SYSTEM, "deployment", "batcomputer-operator")["status"]["readyReplicas"] == 2
    kube("create", "namespace", "models")
    kube("apply", "-f", "-", input=batmodel(artifacts, "1.0.0", replicas=1), namespace="models")
    wait_model_ready(kube, "models", timeout=180)
    assert predict(cluster, "models", "crime-v1", KENT).status_code == 200

    upgraded = helm(cluster, "upgrade", "batcomputer", str(CHART), "--namespace", SYSTEM,
                        "--set", "logLevel=debug", "--set", "replicas=1", "--wait", "--timeout", "4m")
    assert upgraded.returncode == 0, upgraded.stdout + upgraded.stderr
    deployment = get(kube, SYSTEM, "deployment", "batcomputer-operator")
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    assert {"name": "BATCOMPUTER_OPERATOR_LOG_LEVEL", "value": "debug"} in container["env"]
    assert deployment["spec"]["replicas"] == 1
    # The upgraded operator carries on: a MINOR rolls in place.
    kube("apply", "-f", "-", input=batmodel(artifacts, "1.1.0", replicas=1), namespace="models")
    wait_for(lambda: served_versions(cluster, "models", "crime-v1") == {"1.1.0"}, timeout=180,
             what="crime-v1 on 1.1.0 after the upgrade")
    history = helm(cluster, "history", "batcomputer", "--namespace", SYSTEM)
    assert history.returncode == 0 and "upgrade complete" in history.stdout.lower()

    removed = helm(cluster, "uninstall", "batcomputer", "--namespace", SYSTEM, "--wait")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    for kind, name in (("deployment", "batcomputer-operator"), ("serviceaccount", "batcomputer-operator")):
        assert kube("get", kind, name, namespace=SYSTEM, check=False).returncode != 0
    for kind, name in (("clusterrole", "batcomputer-operator"),
                       ("validatingwebhookconfiguration", "batmodels.batcomputer.io")):
        assert kube("get", kind, name, check=False).returncode != 0
    # Helm never deletes CRDs (nor, so, the BatModels): README says how to remove them.
    assert kube("get", "crd", "batmodels.batcomputer.io", check=False).returncode == 0
    kube("delete", "bm", "crime", namespace="models")
