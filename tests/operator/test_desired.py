"""Desired state is plain dicts: tested with dicts, no cluster."""

from __future__ import annotations

import dataclasses

import semver

from batcomputer.operator import desired, labels, spec
from batcomputer.operator.settings import Settings
from batcomputer.operator.spec import ModelSpec, VersionSpec

V1 = VersionSpec(semver.Version.parse("1.4.2"), "https://m.example/crime/1.4.2/",
                 "sha256:" + "b" * 64)
V2 = VersionSpec(semver.Version.parse("2.0.0"), "pvc://model-store/crime/2.0.0")
MODEL = ModelSpec(name="crime", namespace="prod", uid="uid-1", generation=4, versions=(V1, V2),
                  promoted=V2, replicas=3)
SETTINGS = Settings(server_image="reg/server:1", server_workers=3)


def env(container: dict) -> dict[str, str]:  # type: ignore[type-arg]
    return {e["name"]: e["value"] for e in container["env"]}


def test_deployment_is_named_by_major_and_owned_by_the_batmodel() -> None:
    dep = desired.deployment(MODEL, V1, SETTINGS)
    meta = dep["metadata"]
    assert meta["name"] == "crime-v1" and meta["namespace"] == "prod"
    assert meta["ownerReferences"] == [{"apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel",
                                        "name": "crime", "uid": "uid-1", "controller": True,
                                        "blockOwnerDeletion": True}]
    assert meta["labels"] == {
        "app.kubernetes.io/managed-by": "batcomputer-operator", "app.kubernetes.io/part-of": "batcomputer",
        "app.kubernetes.io/name": "crime", "app.kubernetes.io/instance": "crime-v1",
        "app.kubernetes.io/version": "1.4.2", "app.kubernetes.io/component": "predictor",
        "batcomputer.io/model": "crime", "batcomputer.io/major": "1", "batcomputer.io/version": "1.4.2"}
    assert dep["spec"]["template"]["metadata"]["labels"] == meta["labels"]


def test_template_hash_names_the_revision() -> None:
    def revision(model: ModelSpec, version: VersionSpec) -> str:
        return str(desired.deployment(model, version, SETTINGS)["spec"]["template"]["metadata"]
                   ["annotations"][labels.TEMPLATE_HASH])
    assert revision(MODEL, V1) == revision(MODEL, V1)
    assert revision(MODEL, V1) != revision(MODEL, VersionSpec(V1.version, V1.artifact, None))


def test_selector_names_only_model_and_major_so_minor_bumps_roll_in_place() -> None:
    a = desired.deployment(MODEL, V1, SETTINGS)
    b = desired.deployment(MODEL, VersionSpec(semver.Version.parse("1.5.0"), V1.artifact), SETTINGS)
    assert a["spec"]["selector"] == b["spec"]["selector"] == {
        "matchLabels": {"batcomputer.io/model": "crime", "batcomputer.io/major": "1"}}
    assert a["metadata"]["name"] == b["metadata"]["name"]


def test_pod_runs_the_server_with_its_artifact_and_probes() -> None:
    dep = desired.deployment(MODEL, V1, SETTINGS)
    pod = dep["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "reg/server:1" and container["args"] == ["serve"]
    assert env(container) == {
        "BATCOMPUTER_ARTIFACT": "https://m.example/crime/1.4.2/", "BATCOMPUTER_VERSION": "1.4.2",
        "BATCOMPUTER_MODEL_NAME": "crime", "BATCOMPUTER_PORT": "8080", "BATCOMPUTER_WORKERS": "3",
        "BATCOMPUTER_CACHE_DIR": "/tmp/artifacts", "BATCOMPUTER_DIGEST": "sha256:" + "b" * 64,
        "BATCOMPUTER_EXPECTED_API": "/etc/batcomputer/api/api.json",
        "BATCOMPUTER_ALLOW_PICKLE": "false"}
    # Pickles only where the admin allows them (always said: the image's default is off).
    trusted = dataclasses.replace(V1, allow_pickle=True)
    (allowing,) = desired.deployment(MODEL, trusted, SETTINGS)["spec"]["template"]["spec"]["containers"]
    assert env(allowing)["BATCOMPUTER_ALLOW_PICKLE"] == "true"
    # The MAJOR's API record is mounted; absent until the MAJOR's first version has served.
    assert {"name": "api", "configMap": {"name": "crime-v1", "optional": True}} in pod["volumes"]
    assert {"name": "api", "mountPath": "/etc/batcomputer/api", "readOnly": True} in container["volumeMounts"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["resources"] == SETTINGS.default_resources
    assert dep["spec"]["replicas"] == 3


def test_rollout_never_drops_below_desired_ready_replicas() -> None:
    strategy = desired.deployment(MODEL, V1, SETTINGS)["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def test_restricted_security_context() -> None:
    pod = desired.deployment(MODEL, V1, SETTINGS)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = pod["containers"][0]["securityContext"]
    assert sc == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                  "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]}}
    assert {"name": "tmp", "mountPath": "/tmp"} in pod["containers"][0]["volumeMounts"]


def test_pvc_artifact_is_mounted_read_only() -> None:
    pod = desired.deployment(MODEL, V2, SETTINGS)["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert env(container)["BATCOMPUTER_ARTIFACT"] == "/models/model-store/crime/2.0.0/"
    assert {"name": "model-model-store",
            "persistentVolumeClaim": {"claimName": "model-store", "readOnly": True}} in pod["volumes"]
    assert {"name": "model-model-store", "mountPath": "/models/model-store",
            "readOnly": True} in container["volumeMounts"]
    assert "BATCOMPUTER_DIGEST" not in env(container)


def test_s3_versions_get_the_store_and_secret_references_only() -> None:
    v3 = VersionSpec(semver.Version.parse("3.0.0"), "s3://model-store/registry/crime/3.0.0/")
    access = spec.S3Access(endpoint="http://minio.storage:9000", region="eu-west-2",
                           credentials_secret="model-store", service_account="models")
    model = dataclasses.replace(MODEL, versions=(V1, V2, v3), s3=access)
    pod = desired.deployment(model, v3, SETTINGS)["spec"]["template"]["spec"]
    variables = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert variables["BATCOMPUTER_ARTIFACT"]["value"] == "s3://model-store/registry/crime/3.0.0/"
    assert variables["BATCOMPUTER_S3_ENDPOINT"]["value"] == "http://minio.storage:9000"
    assert variables["AWS_REGION"]["value"] == "eu-west-2"
    assert variables["AWS_ACCESS_KEY_ID"] == {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {
        "secretKeyRef": {"name": "model-store", "key": "AWS_ACCESS_KEY_ID"}}}
    assert variables["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["key"] == \
        "AWS_SECRET_ACCESS_KEY"
    assert variables["AWS_SESSION_TOKEN"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert pod["serviceAccountName"] == "models"
    assert pod["automountServiceAccountToken"] is False
    # Other schemes get none of it.
    other = desired.deployment(model, V1, SETTINGS)["spec"]["template"]["spec"]
    assert not any(e["name"].startswith(("AWS_", "BATCOMPUTER_S3")) for e in other["containers"][0]["env"])
    assert "serviceAccountName" not in other


def test_resources_from_the_spec_win() -> None:
    model = ModelSpec(**{**MODEL.__dict__, "resources": {"limits": {"memory": "2Gi"}}})
    container = desired.deployment(model, V1, SETTINGS)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"limits": {"memory": "2Gi"}}


def test_services() -> None:
    svc = desired.version_service(MODEL, V1)
    assert svc["metadata"]["name"] == "crime-v1"
    assert svc["spec"]["selector"] == {"batcomputer.io/model": "crime", "batcomputer.io/major": "1"}
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    stable = desired.stable_service(MODEL, V2, "2.0.0")
    assert stable["metadata"]["name"] == "crime"
    assert stable["spec"]["selector"] == {"batcomputer.io/model": "crime", "batcomputer.io/major": "2"}
    assert stable["metadata"]["labels"][labels.MODEL_VERSION] == "2.0.0"
    assert stable["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    # Mid-roll the label says what the pods run, not what the spec asks for.
    assert desired.stable_service(MODEL, V2, "")["metadata"]["labels"][labels.MODEL_VERSION] == ""


def test_every_child_records_the_digest_of_what_was_wanted() -> None:
    first = desired.versioned_children(MODEL, SETTINGS)
    again = desired.versioned_children(MODEL, SETTINGS)
    assert [desired.desired_hash(o) for o in first] == [desired.desired_hash(o) for o in again]
    assert all(desired.desired_hash(o) for o in first)
    more = dataclasses.replace(MODEL, replicas=MODEL.replicas + 1)
    assert desired.desired_hash(desired.deployment(more, V1, SETTINGS)) != desired.desired_hash(first[0])


def test_server_pods_drain_before_they_stop() -> None:
    spec = desired.deployment(MODEL, V1, SETTINGS)["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": desired.DRAIN_SECONDS}}}
    assert spec["terminationGracePeriodSeconds"] > desired.DRAIN_SECONDS + 20  # + gunicorn's graceful 20 s


def test_versioned_children_and_endpoint() -> None:
    names = [(o["kind"], o["metadata"]["name"]) for o in desired.versioned_children(MODEL, SETTINGS)]
    assert names == [("Deployment", "crime-v1"), ("Service", "crime-v1"),
                     ("Deployment", "crime-v2"), ("Service", "crime-v2")]
    assert desired.endpoint(MODEL, "crime-v1", SETTINGS) == "http://crime-v1.prod.svc/api/predict"
    assert (desired.v2_endpoint(MODEL, "crime", SETTINGS)
            == "http://crime.prod.svc/v2/models/crime/infer")


def test_build_metadata_is_in_annotations_and_label_safe_in_labels() -> None:
    model = spec.parse({"metadata": {"name": "crime", "namespace": "ns", "uid": "u"},
                        "spec": {"versions": [{"version": "2.1.3+build.5", "artifact": "http://a/"}]}})
    settings = Settings()
    version = model.versions[0]
    for obj in (desired.deployment(model, version, settings),
                desired.canary_deployment(model, version, settings, 1),
                desired.version_service(model, version)):
        assert labels.version_of(obj) == "2.1.3+build.5"
        assert all("+" not in value for value in obj["metadata"]["labels"].values())
    pod = desired.deployment(model, version, settings)["spec"]["template"]
    assert labels.version_of(pod) == "2.1.3+build.5"
    assert pod["metadata"]["labels"][labels.MODEL_VERSION] == "2.1.3_build.5"
    selector = desired.canary_deployment(model, version, settings, 1)["spec"]["selector"]
    assert selector["matchLabels"][labels.MODEL_VERSION] == "2.1.3_build.5"


def test_autoscaled_versions_get_an_autoscaler_and_no_replicas_of_their_own() -> None:
    scaled = dataclasses.replace(MODEL, autoscaling=spec.Autoscaling(2, 8, 70), replicas=2)
    dep = desired.deployment(scaled, V1, SETTINGS)
    assert "replicas" not in dep["spec"]
    assert desired.deployment(MODEL, V1, SETTINGS)["spec"]["replicas"] == 3
    hpa = desired.autoscaler(scaled, V1)
    assert hpa is not None and hpa["metadata"]["name"] == "crime-v1"
    assert hpa["spec"] == {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "crime-v1"},
        "minReplicas": 2, "maxReplicas": 8,
        "metrics": [{"type": "Resource", "resource": {
            "name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]}
    assert hpa["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert desired.autoscaler(MODEL, V1) is None


def test_a_disruption_budget_protects_each_version_that_may_run_several_pods() -> None:
    pdb = desired.disruption_budget(MODEL, V2)
    assert pdb is not None and pdb["metadata"]["name"] == "crime-v2"
    assert pdb["spec"] == {"maxUnavailable": 1,
                           "selector": {"matchLabels": {"batcomputer.io/model": "crime",
                                                        "batcomputer.io/major": "2"}}}
    single = dataclasses.replace(MODEL, replicas=1)
    assert desired.disruption_budget(single, V1) is None  # it would block every drain
    scaled = dataclasses.replace(single, autoscaling=spec.Autoscaling(1, 4))
    assert desired.disruption_budget(scaled, V1) is not None
    assert desired.disruption_budget(dataclasses.replace(MODEL, max_unavailable=None), V1) is None
    assert desired.disruption_budget(dataclasses.replace(MODEL, max_unavailable="50%"),
                                     V1)["spec"]["maxUnavailable"] == "50%"  # type: ignore[index]


def test_pods_spread_over_nodes_and_zones_without_refusing_to_schedule() -> None:
    template = desired.deployment(MODEL, V1, SETTINGS)["spec"]["template"]["spec"]
    spread = template["topologySpreadConstraints"]
    assert [c["topologyKey"] for c in spread] == ["kubernetes.io/hostname",
                                                  "topology.kubernetes.io/zone"]
    assert all(c["whenUnsatisfiable"] == "ScheduleAnyway" and c["maxSkew"] == 1 for c in spread)
    assert spread[0]["labelSelector"] == {"matchLabels": labels.pod_selector("crime", 1)}


def test_a_network_policy_lets_in_only_the_named_peers_and_the_operator() -> None:
    assert desired.network_policy(MODEL, SETTINGS) is None
    guarded = dataclasses.replace(MODEL, network_peers=(
        spec.Peer(namespace_labels={"team": "apps"}, pod_labels={"role": "web"}),
        spec.Peer(pod_labels={"role": "batch"})))
    policy = desired.network_policy(guarded, Settings(operator_namespace="ops"))
    assert policy is not None and policy["metadata"]["name"] == "crime"
    assert policy["spec"] == {
        "podSelector": {"matchLabels": {"batcomputer.io/model": "crime"}},
        "policyTypes": ["Ingress"],
        "ingress": [{"from": [
            {"namespaceSelector": {"matchLabels": {"team": "apps"}},
             "podSelector": {"matchLabels": {"role": "web"}}},
            {"podSelector": {"matchLabels": {"role": "batch"}}},
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ops"}},
             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "batcomputer-operator"}}}],
            "ports": [{"port": 8080, "protocol": "TCP"}]}]}
