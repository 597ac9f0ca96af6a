"""Drift: only the fields the operator sets count, named lists match by name."""

from __future__ import annotations

from batcomputer.operator.drift import differences

DESIRED = {"spec": {"replicas": 2, "selector": {"app": "x"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"}],
                    "containers": [{"name": "server", "args": ["serve"],
                                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}]}}


def live(**spec: object) -> dict[str, object]:
    base = {"replicas": 2, "selector": {"app": "x"}, "clusterIP": "10.96.0.9",
            "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}],
            "containers": [{"name": "server", "args": ["serve"], "image": "i",
                            "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"},
                                    {"name": "EXTRA", "value": "added by someone"}]}]}
    base.update(spec)
    return {"spec": base, "status": {"readyReplicas": 2}}


def test_defaults_and_fields_of_others_are_not_drift() -> None:
    assert differences(DESIRED, live()) == []


def test_changed_removed_and_reordered_fields_are_named() -> None:
    assert differences(DESIRED, live(replicas=0)) == ["spec.replicas"]
    assert differences(DESIRED, live(selector={"app": "y"})) == ["spec.selector.app"]
    assert differences(DESIRED, live(selector={})) == ["spec.selector.app"]
    assert differences(DESIRED, live(ports=[])) == ["spec.ports[http]"]
    changed = live()
    changed["spec"]["containers"][0]["env"][1]["value"] = "one"  # type: ignore[index]
    assert differences(DESIRED, changed) == ["spec.containers[server].env[A].value"]
    assert differences(DESIRED, live(containers=[{"name": "server", "args": ["serve", "-x"]}])) == [
        "spec.containers[server].args", "spec.containers[server].env"]


def test_numbers_and_their_strings_are_the_same_value() -> None:
    assert differences({"port": "8080"}, {"port": 8080}) == []
    assert differences({"flag": True}, {"flag": "True"}) == ["flag"]
