"""The local control plane is a real one: authn/authz, CRD schemas, controllers,
scheduling, garbage collection and service-account tokens all behave as in a cluster."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from testkit import wait_for

from batcomputer.cli import project_version
from batcomputer.testenv.cluster import KWOK_NODE, KWOK_TAINT, PODLET_NODE, ControlPlane
from batcomputer.testenv.network import local_address

pytestmark = pytest.mark.controlplane


SERVER_IMAGE = f"batcomputer-server:{project_version()}"


def make_namespace(plane: ControlPlane) -> str:
    name = f"t-{secrets.token_hex(3)}"
    made = plane.request("POST", "/api/v1/namespaces", json={"metadata": {"name": name}})
    assert made.status_code == 201, made.text
    return name


@pytest.fixture
def ns(control_plane: ControlPlane) -> str:
    return make_namespace(control_plane)


@pytest.fixture(scope="module")
def process_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """A second local cluster whose podlet runs pods as local processes, beside the
    session's (podman) one: two clusters on one machine must not collide."""
    with ControlPlane(tmp_path_factory.mktemp("process-plane"), runtime="process",
                      tie_to_parent=True) as plane:
        yield plane


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


def create(cp: ControlPlane, ns: str, name: str, container: dict[str, Any],
           **pod_spec: Any) -> None:
    body = deployment(name, node_type="podlet", container=container, replicas=1)
    body["spec"]["template"]["spec"].update(pod_spec)
    made = cp.request("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", json=body)
    assert made.status_code == 201, made.text


def endpoint(cp: ControlPlane, ns: str, service: str) -> str | None:
    slices = cp.get(f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
                    f"?labelSelector=kubernetes.io/service-name={service}").json()["items"]
    for item in slices:
        for ep in item.get("endpoints") or []:
            if ep["conditions"].get("ready"):
                return f"http://{local_address(ep['addresses'][0])}:{item['ports'][0]['port']}/"
    return None


def container_status(cp: ControlPlane, ns: str, app: str) -> dict[str, Any] | None:
    for pod in pods(cp, ns, app):
        for status in pod.get("status", {}).get("containerStatuses") or []:
            return dict(status)
    return None


def pod_log(cp: ControlPlane, ns: str, app: str) -> str:
    """The container's output, where the podlet keeps it (there is no kubelet log API)."""
    return "".join(path.read_text(errors="replace")
                   for path in (cp.dir / "pods").glob(f"{ns}_{app}-*/container.log"))


def serve_and_crash(cp: ControlPlane, ns: str, command: list[str], image: str) -> None:
    """A web server and a crashing container: Ready from the real readiness probe, a
    Service endpoint that answers, the crash reported with its message, and a deleted
    pod's process gone."""
    server = {"name": "http", "image": image, "ports": [{"containerPort": 8080, "name": "http"}],
              "command": [*command, "-m", "http.server", "8080", "--bind", "$(POD_IP)"],
              "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
              "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "periodSeconds": 1}}
    crashing = {"name": "crash", "image": image, "terminationMessagePolicy": "FallbackToLogsOnError",
                "command": [*command, "-c", "raise SystemExit('artifact not found')"],
                "readinessProbe": {"httpGet": {"path": "/", "port": 8080}}}
    create(cp, ns, "http", server)
    create(cp, ns, "crash", crashing)
    service = {"metadata": {"name": "http"},
               "spec": {"selector": {"app": "http"}, "ports": [{"port": 80, "targetPort": "http"}]}}
    assert cp.request("POST", f"/api/v1/namespaces/{ns}/services", json=service).status_code == 201

    pod = wait_for(lambda: next((p for p in pods(cp, ns, "http") if ready(p)), None),
                   timeout=60, what="http pod Ready")
    assert pod["spec"]["nodeName"] == PODLET_NODE and pod["status"]["podIP"].startswith("10.")
    url = wait_for(lambda: endpoint(cp, ns, "http"), what="a ready endpoint in the EndpointSlice")
    assert requests.get(url, timeout=5).status_code == 200

    status = wait_for(lambda: (s := container_status(cp, ns, "crash"))
                      and s.get("lastState", {}).get("terminated") and s, timeout=60,
                      what="crashing container to be reported")
    assert status["ready"] is False
    assert status["lastState"]["terminated"]["exitCode"] == 1
    assert "artifact not found" in status["lastState"]["terminated"]["message"]

    # Deleting the Deployment stops the container and the pod goes away for good.
    cp.request("DELETE", f"/apis/apps/v1/namespaces/{ns}/deployments/http",
               json={"propagationPolicy": "Foreground"})
    wait_for(lambda: not pods(cp, ns, "http"), timeout=60, what="http pods deleted")
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)


def test_podlet_runs_pods_as_processes_with_real_readiness(process_plane: ControlPlane) -> None:
    node = process_plane.get(f"/api/v1/nodes/{PODLET_NODE}").json()
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("process://")
    serve_and_crash(process_plane, make_namespace(process_plane), [sys.executable], "python")


def test_two_clusters_on_one_machine_get_different_pod_networks(
        control_plane: ControlPlane, process_plane: ControlPlane) -> None:
    cidrs = {plane.get(f"/api/v1/nodes/{PODLET_NODE}").json()["spec"]["podCIDR"]
             for plane in (control_plane, process_plane)}
    assert len(cidrs) == 2 and all(cidr.startswith("10.") for cidr in cidrs)


def test_podlet_runs_pods_as_containers_from_their_images(control_plane: ControlPlane, ns: str) -> None:
    node = control_plane.get(f"/api/v1/nodes/{PODLET_NODE}").json()
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("podman://")
    serve_and_crash(control_plane, ns, ["python"], SERVER_IMAGE)


IDENTITY = """
import json, os, ssl, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount/"
ctx = ssl.create_default_context(cafile=sa + "ca.crt")
url = "https://%s:%s/apis/authentication.k8s.io/v1/selfsubjectreviews" % (
    os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
body = json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode()
request = urllib.request.Request(url, body, {"Authorization": "Bearer " + open(sa + "token").read(),
                                             "Content-Type": "application/json"})
who = json.load(urllib.request.urlopen(request, context=ctx))["status"]["userInfo"]["username"]
print("user", who, "namespace", open(sa + "namespace").read(), flush=True)
print("uid", os.getuid(), "gid", os.getgid(), "groups", sorted(os.getgroups()), flush=True)
for path in ("/written-to-root", "/tmp/written-to-emptydir", "/config/written-to-configmap"):
    try:
        open(path, "w").close(); print("wrote", path, flush=True)
    except OSError as exc:
        print("refused", path, exc.strerror, flush=True)
status = open("/proc/self/status").read()
print([line for line in status.splitlines() if line.startswith(("NoNewPrivs", "CapEff"))], flush=True)
print("config", open("/config/mode").read(), "env", os.environ.get("MODE"), flush=True)
"""


def test_containers_get_the_pods_identity_security_context_and_volumes(
        control_plane: ControlPlane, ns: str) -> None:
    """From inside the container: the ServiceAccount token works against the API server,
    the user, read-only root, dropped capabilities and volumes are the pod's."""
    cp = control_plane
    assert cp.request("POST", f"/api/v1/namespaces/{ns}/configmaps",
                      json={"metadata": {"name": "settings"}, "data": {"mode": "fast"}}).status_code == 201
    checker = {"name": "check", "image": SERVER_IMAGE, "command": ["sh", "-c"],
               "args": [f"python -c '{IDENTITY}' && sleep 3600"],
               "env": [{"name": "MODE",
                        "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}}],
               "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                   "capabilities": {"drop": ["ALL"]}},
               "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                                {"name": "config", "mountPath": "/config"}]}
    create(cp, ns, "check", checker,
           securityContext={"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
           volumes=[{"name": "tmp", "emptyDir": {}},
                    {"name": "config", "configMap": {"name": "settings"}}])
    out = wait_for(lambda: "config" in (text := pod_log(cp, ns, "check")) and text, timeout=60,
                   what="the checker's output")
    assert f"user system:serviceaccount:{ns}:default namespace {ns}" in out
    assert "uid 10001 gid 10001 groups [10001]" in out
    assert "refused /written-to-root Read-only file system" in out
    assert "wrote /tmp/written-to-emptydir" in out
    assert "refused /config/written-to-configmap Read-only file system" in out
    assert r"'NoNewPrivs:\t1'" in out and r"'CapEff:\t0000000000000000'" in out
    assert "config fast env fast" in out


def test_what_a_kubelet_refuses_is_reported_as_a_kubelet_would(control_plane: ControlPlane,
                                                               ns: str) -> None:
    cp = control_plane
    create(cp, ns, "missing", {"name": "m", "image": "batcomputer-missing:0.0.0"})
    create(cp, ns, "root", {"name": "r", "image": SERVER_IMAGE,
                            "securityContext": {"runAsNonRoot": True, "runAsUser": 0}})
    create(cp, ns, "says-why", {"name": "s", "image": SERVER_IMAGE, "command": [
        "sh", "-c", "echo 'log noise'; echo 'Refusing: disk on fire' > /dev/termination-log; exit 2"]})
    create(cp, ns, "unlive", {"name": "u", "image": SERVER_IMAGE, "command": ["sleep", "3600"],
                              "livenessProbe": {"tcpSocket": {"port": 9}, "periodSeconds": 1,
                                                "failureThreshold": 2}},
           terminationGracePeriodSeconds=1)

    def waiting(app: str) -> dict[str, Any] | None:
        status = container_status(cp, ns, app)
        return status["state"].get("waiting") if status else None

    missing = wait_for(lambda: waiting("missing"), what="missing image reported")
    assert missing["reason"] == "ErrImagePull" and "not present" in missing["message"]
    assert pods(cp, ns, "missing")[0]["status"]["phase"] == "Pending"
    refused = wait_for(lambda: waiting("root"), what="runAsNonRoot refusal reported")
    assert refused["reason"] == "CreateContainerConfigError"
    assert "runAsUser breaks non-root policy" in refused["message"]
    said = wait_for(lambda: (s := container_status(cp, ns, "says-why")) and s.get("lastState") and s,
                    what="the termination message")
    assert said["lastState"]["terminated"]["message"] == "Refusing: disk on fire"
    restarted = wait_for(lambda: (s := container_status(cp, ns, "unlive")) and s["restartCount"] >= 1 and s,
                         timeout=60, what="a restart after liveness failures")
    assert "Liveness probe failed" in restarted["lastState"]["terminated"]["message"]


def test_a_node_that_is_not_registered_yet_is_not_ready(control_plane: ControlPlane) -> None:
    """Start-up waits on nodes that may not exist yet: a 404 is 'not yet', not a crash."""
    assert control_plane._node_ready("not-registered-yet") is False
    assert control_plane._node_ready(PODLET_NODE) is True
