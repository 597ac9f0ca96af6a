"""The whole life of a BatModel on a real control plane, with real prediction servers.

The tests run in order and share one BatModel, as an admin would use it.
"""

from __future__ import annotations

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
    wait_for,
    wait_model_ready,
)

from batcomputer.testenv.cluster import ControlPlane

pytestmark = pytest.mark.e2e


def wait_ready(kubectl: Kubectl, ns: str, operator: OperatorProcess, timeout: float = 90) -> dict[str, Any]:
    def alive() -> None:
        assert operator.alive(), operator.tail()
    try:
        return wait_model_ready(kubectl, ns, check=alive, timeout=timeout)
    except AssertionError:
        print(operator.tail())
        raise


def test_bad_objects_are_refused_by_the_api_server(kubectl: Kubectl, installed: None,
                                                   namespace: str) -> None:
    cases = {
        "not semver": ({"versions": [{"version": "1.0", "artifact": "http://127.0.0.1:9/x/"}]},
                       "spec.versions[0].version: Invalid value: \"1.0\": version must be a "
                       "semantic version MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD] such as 1.4.2"),
        "scheme": ({"versions": [{"version": "1.0.0", "artifact": "ftp://x/"}]},
                   "artifact must be http(s)://HOST/PATH/, pvc://CLAIM/PATH or "
                   "s3://BUCKET/PREFIX/"),
        "digest": ({"versions": [{"version": "1.0.0", "artifact": "http://127.0.0.1:9/x/",
                                  "digest": "sha256:ABC"}]},
                   "digest must be sha256: followed by the 64 lowercase hex digits"),
        "promoted not semver": ({"versions": [{"version": "1.0.0", "artifact": "http://127.0.0.1:9/x/"}],
                                 "promoted": "v1"}, "promoted must be a semantic version"),
        "s3 endpoint": ({"versions": [{"version": "1.0.0", "artifact": "s3://models/x/"}],
                         "s3": {"endpoint": "minio:9000"}},
                        "endpoint must be http(s)://HOST[:PORT], without a path"),
        "two per major": ({"versions": [{"version": "1.0.0", "artifact": "http://127.0.0.1:9/x/"},
                                        {"version": "1.2.0", "artifact": "http://127.0.0.1:9/x/"}]},
                          "at most one version per MAJOR"),
        "promoted": ({"versions": [{"version": "1.0.0", "artifact": "http://127.0.0.1:9/x/"}],
                      "promoted": "2.0.0"}, "promoted must be one of the versions"),
        "replicas": ({"versions": [{"version": "1.0.0", "artifact": "http://127.0.0.1:9/x/"}],
                      "replicas": 500}, "spec.replicas"),
        "service name too long": ({"versions": [{"version": "10000.0.0", "artifact": "http://127.0.0.1:9/x/"}]},
                                  "<name>-v<major> names a Service and must fit in 63 characters"),
        "canary name too long": ({"versions": [{"version": "1.0.0", "artifact": "http://127.0.0.1:9/x/"}],
                                  "rollout": {"strategy": "Canary"}},
                                 "<name>-v<major>-canary names a Deployment"),
        "leading zero in a pre-release": ({"versions": [{"version": "1.2.3-0123", "artifact": "http://127.0.0.1:9/x/"}]},
                                          "spec.versions[0].version"),
        "empty build": ({"versions": [{"version": "1.2.3+", "artifact": "http://127.0.0.1:9/x/"}]},
                        "spec.versions[0].version"),
        "version too long": ({"versions": [{"version": "1.0.0-" + "a" * 123, "artifact": "http://127.0.0.1:9/x/"}]},
                             "spec.versions[0].version: Too long"),
        "quantity": ({"versions": [{"version": "1.0.0", "artifact": "http://127.0.0.1:9/x/"}],
                      "resources": {"requests": {"cpu": "lots"}}},
                     "spec.resources.requests[cpu]: Invalid value: \"lots\": must be a quantity"),
        "negative quantity": ({"versions": [{"version": "1.0.0", "artifact": "http://127.0.0.1:9/x/"}],
                               "resources": {"limits": {"memory": "-1Gi"}}},
                              "must be a quantity of at least 0"),
        "no spec": (None, "spec: Required value"),
    }
    for name, (spec, message) in cases.items():
        long_name = {"service name too long": "b" * 59, "canary name too long": "c" * 54}
        body: dict[str, Any] = {"apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel",
                                "metadata": {"name": long_name.get(name, "bad")}}
        if spec is not None:
            body["spec"] = spec
        doc = yaml.safe_dump(body)
        done = kubectl("apply", "-f", "-", input=doc, check=False, namespace=namespace)
        assert done.returncode != 0 and message in done.stderr, (name, done.stderr)
    assert kubectl("get", "bm", namespace=namespace).stdout == ""
    # Exactly at the limit: a 60-character name with MAJOR 1 names crime...-v1 of 63.
    edge = {"apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel",
            "metadata": {"name": "e" * 60},
            "spec": {"versions": [{"version": "1.0.0", "artifact": "http://127.0.0.1:9/x/"}]}}
    done = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(edge), namespace=namespace)
    assert "created (server dry run)" in done.stdout
    # With canaries, <name>-v1-canary is exactly 63 at 53 characters.
    canary = {**edge, "metadata": {"name": "c" * 53},
              "spec": {**edge["spec"], "rollout": {"strategy": "Canary"}}}
    done = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(canary), namespace=namespace)
    assert "created (server dry run)" in done.stdout
    # The whole semver grammar, up to semver.org's longest examples.
    major = "99999999999999999999999"
    for name, version in (("pre", "1.0.0-alpha-a.b-c-somethinglong+build.1-aef.1-its-okay"),
                          ("dashes", "1.2.3----RC-SNAPSHOT.12.9.1--.12+788"),
                          ("h" * (63 - 2 - len(major)), f"{major}.999999999999999999.99999999999999999")):
        valid = {**edge, "metadata": {"name": name},
                 "spec": {"versions": [{"version": version, "artifact": "http://127.0.0.1:9/x/"}],
                          "promoted": version}}
        done = kubectl("apply", "--dry-run=server", "-f", "-", input=yaml.safe_dump(valid),
                       namespace=namespace, check=False)
        assert "created (server dry run)" in done.stdout, (version, done.stderr)


def test_v1_creates_children_becomes_ready_and_predicts(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess,
        namespace: str, artifact_base: str) -> None:
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.0.0"), namespace=namespace)
    bm = wait_ready(kubectl, namespace, operator)
    uid = bm["metadata"]["uid"]
    dep = get(kubectl, namespace, "deployment", "crime-v1")
    assert dep["metadata"]["ownerReferences"][0]["uid"] == uid
    assert dep["metadata"]["labels"]["batcomputer.io/version"] == "1.0.0"
    assert dep["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "batcomputer-operator"
    for svc in ("crime", "crime-v1"):
        assert get(kubectl, namespace, "service", svc)["metadata"]["ownerReferences"][0]["uid"] == uid
    st = bm["status"]
    assert st["versions"][0] | {"message": ""} == {
        "version": "1.0.0", "major": 1, "deployment": "crime-v1", "service": "crime-v1",
        "endpoint": f"http://crime-v1.{namespace}.svc/api/predict",
        "v2Endpoint": f"http://crime-v1.{namespace}.svc/v2/models/crime/infer", "replicas": 2,
        "readyReplicas": 2, "updatedReplicas": 2, "serving": "1.0.0", "rolledOut": True,
        "phase": "Ready", "reason": "Available", "message": ""}
    assert st["serving"] == st["promoted"] == "1.0.0"
    got = predict(control_plane, namespace, "crime-v1", KENT)
    assert got.status_code == 200 and set(got.json()) == {"not_caught", "caught"}
    assert served_versions(control_plane, namespace, "crime") == {"1.0.0"}
    printed = kubectl("get", "bm", "crime", namespace=namespace).stdout
    assert "1/1" in printed and "1.0.0" in printed


def test_operator_serves_its_liveness_probe(operator: OperatorProcess) -> None:
    url = operator.env["BATCOMPUTER_OPERATOR_LIVENESS_ENDPOINT"]
    assert wait_for(lambda: requests.get(url, timeout=2).status_code == 200, what="operator /healthz")


def test_minor_bump_rolls_the_same_deployment(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess,
        namespace: str, artifact_base: str) -> None:
    before = get(kubectl, namespace, "deployment", "crime-v1")["metadata"]["uid"]
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.1.0"), namespace=namespace)
    wait_ready(kubectl, namespace, operator)
    dep = get(kubectl, namespace, "deployment", "crime-v1")
    assert dep["metadata"]["uid"] == before
    assert dep["spec"]["template"]["metadata"]["labels"]["batcomputer.io/version"] == "1.1.0"
    assert served_versions(control_plane, namespace, "crime-v1") == {"1.1.0"}


def test_new_major_runs_side_by_side_with_its_own_api(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess,
        namespace: str, artifact_base: str) -> None:
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.1.0", "2.0.0", promoted="1.1.0"),
            namespace=namespace)
    bm = wait_ready(kubectl, namespace, operator)
    assert [v["phase"] for v in bm["status"]["versions"]] == ["Ready", "Ready"]
    assert predict(control_plane, namespace, "crime-v1", KENT).status_code == 200
    missing = predict(control_plane, namespace, "crime-v2", KENT)
    assert missing.status_code == 422 and "place" in missing.json()["error"]
    v2 = predict(control_plane, namespace, "crime-v2", {**KENT, "place": "Supermarket"})
    assert v2.status_code == 200 and set(v2.json()) == {"not_caught", "caught"}
    extra = predict(control_plane, namespace, "crime-v1", {**KENT, "place": "Supermarket"})
    assert extra.status_code == 422 and "place" in extra.json()["error"]
    assert served_versions(control_plane, namespace, "crime") == {"1.1.0"}


def test_promote_and_roll_back(control_plane: ControlPlane, kubectl: Kubectl,
                               operator: OperatorProcess, namespace: str, artifact_base: str) -> None:
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.1.0", "2.0.0", promoted="2.0.0"),
            namespace=namespace)
    bm = wait_ready(kubectl, namespace, operator)
    assert bm["status"]["serving"] == "2.0.0"
    assert get(kubectl, namespace, "service", "crime")["spec"]["selector"]["batcomputer.io/major"] == "2"
    wait_for(lambda: served_versions(control_plane, namespace, "crime") == {"2.0.0"},
             what="stable endpoints on 2.0.0")
    kubectl("patch", "bm", "crime", "--type=merge", "-p", '{"spec":{"promoted":"1.1.0"}}',
            namespace=namespace)
    wait_ready(kubectl, namespace, operator)
    wait_for(lambda: served_versions(control_plane, namespace, "crime") == {"1.1.0"},
             what="stable endpoints back on 1.1.0")
    events = kubectl("get", "events", "--field-selector", "involvedObject.kind=BatModel",
                     namespace=namespace).stdout
    assert "Stable Service crime now routes to 2.0.0" in events
    assert "Stable Service crime now routes to 1.1.0" in events


def degraded(kubectl: Kubectl, ns: str) -> dict[str, Any] | None:
    bm = get(kubectl, ns, "bm", "crime")
    cond = condition(bm, "Degraded")
    if cond.get("status") == "True" and cond.get("observedGeneration") == bm["metadata"]["generation"]:
        return bm
    return None


def test_a_wrong_digest_pin_is_refused_at_admission(
        kubectl: Kubectl, operator: OperatorProcess, namespace: str, artifact_base: str) -> None:
    """The webhook reads metadata.json of http(s) artifacts (the servers check the same pin
    before they unpickle anything: tests/server)."""
    doc = yaml.safe_load(batmodel(artifact_base, "1.1.0", "2.0.0", promoted="2.0.0"))
    doc["spec"]["versions"][0]["digest"] = "sha256:" + "0" * 64
    done = kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), namespace=namespace, check=False)
    assert done.returncode != 0
    assert "the digest pin sha256:000" in done.stderr and "does not match its metadata.json" in done.stderr
    assert "digest" not in get(kubectl, namespace, "bm", "crime")["spec"]["versions"][0]


def test_a_bad_version_never_takes_traffic_from_a_good_one(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess, namespace: str,
        artifact_base: str) -> None:
    """An artifact the webhook cannot read (here: missing) is allowed with a warning; its
    servers refuse it."""
    expected = "404"
    done = kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.2.0", "2.0.0", promoted="2.0.0"),
                   namespace=namespace)
    assert "Warning: 1.2.0 (" in done.stderr and "metadata.json could not be read" in done.stderr
    bm = wait_for(lambda: degraded(kubectl, namespace), timeout=60, what="Degraded")
    v1 = bm["status"]["versions"][0]
    assert v1["phase"] == "Degraded" and v1["reason"] in ("CrashLoopBackOff", "ContainerFailed")
    assert expected in v1["message"].lower() and "2 pods of 1.1.0 keep serving" in v1["message"]
    assert expected in condition(bm, "Degraded")["message"].lower()
    assert condition(bm, "Ready")["status"] == "False"
    # The 1.1.0 pods still answer behind the crime-v1 Service.
    assert served_versions(control_plane, namespace, "crime-v1") == {"1.1.0"}
    assert predict(control_plane, namespace, "crime-v1", KENT).status_code == 200
    events = kubectl("get", "events", "--field-selector", "involvedObject.kind=BatModel,type=Warning",
                     namespace=namespace).stdout
    assert "is Degraded" in events
    # Back to the good version: Ready again.
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.1.0", "2.0.0", promoted="2.0.0"),
            namespace=namespace)
    wait_ready(kubectl, namespace, operator)


def test_drift_is_repaired(control_plane: ControlPlane, kubectl: Kubectl,
                           operator: OperatorProcess, namespace: str) -> None:
    old_uid = get(kubectl, namespace, "deployment", "crime-v2")["metadata"]["uid"]
    kubectl("delete", "deployment", "crime-v2", "--wait=false", namespace=namespace)
    kubectl("delete", "service", "crime", "--wait=false", namespace=namespace)
    kubectl("scale", "deployment", "crime-v1", "--replicas=4", namespace=namespace)
    kubectl("label", "service", "crime-v1", "--overwrite", "batcomputer.io/major=9", namespace=namespace)

    def repaired() -> bool:
        dep = get(kubectl, namespace, "deployment", "crime-v2")
        v1 = get(kubectl, namespace, "deployment", "crime-v1")
        svc = get(kubectl, namespace, "service", "crime-v1")
        stable = get(kubectl, namespace, "service", "crime")
        return (dep["metadata"]["uid"] != old_uid and v1["spec"]["replicas"] == 2
                and svc["metadata"]["labels"]["batcomputer.io/major"] == "1"
                and stable["spec"]["selector"]["batcomputer.io/major"] == "2")
    wait_for(repaired, timeout=30, what="children restored", interval=0.5)
    wait_ready(kubectl, namespace, operator)


def test_operator_restart_mid_change_converges(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess, namespace: str,
        artifact_base: str) -> None:
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.0.0", "2.0.0", promoted="2.0.0"),
            namespace=namespace)
    wait_for(lambda: get(kubectl, namespace, "deployment", "crime-v1")["metadata"]["labels"]
             ["batcomputer.io/version"] == "1.0.0", what="operator to start the change")
    operator.kill()
    kubectl("patch", "bm", "crime", "--type=merge", "-p",
            '{"spec":{"replicas":1}}', namespace=namespace)
    operator.start()
    bm = wait_ready(kubectl, namespace, operator)
    assert [v["version"] for v in bm["status"]["versions"]] == ["1.0.0", "2.0.0"]
    deployments = get(kubectl, namespace, "deployments", "-l", "batcomputer.io/model=crime")["items"]
    assert sorted(d["metadata"]["name"] for d in deployments) == ["crime-v1", "crime-v2"]
    assert all(d["spec"]["replicas"] == 1 for d in deployments)
    services = get(kubectl, namespace, "services", "-l", "batcomputer.io/model=crime")["items"]
    assert sorted(s["metadata"]["name"] for s in services) == ["crime", "crime-v1", "crime-v2"]


def test_spec_the_schema_cannot_judge_is_reported_in_status(
        kubectl: Kubectl, operator: OperatorProcess, namespace: str, artifact_base: str) -> None:
    doc = yaml.safe_load(batmodel(artifact_base, "1.0.0", "2.0.0", promoted="2.0.0", replicas=1))
    doc["spec"]["resources"] = {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi"}}
    kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), namespace=namespace)
    bm = wait_for(lambda: degraded(kubectl, namespace), timeout=30, what="Degraded")
    cond = condition(bm, "Degraded")
    assert cond["reason"] == "Rejected" and "must be less than or equal to memory limit" in cond["message"]
    assert operator.alive()
    assert get(kubectl, namespace, "deployment", "crime-v1")["spec"]["template"]["spec"]["containers"][0][
        "resources"] != doc["spec"]["resources"]
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "1.0.0", "2.0.0", promoted="2.0.0",
                                               replicas=1), namespace=namespace)
    wait_ready(kubectl, namespace, operator)


def test_removing_a_major_retires_it(control_plane: ControlPlane, kubectl: Kubectl,
                                     operator: OperatorProcess, namespace: str,
                                     artifact_base: str) -> None:
    kubectl("apply", "-f", "-", input=batmodel(artifact_base, "2.0.0", replicas=1), namespace=namespace)
    wait_ready(kubectl, namespace, operator)
    wait_for(lambda: kubectl("get", "deployment", "crime-v1", check=False,
                             namespace=namespace).returncode != 0, what="crime-v1 deleted")
    assert kubectl("get", "service", "crime-v1", check=False, namespace=namespace).returncode != 0
    assert served_versions(control_plane, namespace, "crime") == {"2.0.0"}


def test_pvc_artifacts_are_mounted_and_served(
        control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess, namespace: str,
        model_registry: Any) -> None:
    """pvc://claim/path: the operator mounts the claim read-only and points the server
    at the path inside it (the podlet maps the mount onto the PersistentVolume's folder)."""
    read_only_claim(kubectl, namespace, "model-store", model_registry)
    doc = {"apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel", "metadata": {"name": "stored"},
           "spec": {"replicas": 1, "versions": [{"version": "1.0.0",
                                                 "artifact": "pvc://model-store/crime/1.0.0"}]}}
    kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), namespace=namespace)

    def ready() -> bool:
        bm = get(kubectl, namespace, "bm", "stored")
        return condition(bm, "Ready").get("status") == "True"
    wait_for(ready, timeout=90, what="BatModel stored Ready")
    pod_spec = get(kubectl, namespace, "deployment", "stored-v1")["spec"]["template"]["spec"]
    assert {"name": "model-model-store", "persistentVolumeClaim": {
        "claimName": "model-store", "readOnly": True}} in pod_spec["volumes"]
    env = {e["name"]: e["value"] for e in pod_spec["containers"][0]["env"]}
    assert env["BATCOMPUTER_ARTIFACT"] == "/models/model-store/crime/1.0.0/"
    assert served_versions(control_plane, namespace, "stored-v1") == {"1.0.0"}
    assert predict(control_plane, namespace, "stored-v1", KENT).status_code == 200
    kubectl("delete", "bm", "stored", namespace=namespace)


def test_deleting_the_batmodel_leaves_nothing_behind(kubectl: Kubectl, operator: OperatorProcess,
                                                     namespace: str) -> None:
    kubectl("delete", "bm", "crime", namespace=namespace)

    def gone() -> bool:
        left = get(kubectl, namespace, "deployments,services,replicasets,pods",
                   "-l", "batcomputer.io/model=crime")["items"]
        return not left
    wait_for(gone, timeout=60, what="children garbage-collected")
    assert operator.alive()


