"""The operator's memory of BatModels: the newest version seen wins, whatever order the
watch and the answers to its own writes arrive in."""

from __future__ import annotations

from typing import Any

from batcomputer.operator import k8s, reconcile
from batcomputer.operator.k8s import Informer, Newest, compare_versions


def model(version: str, replicas: int = 1, name: str = "crime") -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "resourceVersion": version,
                         "managedFields": [{"manager": "kubectl", "operation": "Update"}]},
            "spec": {"replicas": replicas}}


def test_resource_versions_compare_as_kubernetes_defines_them() -> None:
    assert compare_versions("9", "10") == -1  # as integers, not strings
    assert compare_versions("10", "10") == 0
    assert compare_versions("11", "10") == 1
    for bad in ("", None, "007", "0", "abc", "1e3"):
        assert compare_versions(bad, "10") is None and compare_versions("10", bad) is None


def test_an_older_version_arriving_late_does_not_replace_a_newer_one() -> None:
    newest = Newest()
    newest.put(model("10", 1))
    newest.put(model("12", 3))  # the answer to the operator's own write
    newest.put(model("11", 2))  # the watch's event from before it, arriving after
    held = newest.get("ns", "crime")
    assert held is not None and held["spec"]["replicas"] == 3
    assert "managedFields" not in held["metadata"]


def test_what_is_read_is_a_copy() -> None:
    newest = Newest()
    newest.put(model("10"))
    first = newest.get("ns", "crime")
    assert first is not None
    first["spec"]["replicas"] = 7
    again = newest.get("ns", "crime")
    assert again is not None and again["spec"]["replicas"] == 1


def test_a_deletion_forgets_what_it_deleted_but_not_a_newer_object() -> None:
    newest = Newest()
    newest.put(model("10"))
    newest.drop("ns", "crime", "11")
    assert newest.get("ns", "crime") is None
    newest.put(model("20"))  # made again, and read before the old deletion arrived
    newest.drop("ns", "crime", "15")
    assert newest.get("ns", "crime") is not None
    newest.drop("ns", "crime")
    assert len(newest) == 0


def test_a_version_that_does_not_compare_is_not_kept() -> None:
    newest = Newest()
    newest.put(model("10"))
    newest.put(model("opaque-1"))
    assert newest.get("ns", "crime") is None  # read from the API server instead
    newest.put(model("opaque-2"))
    assert len(newest) == 0


class FakeResource:
    """A LIST endpoint that answers in pages, as the API server does (items without kind)."""

    kind, group_version = "Pod", "v1"

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.items, self.calls = items, []

    def get(self, namespace: str | None, label_selector: str, limit: int, _continue: str | None,
            serializer: Any) -> dict[str, Any]:
        self.calls.append(_continue)
        start = int(_continue or 0)
        rest = self.items[start + limit:]
        return serializer(None, {"items": [dict(i) for i in self.items[start:start + limit]],
                                 "metadata": {"resourceVersion": "99",
                                              "continue": str(start + limit) if rest else None}})


def pod(name: str, model: str) -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": name, "labels": {"batcomputer.io/model": model},
                         "managedFields": [{"operation": "Update"}]}, "status": {"podIP": "10.0.0.1"}}


def test_a_listing_is_read_in_pages_and_kept_by_model_as_json() -> None:
    resource = FakeResource([pod(f"p{i}", "crime" if i % 2 else "other") for i in range(1201)])
    informer = Informer(resource, "Pod", None)
    assert informer._list() == "99"
    assert resource.calls == [None, "500", "1000"] and len(informer) == 1201
    found = informer.items("ns", {"batcomputer.io/model": "crime"})
    assert len(found) == 600 and all(p["kind"] == "Pod" and p["apiVersion"] == "v1" for p in found)
    assert "managedFields" not in found[0]["metadata"]
    assert all(isinstance(v, bytes) for bucket in informer.objects.values() for v in bucket.values())
    found[0]["status"]["podIP"] = "changed"  # a copy
    assert all(p["status"]["podIP"] == "10.0.0.1"
               for p in informer.items("ns", {"batcomputer.io/model": "crime"}))
    informer._store("DELETED", pod("p1", "crime"))
    assert len(informer.items("ns", {"batcomputer.io/model": "crime"})) == 599


def test_caches_keep_what_the_operator_reads() -> None:
    """Which server-side applies own spec.replicas (reconcile.owns_replicas), not the rest
    of the managedFields; a pod's labels, owners and status, not its spec."""
    applied = {"manager": "batcomputer-operator", "operation": "Apply", "fieldsV1": {
        "f:metadata": {"f:labels": {}}, "f:spec": {"f:replicas": {}, "f:template": {}}}}
    deployment = {"kind": "Deployment", "metadata": {"name": "crime-v1", "managedFields": [
        applied, {"manager": "kube-controller-manager", "operation": "Update"},
        {"manager": "helm", "operation": "Apply", "fieldsV1": {"f:spec": {"f:paused": {}}}}]},
        "spec": {"replicas": 2}}
    kept = k8s.trim(deployment)
    assert kept["spec"] == {"replicas": 2}
    assert kept["metadata"]["managedFields"] == [{
        "manager": "batcomputer-operator", "operation": "Apply",
        "fieldsV1": {"f:spec": {"f:replicas": {}}}}]
    assert reconcile.owns_replicas(kept, "batcomputer-operator")
    assert reconcile.owns_replicas(deployment, "batcomputer-operator")
    assert not reconcile.owns_replicas(k8s.trim({**deployment, "metadata": {
        "managedFields": deployment["metadata"]["managedFields"][1:]}}), "batcomputer-operator")
    assert deployment["metadata"]["managedFields"][0] is applied  # the original is untouched
    live_pod = {**pod("p", "crime"), "kind": "Pod", "spec": {"containers": [{"name": "server"}]}}
    kept = k8s.trim(live_pod)
    assert "spec" not in kept and kept["status"] == live_pod["status"]
    assert "managedFields" not in kept["metadata"] and "spec" in live_pod
    assert k8s.trim(kept) == kept
