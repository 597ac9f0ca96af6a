"""reconcile() against an in-memory API (unit level; the real API is in tests/e2e)."""

from __future__ import annotations

import copy
from typing import Any

from batcomputer import apicontract
from batcomputer.operator import desired, labels
from batcomputer.operator.reconcile import reconcile
from batcomputer.operator.settings import Settings

S = Settings()


class FakeApi:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], dict[str, Any]] = {}
        self.status: dict[str, Any] | None = None
        self.deleted: list[str] = []
        self.patches: list[dict[str, Any]] = []
        self.applies = 0
        self.pod_list: list[dict[str, Any]] = []
        self.infos: dict[str, dict[str, Any]] = {}
        self.info_calls = 0
        self.handed_over: list[str] = []

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.applies += 1
        key = (obj["kind"], obj["metadata"]["name"])
        stored = copy.deepcopy(obj)
        old = self.objects.get(key)
        gen = (old or {}).get("metadata", {}).get("generation", 0)
        stored["metadata"].update(uid=f"uid-{key[1]}", generation=gen + (old != obj),
                                  resourceVersion=str(self.applies))
        self.objects[key] = stored
        return stored

    def children(self, namespace: str, model: str, owner_uid: str) -> dict[tuple[str, str], dict[str, Any]]:
        return dict(self.objects)

    def pods(self, namespace: str, model: str) -> list[dict[str, Any]]:
        return self.pod_list

    def may_ask(self, key: str) -> bool:
        return True

    def hand_over_replicas(self, deployment: dict[str, Any]) -> None:
        self.handed_over.append(deployment["metadata"]["name"])

    def pod_info(self, pod: dict[str, Any]) -> dict[str, Any] | None:
        self.info_calls += 1
        return self.infos.get(pod["metadata"]["name"])

    def delete(self, obj: dict[str, Any], orphan: bool = False) -> None:
        self.deleted.append(obj["metadata"]["name"])
        del self.objects[(obj["kind"], obj["metadata"]["name"])]

    def patch_batmodel(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        self.patches.append(patch)
        return {}

    def pod_metrics(self, pod: dict[str, Any]) -> str | None:
        return None

    def patch_status(self, namespace: str, name: str, status: dict[str, Any]) -> None:
        self.status = status


def body(*versions: str, promoted: str | None = None, generation: int = 1) -> dict[str, Any]:
    spec: dict[str, Any] = {"versions": [{"version": v, "artifact": f"http://r/{v}/"} for v in versions]}
    if promoted:
        spec["promoted"] = promoted
    return {"metadata": {"name": "crime", "namespace": "ns", "uid": "u", "generation": generation},
            "spec": spec}


def test_creates_children_and_reports_status() -> None:
    api = FakeApi()
    outcome = reconcile(body("1.0.0"), api, S)
    assert sorted(api.objects) == [("Deployment", "crime-v1"), ("Service", "crime"), ("Service", "crime-v1")]
    assert api.status is not None and api.status["versions"][0]["phase"] == "Progressing"
    # One Event for everything created (each Event is a write for the API server).
    [created] = [e for e in outcome.events if e.reason == "Created"]
    assert created.message == ("Created Deployment crime-v1 for 1.0.0; Service crime-v1 for "
                               "1.0.0; stable Service crime -> MAJOR 1 (1.0.0)")


def test_versions_that_change_phase_together_are_one_event() -> None:
    outcome = reconcile(body("1.0.0", "2.0.0"), FakeApi(), S)
    [progressing] = [e for e in outcome.events if e.reason == "Progressing"]
    assert progressing.type == "Normal"
    assert progressing.message.startswith("1.0.0 is Progressing: ")
    assert "; 2.0.0 is Progressing: " in progressing.message
    assert [e.reason for e in outcome.events] == ["Created", "Progressing"]


def test_new_major_adds_and_removed_major_retires() -> None:
    api = FakeApi()
    reconcile(body("1.0.0"), api, S)
    reconcile(body("1.0.0", "2.0.0"), api, S)
    assert ("Deployment", "crime-v2") in api.objects
    outcome = reconcile(body("2.0.0"), api, S)
    assert sorted(api.deleted) == ["crime-v1", "crime-v1"]
    assert any(e.reason == "Deleted" and "crime-v1" in e.message for e in outcome.events)
    assert api.objects[("Service", "crime")]["spec"]["selector"]["batcomputer.io/major"] == "2"


def test_minor_bump_updates_the_same_deployment() -> None:
    api = FakeApi()
    reconcile(body("1.0.0"), api, S)
    outcome = reconcile(body("1.1.0"), api, S)
    dep = api.objects[("Deployment", "crime-v1")]
    assert dep["metadata"]["labels"]["batcomputer.io/version"] == "1.1.0"
    assert any(e.message == "Rolling Deployment crime-v1 from 1.0.0 to 1.1.0" for e in outcome.events)
    assert not api.deleted


def test_deleted_child_is_restored_and_nothing_else_is_written() -> None:
    api = FakeApi()
    reconcile(body("1.0.0"), api, S)
    del api.objects[("Deployment", "crime-v1")]
    before = api.applies
    outcome = reconcile(body("1.0.0"), api, S)
    assert ("Deployment", "crime-v1") in api.objects
    assert api.applies == before + 1  # only the missing Deployment
    assert [e.message for e in outcome.events if e.reason == "Created"] == [
        "Created Deployment crime-v1 for 1.0.0"]


def test_promotion_waits_until_the_promoted_version_is_ready() -> None:
    api = FakeApi()
    reconcile(body("1.0.0"), api, S)
    reconcile(body("1.0.0", "2.0.0", promoted="2.0.0"), api, S)
    # Nothing is Ready in the fake, so the stable Service keeps routing to v1 (whose pods
    # are not ready either: nothing serves yet).
    assert api.objects[("Service", "crime")]["spec"]["selector"]["batcomputer.io/major"] == "1"
    assert api.status is not None and api.status["serving"] == ""


def test_invalid_spec_changes_nothing_and_says_why() -> None:
    api = FakeApi()
    reconcile(body("1.0.0"), api, S)
    snapshot = copy.deepcopy(api.objects)
    bad = body("1.0.0")
    bad["spec"]["versions"][0]["artifact"] = "gopher://x/"
    outcome = reconcile(bad, api, S)
    assert api.objects == snapshot
    assert api.status is not None
    assert api.status["conditions"][-1]["reason"] == "InvalidSpec"
    assert outcome.events[0].type == "Warning" and "gopher://x/" in outcome.events[0].message


def test_objects_the_api_server_rejects_are_reported_not_retried_blindly() -> None:
    from batcomputer.operator.errors import Rejected

    class Refusing(FakeApi):
        def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
            if obj["kind"] == "Deployment" and obj["metadata"]["name"] == "crime-v2":
                raise Rejected("Deployment crime-v2: requests must be <= limits")
            return super().apply(obj)

    api = Refusing()
    reconcile(body("1.0.0"), api, S)
    outcome = reconcile(body("1.0.0", "2.0.0"), api, S)
    assert ("Deployment", "crime-v1") in api.objects and not api.deleted
    assert api.status is not None
    degraded = next(c for c in api.status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "Rejected" and "requests must be <= limits" in degraded["message"]
    assert outcome.events[-1].type == "Warning"


def test_an_unchanged_model_costs_no_writes() -> None:
    api = FakeApi()
    reconcile(body("1.0.0", "2.0.0"), api, S)
    applies, status = api.applies, api.status
    again = body("1.0.0", "2.0.0")
    again["status"] = status
    api.status = None
    outcome = reconcile(again, api, S)
    assert api.applies == applies and outcome.events == [] and api.status is None


def test_a_hand_edit_is_repaired_with_one_warning_naming_the_field() -> None:
    api = FakeApi()
    reconcile(body("1.0.0"), api, S)
    api.objects[("Deployment", "crime-v1")]["spec"]["replicas"] = 0
    api.objects[("Service", "crime")]["spec"]["selector"]["batcomputer.io/major"] = "9"
    outcome = reconcile(body("1.0.0"), api, S)
    assert api.objects[("Deployment", "crime-v1")]["spec"]["replicas"] == 1
    assert api.objects[("Service", "crime")]["spec"]["selector"]["batcomputer.io/major"] == "1"
    repaired = [e for e in outcome.events if e.reason == "Repaired"]
    assert [(e.type, e.message) for e in repaired] == [
        ("Warning", "Restored Deployment crime-v1: spec.replicas changed by hand"),
        ("Warning", "Restored Service crime: spec.selector.batcomputer.io/major changed by hand")]
    assert [e for e in reconcile(body("1.0.0"), api, S).events if e.reason == "Repaired"] == []


def test_a_spec_change_is_an_update_not_a_repair() -> None:
    api = FakeApi()
    reconcile(body("1.0.0"), api, S)
    more = body("1.0.0", generation=2)
    more["spec"]["replicas"] = 2
    outcome = reconcile(more, api, S)
    assert api.objects[("Deployment", "crime-v1")]["spec"]["replicas"] == 2
    assert not [e for e in outcome.events if e.reason == "Repaired"]


def test_a_value_the_api_server_normalises_is_not_reported_as_a_hand_edit() -> None:
    class Normalising(FakeApi):
        """Stores CPU as the API server does and, like SSA, changes nothing on a no-op."""

        def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
            key = (obj["kind"], obj["metadata"]["name"])
            old = self.objects.get(key)
            if old is not None and old["metadata"]["annotations"] == obj["metadata"]["annotations"]:
                return old
            stored = super().apply(obj)
            if obj["kind"] == "Deployment":
                stored["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "500m"
            return stored

    api = Normalising()
    half = body("1.0.0")
    half["spec"]["resources"] = {"requests": {"cpu": "0.5"}}
    reconcile(half, api, S)
    outcome = reconcile(half, api, S)
    assert not [e for e in outcome.events if e.reason == "Repaired"]


API = {"inputs": [{"name": "crime", "type": "categorical", "values": ["a", "b"]}], "outputs": ["caught"]}


def serving_pod(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {labels.MAJOR: "1"},
                         "annotations": {labels.MODEL_VERSION: version}},
            "status": {"podIP": "10.0.0.5", "conditions": [{"type": "Ready", "status": "True"}]}}


def test_a_majors_api_is_learned_from_its_serving_pods_once_and_kept() -> None:
    api = FakeApi()
    served = body("1.0.0")
    served["status"] = {"history": [{"target": "v1", "version": "1.0.0", "since": "t"}]}
    api.pod_list = [serving_pod("other", "0.9.0"), serving_pod("p1", "1.0.0")]
    api.infos["p1"] = {"version": "1.0.0", "api": API, "api_fingerprint": apicontract.fingerprint(API)}
    reconcile(served, api, S)
    record = desired.recorded_api(api.objects[("ConfigMap", "crime-v1")])
    assert record == {"fingerprint": apicontract.fingerprint(API), "api": API, "version": "1.0.0",
                      "major": 1}
    assert api.info_calls == 1  # only the pod of the serving version was asked
    # Kept as it is from now on: the next version of MAJOR 1 must keep this API.
    api.pod_list, api.infos = [], {}
    reconcile(body("1.1.0"), api, S)
    assert desired.recorded_api(api.objects[("ConfigMap", "crime-v1")]) == record
    assert api.info_calls == 1
    # Retiring the MAJOR retires its record.
    reconcile(body("2.0.0"), api, S)
    assert ("ConfigMap", "crime-v1") not in api.objects


def test_no_api_is_learned_from_a_pod_that_says_something_else() -> None:
    api = FakeApi()
    served = body("1.0.0")
    served["status"] = {"history": [{"target": "v1", "version": "1.0.0", "since": "t"}]}
    api.pod_list = [serving_pod("p1", "1.0.0")]
    api.infos["p1"] = {"version": "1.0.0", "api": API, "api_fingerprint": "sha256:0"}
    reconcile(served, api, S)
    assert ("ConfigMap", "crime-v1") not in api.objects


def test_autoscaling_budgets_and_policies_come_and_go_with_the_spec() -> None:
    api = FakeApi()
    plain = body("1.0.0")
    plain["spec"]["replicas"] = 3
    reconcile(plain, api, S)
    assert ("PodDisruptionBudget", "crime-v1") in api.objects
    # The operator owned the replicas: they are handed to the autoscaler, not dropped.
    api.objects[("Deployment", "crime-v1")]["metadata"]["managedFields"] = [
        {"manager": S.field_manager, "operation": "Apply",
         "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    scaled = body("1.0.0")
    scaled["spec"].update(autoscaling={"minReplicas": 2, "maxReplicas": 5},
                          networkPolicy={"from": [{"podSelector": {"matchLabels": {"a": "b"}}}]})
    reconcile(scaled, api, S)
    assert api.handed_over == ["crime-v1"]
    assert "replicas" not in api.objects[("Deployment", "crime-v1")]["spec"]
    assert {("HorizontalPodAutoscaler", "crime-v1"), ("PodDisruptionBudget", "crime-v1"),
            ("NetworkPolicy", "crime")} <= set(api.objects)
    # Dropped from the spec: deleted.
    reconcile(plain, api, S)
    assert sorted(api.deleted) == ["crime", "crime-v1"]
    assert api.objects[("Deployment", "crime-v1")]["spec"]["replicas"] == 3
    assert api.handed_over == ["crime-v1"]
