"""A MAJOR's API is a contract with its apps, enforced on the real control plane: by the
operator's admission webhook (called by the real API server over TLS on loopback) where
the artifact can be read, and by the servers themselves (a version with another API
never becomes ready) where it cannot. Pre-release and build versions run end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from testkit import (
    KENT,
    Kubectl,
    OperatorProcess,
    batmodel,
    condition,
    get,
    predict,
    read_only_claim,
    served_versions,
    service_urls,
    wait_for,
    wait_model_ready,
)

from batcomputer.cli import main as cli
from batcomputer.testenv.cluster import ControlPlane
from batcomputer.testenv.harness import serve_files

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]

RC = "1.2.0-rc.1+build.7"
FORGED = "1.3.0"
"""2.0.0's model (it adds the place input) published as if it were a MINOR of 1: the
mistake the training CLI refuses, made by hand."""
WEBHOOK = 'admission webhook "artifacts.batmodels.batcomputer.io" denied the request: '


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, model_registry: Path, crime_data: Path) -> Path:
    """The e2e registry plus a pre-release with build metadata and a forged 1.3.0."""
    reg = tmp_path_factory.mktemp("contract") / "registry"
    shutil.copytree(model_registry, reg)
    assert cli(["-q", "train", str(crime_data), "--registry", str(reg), "--param", "n_estimators=10",
                "--param", "max_depth=6", "--version", RC]) == 0
    forged = reg / "crime" / FORGED
    shutil.copytree(reg / "crime" / "2.0.0", forged)
    meta = forged / "metadata.json"
    meta.chmod(0o644)
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": FORGED}))
    # 1.0.0 as published before the pickle-free form existed: pickles only.
    legacy = reg / "legacy" / "crime" / "1.0.0"
    shutil.copytree(reg / "crime" / "1.0.0", legacy)
    meta = legacy / "metadata.json"
    meta.chmod(0o644)
    doc = json.loads(meta.read_text())
    for name in ("model.onnx", "lookup.json", "flags.json"):
        (legacy / name).chmod(0o644)
        (legacy / name).unlink()
        del doc["files"][name]
    meta.write_text(json.dumps(doc))
    for folder in (reg.parent, reg, reg / "crime", reg / "legacy", reg / "legacy" / "crime", legacy):
        folder.chmod(0o755)  # served to uid 10001 from a PersistentVolume too
    return reg


@pytest.fixture(scope="module")
def base(control_plane: ControlPlane, registry: Path) -> str:
    return serve_files(control_plane, registry, name="contract-files")


def registered(kubectl: Kubectl) -> bool:
    """Whether the operator has put its address into the webhook configuration."""
    hook = get(kubectl, "", "validatingwebhookconfiguration", "batmodels.batcomputer.io")
    return bool(hook["webhooks"][0]["clientConfig"]["url"] != "https://127.0.0.1:1/artifacts")


def apply(kubectl: Kubectl, ns: str, doc: str) -> Any:
    return kubectl("apply", "-f", "-", input=doc, namespace=ns, check=False)


def test_the_webhook_refuses_a_minor_that_changes_its_majors_api(
        kubectl: Kubectl, operator: OperatorProcess, namespace: str, base: str) -> None:
    assert apply(kubectl, namespace, batmodel(base, "1.0.0", replicas=1)).returncode == 0
    wait_model_ready(kubectl, namespace)
    done = apply(kubectl, namespace, batmodel(base, FORGED, replicas=1))
    assert done.returncode != 0
    assert (WEBHOOK + f"{FORGED} changes the API of MAJOR 1 (adds place) that 1.0.0 serves: "
            f"publish it as 2.0.0 and list it as its own entry beside MAJOR 1") in done.stderr
    # An admin re-applies the manifests: the placeholder is back, and the operator puts
    # itself back within a resync period.
    kubectl("apply", "-f", str(REPO / "manifests" / "webhook.yaml"))

    wait_for(lambda: registered(kubectl), timeout=30, what="the webhook registered again")
    assert apply(kubectl, namespace, batmodel(base, FORGED, replicas=1)).returncode != 0
    # An entry whose artifact is another version.
    wrong = batmodel(base, "1.1.0", replicas=1).replace(f"{base}/crime/1.1.0/", f"{base}/crime/1.0.0/")
    done = apply(kubectl, namespace, wrong)
    assert done.returncode != 0
    assert "the artifact is version 1.0.0, not 1.1.0" in done.stderr
    # Nothing of it was stored; a MINOR that keeps the API is accepted.
    assert get(kubectl, namespace, "bm", "crime")["spec"]["versions"][0]["version"] == "1.0.0"
    assert apply(kubectl, namespace, batmodel(base, "1.1.0", replicas=1)).returncode == 0
    wait_model_ready(kubectl, namespace)
    assert served_versions(kubectl.plane, namespace, "crime-v1") == {"1.1.0"}
    kubectl("delete", "bm", "crime", namespace=namespace)


def test_a_pvc_roll_to_another_api_stalls_and_the_old_version_keeps_serving(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess, namespace: str,
        registry: Path) -> None:
    read_only_claim(kubectl, namespace, "contract-store", registry)

    def stored(version: str) -> str:
        return yaml.safe_dump({
            "apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel", "metadata": {"name": "stored"},
            "spec": {"replicas": 1, "versions": [{"version": version,
                                                  "artifact": f"pvc://contract-store/crime/{version}"}]}})

    assert apply(kubectl, namespace, stored("1.0.0")).returncode == 0
    wait_model_ready(kubectl, namespace, "stored")
    # The MAJOR's API, learned from the pod that serves it.
    def learned() -> dict[str, Any] | None:
        found = kubectl("get", "configmap", "stored-v1", "-o", "json", namespace=namespace, check=False)
        return json.loads(json.loads(found.stdout)["data"]["api.json"]) if found.returncode == 0 else None
    record = wait_for(learned, timeout=30, what="the API record of stored-v1")
    assert record["version"] == "1.0.0" and record["major"] == 1
    assert [i["name"] for i in record["api"]["inputs"]] == ["force", "crime", "month"]

    done = apply(kubectl, namespace, stored(FORGED))
    assert done.returncode == 0  # the webhook cannot read a volume: it warns
    assert f"{FORGED} (pvc://contract-store/crime/{FORGED}): not checked at admission" in done.stderr

    def degraded() -> dict[str, Any] | None:
        bm = get(kubectl, namespace, "bm", "stored")
        return bm if condition(bm, "Degraded").get("status") == "True" else None
    bm = wait_for(degraded, timeout=90, what="stored Degraded")
    version = bm["status"]["versions"][0]
    assert (f"{FORGED} changes the API of MAJOR 1 (adds place) that 1.0.0 serves"
            in version["message"]), version
    assert version["serving"] == "1.0.0" and bm["status"]["serving"] == "1.0.0"
    answer = predict(control_plane, namespace, "stored-v1", KENT)
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == "1.0.0"
    kubectl("delete", "bm", "stored", namespace=namespace)


def test_pre_release_and_build_versions_run_end_to_end(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess, namespace: str,
        base: str) -> None:
    assert apply(kubectl, namespace, batmodel(base, RC, "2.0.0", promoted=RC, replicas=1,
                                              name="rc")).returncode == 0
    bm = wait_model_ready(kubectl, namespace, "rc")
    assert [v["version"] for v in bm["status"]["versions"]] == [RC, "2.0.0"]
    assert bm["status"]["serving"] == RC
    dep = get(kubectl, namespace, "deployment", "rc-v1")
    assert dep["metadata"]["labels"]["batcomputer.io/version"] == "1.2.0-rc.1_build.7"
    assert dep["metadata"]["annotations"]["batcomputer.io/version"] == RC
    assert served_versions(control_plane, namespace, "rc") == {RC}
    answer = requests.post(service_urls(control_plane, namespace, "rc")[0] + "/api/predict",
                           json=KENT, timeout=5)
    assert answer.status_code == 200 and answer.headers["X-Model-Version"] == RC
    # The Open Inference Protocol on the same Service, where status says.
    assert bm["status"]["v2Endpoint"] == f"http://rc.{namespace}.svc/v2/models/rc/infer"
    tensors = [{"name": k, "shape": [1], "datatype": "INT64" if k == "month" else "BYTES",
                "data": [v]} for k, v in KENT.items()]
    v2 = requests.post(service_urls(control_plane, namespace, "rc")[0] + "/v2/models/rc/infer",
                       json={"id": "e2e", "inputs": tensors}, timeout=5)
    assert v2.status_code == 200, v2.text
    assert (v2.json()["model_version"], v2.json()["id"]) == (RC, "e2e")
    assert v2.json()["outputs"][0]["data"] == list(answer.json().values())
    listed = kubectl("get", "bm", "rc", namespace=namespace).stdout
    assert RC in listed
    kubectl("delete", "bm", "rc", namespace=namespace)


def legacy(artifact: str, **entry: Any) -> str:
    return yaml.safe_dump({
        "apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel", "metadata": {"name": "legacy"},
        "spec": {"replicas": 1, "versions": [{"version": "1.0.0", "artifact": artifact, **entry}]}})


def test_pickles_are_loaded_only_where_the_entry_allows_them(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess, namespace: str,
        base: str, registry: Path) -> None:
    over_http = f"{base}/legacy/crime/1.0.0/"
    wait_for(lambda: registered(kubectl), timeout=30, what="the webhook registered")
    done = apply(kubectl, namespace, legacy(over_http))
    assert done.returncode != 0
    assert (WEBHOOK + f"1.0.0 ({over_http}): the artifact has no pickle-free form (model.onnx, "
            "lookup.json, flags.json), and its server would have to unpickle model.pkl") in done.stderr
    # Where the webhook cannot read it, the server in the image refuses to unpickle.
    read_only_claim(kubectl, namespace, "legacy-store", registry)
    assert apply(kubectl, namespace, legacy("pvc://legacy-store/legacy/crime/1.0.0")).returncode == 0

    def refused() -> dict[str, Any] | None:
        bm = get(kubectl, namespace, "bm", "legacy")
        message = ((bm.get("status") or {}).get("versions") or [{}])[0].get("message", "")
        return bm if "has no pickle-free form" in message else None
    bm = wait_for(refused, timeout=90, what="legacy's server to refuse the pickles")
    assert "BATCOMPUTER_ALLOW_PICKLE=false" in bm["status"]["versions"][0]["message"]
    # The admin trusts it: allowPickle.
    assert apply(kubectl, namespace, legacy(over_http, allowPickle=True)).returncode == 0
    wait_model_ready(kubectl, namespace, "legacy")
    url = service_urls(control_plane, namespace, "legacy-v1")[0]
    assert requests.get(url + "/api/info", timeout=5).json()["prediction"]["runtime"] == "scikit-learn"
    assert predict(control_plane, namespace, "legacy-v1", KENT).status_code == 200
    kubectl("delete", "bm", "legacy", namespace=namespace)
