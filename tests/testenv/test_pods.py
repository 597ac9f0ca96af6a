"""What the podlet makes of a pod before any runtime runs it: env, security, limits."""

from __future__ import annotations

from typing import Any

import pytest

from batcomputer.testenv.pods import (
    ConfigError,
    Mount,
    container_spec,
    expand,
    non_root_violation,
    port_number,
    resolve_env,
)


def pod(container: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "web-1", "namespace": "ns", "uid": "u-1",
                         "labels": {"app": "web"}},
            "spec": {"containers": [container], **spec}}


def no_objects(kind: str, name: str, key: str) -> str | None:
    return None


def test_expand_replaces_known_names_keeps_unknown_and_unescapes_dollars() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)-$(C)-$$(A)", env) == "1-two-$(C)-$(A)"


def test_env_resolves_field_refs_in_order_and_expands_earlier_names() -> None:
    container = {"name": "c", "env": [
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "URL", "value": "http://$(POD_IP):8081/healthz"},
        {"name": "EARLY", "value": "$(LATE)"},
        {"name": "LATE", "value": "x"},
        {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}
    env = resolve_env(pod(container), container, pod_ip="127.200.0.2", node="n", lookup=no_objects,
                      base={"KUBERNETES_SERVICE_HOST": "127.0.0.1"})
    assert env == {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "POD_IP": "127.200.0.2",
                   "URL": "http://127.200.0.2:8081/healthz", "EARLY": "$(LATE)", "LATE": "x",
                   "APP": "web", "NAME": "web-1"}


def test_env_from_configmaps_and_secrets_and_resource_limits() -> None:
    objects = {("ConfigMap", "cm", "mode"): "fast", ("Secret", "s", "password"): "hunter2",
               ("ConfigMap", "all", ""): "A=1\nB=2"}
    container = {"name": "c", "resources": {"limits": {"memory": "512Mi", "cpu": "250m"}},
                 "envFrom": [{"configMapRef": {"name": "all"}, "prefix": "X_"}],
                 "env": [{"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
                         {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}},
                         {"name": "MEM", "valueFrom": {"resourceFieldRef": {
                             "resource": "limits.memory", "divisor": "1Mi"}}},
                         {"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]}
    env = resolve_env(pod(container), container, pod_ip="p", node="n",
                      lookup=lambda kind, name, key: objects.get((kind, name, key)))
    assert env == {"X_A": "1", "X_B": "2", "MODE": "fast", "PW": "hunter2", "MEM": "512", "CPU": "1"}


def test_a_missing_key_is_a_config_error_unless_optional() -> None:
    ref = {"name": "cm", "key": "k"}
    container = {"name": "c", "env": [{"name": "K", "valueFrom": {"configMapKeyRef": ref}}]}
    with pytest.raises(ConfigError, match="couldn't find key k in ConfigMap ns/cm"):
        resolve_env(pod(container), container, pod_ip="p", node="n", lookup=no_objects)
    ref["optional"] = True  # type: ignore[assignment]
    assert resolve_env(pod(container), container, pod_ip="p", node="n", lookup=no_objects) == {}


def test_container_security_context_overrides_the_pods_and_limits_become_numbers() -> None:
    container = {"name": "server", "image": "img:1", "args": ["serve", "--port=$(PORT)"],
                 "resources": {"limits": {"memory": "512Mi", "cpu": "500m"}},
                 "securityContext": {"runAsUser": 20002, "readOnlyRootFilesystem": True,
                                     "allowPrivilegeEscalation": False,
                                     "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}
    p = pod(container, terminationGracePeriodSeconds=5,
            securityContext={"runAsUser": 10001, "runAsGroup": 10001, "runAsNonRoot": True,
                             "fsGroup": 3000, "seccompProfile": {"type": "RuntimeDefault"}})
    spec = container_spec(p, container, {"PORT": "8080"}, [Mount("/host/tmp", "/tmp")])
    assert (spec.run_as_user, spec.run_as_group, spec.supplemental_groups) == (20002, 10001, [3000])
    assert spec.run_as_non_root and spec.read_only_root and spec.no_new_privileges
    assert (spec.cap_drop, spec.cap_add) == (["ALL"], ["NET_BIND_SERVICE"])
    assert spec.memory_limit == 512 * 1024 * 1024 and spec.cpu_limit == 0.5
    assert spec.command is None and spec.args == ["serve", "--port=8080"]
    assert spec.grace_seconds == 5 and spec.mounts == [Mount("/host/tmp", "/tmp")]


def test_privileged_without_escalation_is_refused() -> None:
    container = {"name": "c", "securityContext": {"privileged": True, "allowPrivilegeEscalation": False}}
    with pytest.raises(ConfigError, match="allowPrivilegeEscalation"):
        container_spec(pod(container), container, {}, [])


@pytest.mark.parametrize(("ctx", "image_user", "problem"), [
    ({}, "", None),
    ({"runAsNonRoot": True}, "10001:10001", None),
    ({"runAsNonRoot": True}, "", "image will run as root"),
    ({"runAsNonRoot": True}, "root", "image will run as root"),
    ({"runAsNonRoot": True}, "app", "non-numeric user (app)"),
    ({"runAsNonRoot": True, "runAsUser": 10001}, "", None),
    ({"runAsNonRoot": True, "runAsUser": 0}, "10001", "runAsUser breaks non-root policy"),
])
def test_run_as_non_root_is_checked_against_the_image_user(ctx: dict[str, Any], image_user: str,
                                                           problem: str | None) -> None:
    container = {"name": "c", "securityContext": ctx}
    found = non_root_violation(container_spec(pod(container), container, {}, []), image_user)
    assert (found is None) if problem is None else (found is not None and problem in found)


def test_named_ports_resolve_and_unknown_names_are_config_errors() -> None:
    container = {"ports": [{"name": "http", "containerPort": 8080}]}
    assert port_number(container, "http") == 8080 and port_number(container, 81) == 81
    with pytest.raises(ConfigError):
        port_number(container, "metrics")
