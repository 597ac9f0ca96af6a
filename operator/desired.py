"""PURE: the objects a BatModel should own, as plain dicts ready for server-side apply."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Final

from batcomputer.operator import labels
from batcomputer.operator.settings import Settings
from batcomputer.operator.spec import CANARY_SUFFIX, ModelSpec, VersionSpec

SERVER_PORT: Final = 8080
SERVICE_PORT: Final = 80
RUN_AS: Final = 10001
MODEL_MOUNT: Final = "/models"
DRAIN_SECONDS: Final = 5
"""A terminating server pod keeps serving this long before it is stopped, so clients and
proxies that still send to it (until they see the endpoint go) are answered."""
GRACE_SECONDS: Final = 30
"""The drain, then gunicorn's graceful shutdown (20 s) of requests in flight."""
API_MOUNT: Final = "/etc/batcomputer/api"
API_KEY: Final = "api.json"
"""Where each server pod finds its MAJOR's API record (`api_record`)."""


def child_name(model: str, major: int) -> str:
    return f"{model}-v{major}"


def endpoint(model: ModelSpec, service: str, settings: Settings) -> str:
    return f"http://{service}.{model.namespace}.{settings.cluster_domain}/api/predict"


def v2_endpoint(model: ModelSpec, service: str, settings: Settings) -> str:
    """The Open Inference Protocol URL of a Service: the model's name, no version (the
    Service of a MAJOR serves its MINOR and PATCH versions one after another)."""
    return (f"http://{service}.{model.namespace}.{settings.cluster_domain}"
            f"/v2/models/{model.name}/infer")


def owner_reference(model: ModelSpec) -> dict[str, Any]:
    return {"apiVersion": labels.API_VERSION, "kind": labels.KIND, "name": model.name,
            "uid": model.uid, "controller": True, "blockOwnerDeletion": True}


def _metadata(model: ModelSpec, name: str, object_labels: dict[str, str],
              version: str | None = None) -> dict[str, Any]:
    out = {"name": name, "namespace": model.namespace, "labels": object_labels,
           "ownerReferences": [owner_reference(model)]}
    if version is not None:
        out["annotations"] = labels.version_annotation(version)
    return out


def artifact_location(version: VersionSpec) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    """What the server is told to load, and the volumes/mounts that make it reachable.
    ``pvc://claim/path`` mounts the claim read-only at /models/<claim>."""
    pvc = version.pvc
    if pvc is None:
        return version.artifact, [], []
    volume = f"model-{pvc.claim}"[:63].rstrip("-.")
    mount = f"{MODEL_MOUNT}/{pvc.claim}"
    return (f"{mount}/{pvc.path}".rstrip("/") + "/",
            [{"name": volume, "persistentVolumeClaim": {"claimName": pvc.claim, "readOnly": True}}],
            [{"name": volume, "mountPath": mount, "readOnly": True}])


AWS_KEYS: Final = (("AWS_ACCESS_KEY_ID", False), ("AWS_SECRET_ACCESS_KEY", False),
                   ("AWS_SESSION_TOKEN", True))
"""The keys read from spec.s3.credentialsSecret, and whether each is optional."""


def s3_env(model: ModelSpec) -> list[dict[str, Any]]:
    """Where the store is, and credentials by reference to the Secret (never its values)."""
    access = model.s3
    env: list[dict[str, Any]] = []
    if access.endpoint:
        env.append({"name": "BATCOMPUTER_S3_ENDPOINT", "value": access.endpoint})
    if access.region:
        env.append({"name": "AWS_REGION", "value": access.region})
    if access.credentials_secret:
        env += [{"name": key, "valueFrom": {"secretKeyRef": {
                    "name": access.credentials_secret, "key": key,
                    **({"optional": True} if optional else {})}}}
                for key, optional in AWS_KEYS]
    return env


def deployment(model: ModelSpec, version: VersionSpec, settings: Settings,
               paused: bool = False) -> dict[str, Any]:
    name = child_name(model.name, version.major)
    pod_labels = labels.for_version(model.name, version.major, str(version.version))
    artifact, volumes, mounts = artifact_location(version)
    env = [{"name": "BATCOMPUTER_ARTIFACT", "value": artifact},
           {"name": "BATCOMPUTER_VERSION", "value": str(version.version)},
           {"name": "BATCOMPUTER_MODEL_NAME", "value": model.name},
           {"name": "BATCOMPUTER_PORT", "value": str(SERVER_PORT)},
           {"name": "BATCOMPUTER_WORKERS", "value": str(settings.server_workers)},
           {"name": "BATCOMPUTER_CACHE_DIR", "value": "/tmp/artifacts"},
           # The API this MAJOR serves (see api_record): a version with another API
           # refuses to serve, so a roll to it stalls while the old pods keep serving.
           {"name": "BATCOMPUTER_EXPECTED_API", "value": f"{API_MOUNT}/{API_KEY}"},
           # Unpickling runs code from the file: only where the admin said so.
           {"name": "BATCOMPUTER_ALLOW_PICKLE", "value": str(version.allow_pickle).lower()}]
    if version.digest:
        env.append({"name": "BATCOMPUTER_DIGEST", "value": version.digest})
    if version.in_s3:
        env += s3_env(model)
    container = {
        "name": "server",
        "image": settings.server_image,
        "imagePullPolicy": settings.image_pull_policy,
        "args": ["serve"],
        "ports": [{"name": "http", "containerPort": SERVER_PORT, "protocol": "TCP"}],
        "env": env,
        "resources": model.resources or settings.default_resources,
        # The server loads and verifies the artifact before it listens: give it time
        # to start, then check liveness, and only route traffic once /readyz says so.
        "startupProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                         "periodSeconds": 2, "failureThreshold": 90},
        "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http"},
                          "periodSeconds": 10, "timeoutSeconds": 2, "failureThreshold": 3},
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"},
                           "periodSeconds": 2, "timeoutSeconds": 2, "failureThreshold": 2},
        # The server writes why it refuses to start to /dev/termination-log.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "lifecycle": {"preStop": {"sleep": {"seconds": DRAIN_SECONDS}}},
        "securityContext": {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"},
                         {"name": "api", "mountPath": API_MOUNT, "readOnly": True}, *mounts],
    }
    template: dict[str, Any] = {
        "metadata": {"labels": pod_labels,
                     "annotations": {"prometheus.io/scrape": "true",
                                     "prometheus.io/port": str(SERVER_PORT),
                                     "prometheus.io/path": "/metrics",
                                     **labels.version_annotation(str(version.version))}},
        "spec": {
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": GRACE_SECONDS,
            "securityContext": {"runAsNonRoot": True, "runAsUser": RUN_AS,
                                "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [container],
            # Spread a version's pods over nodes and zones where the cluster has several;
            # never refuse to schedule for it.
            "topologySpreadConstraints": [
                {"maxSkew": 1, "topologyKey": key, "whenUnsatisfiable": "ScheduleAnyway",
                 "labelSelector": {"matchLabels": labels.pod_selector(model.name, version.major)},
                 "matchLabelKeys": ["pod-template-hash"]}
                for key in ("kubernetes.io/hostname", "topology.kubernetes.io/zone")],
            "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
                        {"name": "api", "configMap": {"name": name, "optional": True}}, *volumes],
        },
    }
    if version.in_s3 and model.s3.service_account:
        # The cluster's identity webhook (EKS IRSA, pod identity...) gives this account's
        # pods a web-identity token of their own, not the API token kept off above.
        template["spec"]["serviceAccountName"] = model.s3.service_account
    template["metadata"]["annotations"][labels.TEMPLATE_HASH] = _digest(template)
    spec_extra: dict[str, Any] = {"paused": True} if paused else {}
    if model.autoscaling is None:  # else its HorizontalPodAutoscaler owns the replicas
        spec_extra["replicas"] = model.replicas
    return _with_hash({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(model, name, pod_labels, str(version.version)),
        "spec": {
            "selector": {"matchLabels": labels.pod_selector(model.name, version.major)},
            # Never below the desired ready replicas: surge one new pod at a time and
            # retire an old one only when a new one is Ready.
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": settings.progress_deadline_seconds,
            "revisionHistoryLimit": 3,
            "template": template,
            **spec_extra,
        },
    })


def canary_name(model: str, major: int) -> str:
    return f"{child_name(model, major)}{CANARY_SUFFIX}"


def canary_deployment(model: ModelSpec, version: VersionSpec, settings: Settings,
                      replicas: int) -> dict[str, Any]:
    """``<model>-v<M>-canary``: the candidate beside the MAJOR's Deployment. Its pod template
    is exactly the one the MAJOR's Deployment will have after the canary, so that Deployment
    can adopt its pods; its selector adds the version, so the two never claim each other's
    pods while both exist."""
    obj = deployment(model, version, settings)
    name = canary_name(model.name, version.major)
    obj["metadata"]["name"] = name
    obj["metadata"]["labels"] = {**obj["metadata"]["labels"], labels.COMPONENT: "canary"}
    obj["metadata"]["annotations"] = labels.version_annotation(str(version.version))
    obj["spec"]["replicas"] = replicas
    obj["spec"]["selector"] = {"matchLabels": {**labels.pod_selector(model.name, version.major),
                                               labels.MODEL_VERSION:
                                                   labels.label_value(str(version.version))}}
    return _with_hash(obj)


def _digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _with_hash(obj: dict[str, Any]) -> dict[str, Any]:
    """Record a digest of the whole desired object on it: a live child whose digest differs
    was made from another spec (or operator version) and is updated, not "repaired"."""
    obj["metadata"].setdefault("annotations", {})[labels.DESIRED_HASH] = _digest(obj)
    return obj


def desired_hash(obj: dict[str, Any]) -> str | None:
    return (obj.get("metadata", {}).get("annotations") or {}).get(labels.DESIRED_HASH)


def _service(model: ModelSpec, name: str, object_labels: dict[str, str],
             selector: dict[str, str], version: str) -> dict[str, Any]:
    return _with_hash({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(model, name, object_labels, version),
        "spec": {"type": "ClusterIP", "selector": selector,
                 "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http",
                            "protocol": "TCP"}]},
    })


def api_record(model: ModelSpec, major: int, record: Mapping[str, Any]) -> dict[str, Any]:
    """ConfigMap ``<model>-v<major>``: the API that MAJOR's apps depend on, as the version
    that first served it had it ({"fingerprint", "api", "version", "major"}). Every pod of
    the MAJOR gets it as a file (optional: none yet means no expectation)."""
    name = child_name(model.name, major)
    record_labels = {**labels.common(model.name), labels.NAME: model.name, labels.INSTANCE: name,
                     labels.COMPONENT: "api-record", labels.MAJOR: str(major)}
    return _with_hash({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _metadata(model, name, record_labels, str(record.get("version", ""))),
        "data": {API_KEY: json.dumps(dict(record), sort_keys=True)},
    })


def recorded_api(config_map: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The record in a live api_record ConfigMap, or None if absent or unreadable."""
    text = ((config_map or {}).get("data") or {}).get(API_KEY)
    try:
        record = json.loads(text) if text else None
    except ValueError:
        return None
    if not isinstance(record, dict) or not str(record.get("fingerprint", "")).startswith("sha256:"):
        return None
    return record


def version_service(model: ModelSpec, version: VersionSpec) -> dict[str, Any]:
    """``<model>-v<major>``: a fixed API for apps that depend on it."""
    return _service(model, child_name(model.name, version.major),
                    labels.for_version(model.name, version.major, str(version.version)),
                    labels.pod_selector(model.name, version.major), str(version.version))


def stable_service(model: ModelSpec, serving: VersionSpec, serving_version: str) -> dict[str, Any]:
    """``<model>``: routes to the pods of ``serving``'s MAJOR; its version label says which
    version those pods run now (``serving_version``: it lags ``serving`` during a roll, and
    is empty while no pod is ready)."""
    stable_labels = {**labels.common(model.name), labels.NAME: model.name,
                     labels.INSTANCE: model.name, labels.COMPONENT: "stable-endpoint",
                     labels.MAJOR: str(serving.major),
                     labels.MODEL_VERSION: labels.label_value(serving_version)}
    return _service(model, model.name, stable_labels,
                    labels.pod_selector(model.name, serving.major), serving_version)


def autoscaler(model: ModelSpec, version: VersionSpec) -> dict[str, Any] | None:
    """``<model>-v<major>``: the HorizontalPodAutoscaler of a version's Deployment, when
    spec.autoscaling asks for one (the Deployment then has no replicas of its own)."""
    scaling = model.autoscaling
    if scaling is None:
        return None
    name = child_name(model.name, version.major)
    return _with_hash({
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(model, name, _version_labels(model, version, "autoscaler"),
                              str(version.version)),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": scaling.max_replicas,
            "metrics": [{"type": "Resource", "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": scaling.target_cpu}}}],
        },
    })


def disruption_budget(model: ModelSpec, version: VersionSpec) -> dict[str, Any] | None:
    """``<model>-v<major>``: at most ``max_unavailable`` of a version's pods evicted at once
    (node drains), when it may run more than one pod."""
    if model.max_unavailable is None or model.most_replicas < 2:
        return None
    name = child_name(model.name, version.major)
    return _with_hash({
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(model, name, _version_labels(model, version, "disruption-budget"),
                              str(version.version)),
        "spec": {"maxUnavailable": model.max_unavailable,
                 "selector": {"matchLabels": labels.pod_selector(model.name, version.major)}},
    })


def network_policy(model: ModelSpec, settings: Settings) -> dict[str, Any] | None:
    """``<model>``: only the peers spec.networkPolicy names (and the operator, which reads
    the servers' /metrics and /api/info) may reach the model's pods, on the server port."""
    if model.network_peers is None:
        return None
    peers: list[dict[str, Any]] = []
    for peer in model.network_peers:
        entry: dict[str, Any] = {}
        if peer.namespace_labels is not None:
            entry["namespaceSelector"] = {"matchLabels": dict(peer.namespace_labels)}
        if peer.pod_labels is not None:
            entry["podSelector"] = {"matchLabels": dict(peer.pod_labels)}
        peers.append(entry)
    peers.append({"namespaceSelector": {"matchLabels": {
                      "kubernetes.io/metadata.name": settings.operator_namespace}},
                  "podSelector": {"matchLabels": {labels.NAME: "batcomputer-operator"}}})
    policy_labels = {**labels.common(model.name), labels.NAME: model.name,
                     labels.INSTANCE: model.name, labels.COMPONENT: "network-policy"}
    return _with_hash({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _metadata(model, model.name, policy_labels),
        "spec": {"podSelector": {"matchLabels": {labels.MODEL: model.name}},
                 "policyTypes": ["Ingress"],
                 "ingress": [{"from": peers,
                              "ports": [{"port": SERVER_PORT, "protocol": "TCP"}]}]},
    })


def _version_labels(model: ModelSpec, version: VersionSpec, component: str) -> dict[str, str]:
    return {**labels.for_version(model.name, version.major, str(version.version)),
            labels.COMPONENT: component}


def versioned_children(model: ModelSpec, settings: Settings) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for version in model.versions:
        out += [deployment(model, version, settings), version_service(model, version)]
    return out
