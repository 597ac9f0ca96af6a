"""The local control plane is a real one: authn/authz, CRD schemas, controllers,
scheduling, garbage collection and service-account tokens all behave as in a cluster."""

from __future__ import annotations

import secrets
import sys
from typing import Any

import pytest
import requests
from testkit import wait_for

from batcomputer.testenv.cluster import KWOK_NODE, KWOK_TAINT, PROCESS_NODE, ControlPlane
from batcomputer.testenv.podlet import local_address

pytestmark = pytest.mark.controlplane


@pytest.fixture
def ns(control_plane: ControlPlane) -> str:
    name = f"t-{secrets.token_hex(3)}"
    made = control_plane.request("POST", "/api/v1/namespaces",
                                 json={"metadata": {"name": name}})
    assert made.status_code == 201, made.text
    return name


def deployment(name: str, *, node_type: str, container: dict[str, Any], replicas: int = 2) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeSelector": {"type": node_type}, "containers": [container],
                            "terminationGracePeriodSeconds": 2}
    if node_type == "kwok":
        spec["tolerations"] = [{**KWOK_TAINT, "operator": "Equal"}]
    return {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}}


def pods(cp: ControlPlane, ns: str, app: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cp.get(
        f"/api/v1/namespaces/{ns}/pods?labelSelector=app={app}").json()["items"]
    return items


def ready(pod: dict[str, Any]) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in pod.get("status", {}).get("conditions", []))


def test_anonymous_and_unknown_tokens_are_refused(control_plane: ControlPlane) -> None:
    assert control_plane.get("/api/v1/namespaces", token=None).status_code == 403
    assert control_plane.get("/api/v1/namespaces", token="not-a-token").status_code == 401
    assert control_plane.get("/api/v1/namespaces").status_code == 200


def test_crd_becomes_established_and_its_schema_rejects_bad_objects(
        control_plane: ControlPlane, ns: str) -> None:
    group = f"{ns}.example.com"
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": f"widgets.{group}"},
           "spec": {"group": group, "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                    "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                        "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                            "type": "object", "required": ["size"],
                            "properties": {"size": {"type": "integer", "minimum": 1}}}}}}}]}}
    made = control_plane.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions",
                                 json=crd)
    assert made.status_code == 201, made.text
    wait_for(lambda: any(
        c["type"] == "Established" and c["status"] == "True"
        for c in control_plane.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                   f"widgets.{group}").json().get("status", {}).get("conditions", [])),
        what="CRD Established")
    path = f"/apis/{group}/v1/namespaces/{ns}/widgets"
    bad = control_plane.request("POST", path, json={"apiVersion": f"{group}/v1", "kind": "Widget",
                                                    "metadata": {"name": "w"}, "spec": {"size": 0}})
    assert bad.status_code == 422
    assert "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1" in bad.text
    good = control_plane.request("POST", path, json={"apiVersion": f"{group}/v1", "kind": "Widget",
                                                     "metadata": {"name": "w"}, "spec": {"size": 3}})
    assert good.status_code == 201, good.text


def test_deployment_pods_are_scheduled_and_become_ready_on_kwok(control_plane: ControlPlane,
                                                                ns: str) -> None:
    made = control_plane.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments",
                                 json=deployment("web", node_type="kwok",
                                                 container={"name": "web", "image": "nginx"}))
    assert made.status_code == 201, made.text
    replicasets = wait_for(lambda: control_plane.get(
        f"/apis/apps/v1/namespaces/{ns}/replicasets").json()["items"], what="a ReplicaSet")
    assert replicasets[0]["metadata"]["ownerReferences"][0]["name"] == "web"
    running = wait_for(lambda: [p for p in pods(control_plane, ns, "web")
                                if p["status"].get("phase") == "Running" and ready(p)]
                       if len(pods(control_plane, ns, "web")) == 2 else None,
                       what="2 Running and Ready pods")
    assert all(p["spec"]["nodeName"] == KWOK_NODE for p in running)
    events = control_plane.get(f"/api/v1/namespaces/{ns}/events").json()["items"]
    assert any(e["reason"] == "Scheduled" and e.get("reportingComponent") == "default-scheduler"
               for e in events)
    wait_for(lambda: control_plane.get(f"/apis/apps/v1/namespaces/{ns}/deployments/web")
             .json()["status"].get("readyReplicas") == 2, what="Deployment readyReplicas 2")


def test_deleting_an_owner_garbage_collects_its_dependents(control_plane: ControlPlane,
                                                           ns: str) -> None:
    owner = control_plane.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                                  json={"metadata": {"name": "owner"}}).json()
    ref = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
           "uid": owner["metadata"]["uid"]}
    for i in range(3):
        dep = control_plane.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                                    json={"metadata": {"name": f"dep-{i}", "ownerReferences": [ref]}})
        assert dep.status_code == 201
    control_plane.request("DELETE", f"/api/v1/namespaces/{ns}/configmaps/owner")
    wait_for(lambda: not [c for c in control_plane.get(f"/api/v1/namespaces/{ns}/configmaps")
                          .json()["items"] if c["metadata"]["name"].startswith("dep-")],
             timeout=60, what="dependents garbage-collected")


def test_service_account_token_is_limited_to_its_rbac(control_plane: ControlPlane, ns: str) -> None:
    cp = control_plane
    assert cp.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts",
                      json={"metadata": {"name": "reader"}}).status_code == 201
    role = {"metadata": {"name": "cm-reader"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]}]}
    assert cp.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
                      json=role).status_code == 201
    binding = {"metadata": {"name": "reader"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
               "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": ns}]}
    assert cp.request("POST", f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
                      json=binding).status_code == 201
    issued = cp.request("POST", f"/api/v1/namespaces/{ns}/serviceaccounts/reader/token",
                        json={"spec": {"expirationSeconds": 600}})
    assert issued.status_code == 201, issued.text
    token = issued.json()["status"]["token"]
    who = cp.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", token=token,
                     json={"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
    assert who.json()["status"]["userInfo"]["username"] == f"system:serviceaccount:{ns}:reader"
    assert cp.get(f"/api/v1/namespaces/{ns}/configmaps", token=token).status_code == 200
    assert cp.get(f"/api/v1/namespaces/{ns}/secrets", token=token).status_code == 403
    assert cp.get("/api/v1/namespaces/default/configmaps", token=token).status_code == 403
    assert cp.request("POST", f"/api/v1/namespaces/{ns}/configmaps", token=token,
                      json={"metadata": {"name": "x"}}).status_code == 403


def test_podlet_runs_pods_as_processes_with_real_readiness(control_plane: ControlPlane,
                                                            ns: str) -> None:
    """On the process node, a pod is a real process on its own loopback IP; its Ready
    condition comes from its readiness probe and Service endpoints reach it."""
    cp = control_plane
    server = {"name": "http", "image": "python", "ports": [{"containerPort": 8080, "name": "http"}],
              "command": [sys.executable, "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
              "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
              "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}
    crashing = {"name": "crash", "image": "python",
                "command": [sys.executable, "-c", "raise SystemExit('artifact not found')"],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}
    for name, container in (("http", server), ("crash", crashing)):
        made = cp.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments",
                          json=deployment(name, node_type="process", container=container, replicas=1))
        assert made.status_code == 201, made.text
    service = {"metadata": {"name": "http"},
               "spec": {"selector": {"app": "http"}, "ports": [{"port": 80, "targetPort": "http"}]}}
    assert cp.request("POST", f"/api/v1/namespaces/{ns}/services", json=service).status_code == 201

    pod = wait_for(lambda: next((p for p in pods(cp, ns, "http") if ready(p)), None),
                   what="http pod Ready")
    assert pod["spec"]["nodeName"] == PROCESS_NODE and pod["status"]["podIP"].startswith("10.245.")

    def endpoint() -> str | None:
        slices = cp.get(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
                        "?labelSelector=kubernetes.io/service-name=http").json()["items"]
        for item in slices:
            for ep in item.get("endpoints") or []:
                if ep["conditions"].get("ready"):
                    return f"http://{local_address(ep['addresses'][0])}:{item['ports'][0]['port']}/"
        return None

    url = wait_for(endpoint, what="a ready endpoint in the Service's EndpointSlice")
    assert requests.get(url, timeout=5).status_code == 200

    crashed = wait_for(lambda: next(
        (p for p in pods(cp, ns, "crash")
         if p["status"].get("containerStatuses", [{}])[0].get("lastState", {}).get("terminated")),
        None), what="crashing container to be reported")
    status = crashed["status"]["containerStatuses"][0]
    assert not ready(crashed) and status["ready"] is False
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert "artifact not found" in status["lastState"]["terminated"]["message"]

    # Deleting the Deployment stops the process and the pod goes away for good.
    cp.request("DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments/http",
               json={"propagationPolicy": "Foreground"})
    wait_for(lambda: not pods(cp, ns, "http"), timeout=60, what="http pods deleted")
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)
