"""The operator's memory of BatModels: the newest version seen wins, whatever order the
watch and the answers to its own writes arrive in."""

from __future__ import annotations

from typing import Any

from batcomputer.operator.k8s import Newest, compare_versions


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
