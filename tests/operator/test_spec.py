from __future__ import annotations

from typing import Any

import pytest

from batcomputer.operator import spec


def body(**spec_fields: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {"versions": [{"version": "1.4.2", "artifact": "https://m.example/crime/1.4.2/"},
                                           {"version": "2.0.0", "artifact": "pvc://store/crime/2.0.0"}]}
    fields.update(spec_fields)
    return {"metadata": {"name": "crime", "namespace": "ns", "uid": "u1", "generation": 3},
            "spec": fields}


def test_parses_versions_sorted_by_major_and_defaults() -> None:
    model = spec.parse(body(versions=[{"version": "2.0.0", "artifact": "http://a/"},
                                      {"version": "1.0.0", "artifact": "http://b/",
                                       "digest": "sha256:" + "a" * 64, "allowPickle": True}]),
                       default_replicas=3)
    assert [str(v.version) for v in model.versions] == ["1.0.0", "2.0.0"]
    assert str(model.promoted.version) == "2.0.0"  # highest, when not given
    assert model.replicas == 3 and model.generation == 3 and model.uid == "u1"
    assert model.versions[0].digest == "sha256:" + "a" * 64
    assert (model.versions[0].allow_pickle, model.versions[1].allow_pickle) == (True, False)
    assert model.by_major(2) is model.versions[1] and model.by_major(7) is None


def test_pvc_artifacts() -> None:
    model = spec.parse(body(promoted="1.4.2"))
    assert model.versions[0].pvc is None
    assert model.versions[1].pvc == spec.PvcArtifact(claim="store", path="crime/2.0.0")
    assert str(model.promoted.version) == "1.4.2"


def test_s3_artifacts_and_access() -> None:
    model = spec.parse(body(
        versions=[{"version": "1.0.0", "artifact": "s3://model-store/registry/crime/1.0.0/"}],
        s3={"endpoint": "http://minio.storage:9000/", "region": "eu-west-2",
            "credentialsSecret": "model-store", "serviceAccountName": "models"}))
    assert model.versions[0].in_s3 and model.versions[0].pvc is None
    assert model.s3 == spec.S3Access(endpoint="http://minio.storage:9000", region="eu-west-2",
                                     credentials_secret="model-store", service_account="models")
    assert spec.parse(body()).s3 == spec.S3Access()


@pytest.mark.parametrize(("change", "problem"), [
    ({"versions": [{"version": "1.0.0", "artifact": "s3://A_bucket/x/"}]},
     "'A_bucket' is not a valid bucket name"),
    ({"versions": [{"version": "1.0.0", "artifact": "s3://models/a/../b/"}]}, "without '..'"),
    ({"s3": {"endpoint": "minio:9000"}}, "spec.s3.endpoint must be an http(s)://HOST[:PORT] URL"),
    ({"s3": {"endpoint": "http://minio:9000/path"}}, "spec.s3.endpoint must be"),
    ({"s3": {"credentialsSecret": "Not A Name"}}, "spec.s3.credentialsSecret must be the name"),
    ({"s3": {"region": "EU WEST"}}, "spec.s3.region must be a region name"),
    ({"s3": "yes"}, "spec.s3 must be an object"),
])
def test_s3_problems_are_reported(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(spec.SpecError) as error:
        spec.parse(body(**change))
    assert any(problem in p for p in error.value.problems), error.value.problems


@pytest.mark.parametrize(("change", "problem"), [
    ({"versions": []}, "at least one version"),
    ({"versions": [{"version": "1.0", "artifact": "http://a/"}]}, "not a semantic version"),
    ({"versions": [{"version": "1.0.0-rc.01", "artifact": "http://a/"}]}, "not a semantic version"),
    ({"versions": [{"version": "1.0.0+", "artifact": "http://a/"}]}, "not a semantic version"),
    ({"versions": [{"version": "1.0.0-" + "a" * 130, "artifact": "http://a/"}]}, "at most 128"),
    ({"versions": [{"version": "1.0.0", "artifact": "ftp://a/"}]}, "must start with one of http://"),
    ({"versions": [{"version": "1.0.0", "artifact": "pvc://Bad_Claim/x"}]},
     "not a valid PersistentVolumeClaim"),
    ({"versions": [{"version": "1.0.0", "artifact": "pvc://c/../etc"}]}, "may not contain '..'"),
    ({"versions": [{"version": "1.0.0", "artifact": "http://a/", "digest": "md5:x"}]}, "sha256:<64 hex"),
    ({"versions": [{"version": "1.0.0", "artifact": "http://a/"},
                   {"version": "1.2.0", "artifact": "http://a/"}]}, "MAJOR 1 is already listed"),
    ({"promoted": "3.0.0"}, "spec.promoted '3.0.0' is not one of the listed versions"),
    ({"versions": [{"version": "1.0.0", "artifact": "http://a/", "allowPickle": "yes"}]},
     "allowPickle must be true or false"),
    ({"replicas": -1}, "spec.replicas"),
    ({"replicas": True}, "spec.replicas"),
    ({"resources": "lots"}, "spec.resources"),
])
def test_invalid_specs_are_refused_with_every_problem(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(spec.SpecError) as info:
        spec.parse(body(**change))
    assert problem in str(info.value)


def test_bad_name_is_reported() -> None:
    bad = body()
    bad["metadata"]["name"] = "9-lives"
    with pytest.raises(spec.SpecError, match="DNS-1035"):
        spec.parse(bad)


def test_all_problems_are_collected() -> None:
    with pytest.raises(spec.SpecError) as info:
        spec.parse(body(versions=[{"version": "x", "artifact": "http://a/"},
                                  {"version": "1.0.0", "artifact": "s3://b/"}], replicas=500))
    assert len(info.value.problems) == 3


def test_names_fit_every_service_they_derive_exactly_up_to_63() -> None:
    def body(name: str, version: str) -> dict[str, object]:
        return {"metadata": {"name": name, "namespace": "ns"},
                "spec": {"versions": [{"version": version, "artifact": "http://r/x/"}]}}
    assert spec.parse(body("a" * 60, "1.0.0")).name == "a" * 60  # a-...-v1 is 63
    with pytest.raises(spec.SpecError, match="longer than 63 characters"):
        spec.parse(body("a" * 59, "10000.0.0"))  # a-...-v10000 would be 66
    with pytest.raises(spec.SpecError, match="at most 60 characters"):
        spec.parse(body("a" * 61, "1.0.0"))


@pytest.mark.parametrize("text", [
    "1.0.0-rc.1", "2.1.3+build.5", "1.0.0-alpha-a.b-c-somethinglong+build.1-aef.1-its-okay",
    "1.2.3----RC-SNAPSHOT.12.9.1--.12+788", "1.0.0-x-"])
def test_every_semver_is_a_version_of_its_major(text: str) -> None:
    model = spec.parse({"metadata": {"name": "crime"},
                        "spec": {"versions": [{"version": text, "artifact": "http://a/"}],
                                 "promoted": text}})
    assert str(model.promoted.version) == text
    assert model.versions[0].major == int(text.split(".")[0])


def test_a_huge_major_must_leave_room_for_the_service_name() -> None:
    major = "99999999999999999999999"
    version = f"{major}.999999999999999999.99999999999999999"
    ok = spec.parse({"metadata": {"name": "a" * (63 - 2 - len(major))},
                     "spec": {"versions": [{"version": version, "artifact": "http://a/"}]}})
    assert ok.versions[0].major == int(major)
    with pytest.raises(spec.SpecError, match="longer than 63"):
        spec.parse({"metadata": {"name": "a" * (64 - 2 - len(major))},
                    "spec": {"versions": [{"version": version, "artifact": "http://a/"}]}})


def test_canary_names_must_fit_too() -> None:
    body = {"metadata": {"name": "a" * 60},
            "spec": {"versions": [{"version": "1.0.0", "artifact": "http://a/"}]}}
    spec.parse(body)
    with pytest.raises(spec.SpecError, match="canary Deployment"):
        spec.parse({**body, "spec": {**body["spec"], "rollout": {"strategy": "Canary"}}})
    spec.parse({"metadata": {"name": "a" * 53},
                "spec": {**body["spec"], "rollout": {"strategy": "Canary"}}})


def test_autoscaling_disruption_budget_and_network_policy() -> None:
    model = spec.parse(body(autoscaling={"minReplicas": 2, "maxReplicas": 6},
                            disruptionBudget={"maxUnavailable": "25%"},
                            networkPolicy={"from": [
                                {"namespaceSelector": {"matchLabels": {"team": "apps"}}},
                                {"podSelector": {"matchLabels": {"role": "web"}}}]}))
    assert model.autoscaling == spec.Autoscaling(min_replicas=2, max_replicas=6, target_cpu=80)
    assert model.replicas == 2 and model.most_replicas == 6  # canary steps count from min
    assert model.max_unavailable == "25%"
    assert model.network_peers == (spec.Peer(namespace_labels={"team": "apps"}),
                                   spec.Peer(pod_labels={"role": "web"}))
    plain = spec.parse(body(replicas=3))
    assert (plain.autoscaling, plain.max_unavailable, plain.network_peers) == (None, 1, None)
    assert spec.parse(body(disruptionBudget={"enabled": False})).max_unavailable is None
    assert spec.parse(body(networkPolicy={"from": []})).network_peers == ()  # nobody but the operator


@pytest.mark.parametrize(("change", "problem"), [
    ({"autoscaling": {"minReplicas": 1}}, "spec.autoscaling.maxReplicas must be an integer"),
    ({"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}, "minReplicas (5) is above maxReplicas (2)"),
    ({"autoscaling": {"maxReplicas": 2, "targetCPUUtilization": 0}}, "targetCPUUtilization must be"),
    ({"disruptionBudget": {"maxUnavailable": 0}}, "maxUnavailable must be an integer of at least 1"),
    ({"disruptionBudget": {"maxUnavailable": "0%"}}, "maxUnavailable must be"),
    ({"networkPolicy": {"from": [{}]}}, "from[0] must have a namespaceSelector, a podSelector or both"),
    ({"networkPolicy": {"from": [{"podSelector": {"matchExpressions": []}}]}},
     "from[0].podSelector must be {matchLabels: {label: value}}"),
])
def test_invalid_scaling_budgets_and_policies_are_refused(change: dict[str, Any], problem: str) -> None:
    with pytest.raises(spec.SpecError) as info:
        spec.parse(body(**change))
    assert problem in str(info.value)
