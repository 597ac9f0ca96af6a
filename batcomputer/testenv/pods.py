"""PURE: what a kubelet makes of a pod's container, before any runtime is involved.

`container_spec` turns a pod and one of its containers into a `ContainerSpec`: the
environment as the kubelet resolves it (``valueFrom`` references, ``$(VAR)``
expansion), the effective security context (pod level overridden by container level),
resource limits as numbers, and the mounts of volumes that the podlet has already made
into folders. Errors a kubelet reports as ``CreateContainerConfigError`` are raised as
`ConfigError` with the kubelet's wording, so the pod status can say the same.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.utils.quantity import parse_quantity as _parse_quantity

VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
SERVICE_ACCOUNT_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"

# (kind, name, key) -> value, or None when the object or key does not exist.
Lookup = Callable[[str, str, str], "str | None"]


class ConfigError(ValueError):
    """The container cannot be created as specified (CreateContainerConfigError)."""


@dataclass(frozen=True)
class Mount:
    source: str
    """A folder (or file) on this machine."""
    target: str
    """Where the container sees it."""
    read_only: bool = False


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    image: str
    command: list[str] | None
    """The container's ``command`` (replaces the image's entrypoint), or None."""
    args: list[str] | None
    """The container's ``args`` (replace the image's CMD), or None."""
    env: dict[str, str]
    mounts: list[Mount] = field(default_factory=list)
    working_dir: str | None = None
    run_as_user: int | None = None
    run_as_group: int | None = None
    supplemental_groups: list[int] = field(default_factory=list)
    run_as_non_root: bool = False
    read_only_root: bool = False
    privileged: bool = False
    no_new_privileges: bool = False
    cap_add: list[str] = field(default_factory=list)
    cap_drop: list[str] = field(default_factory=list)
    seccomp: str = "RuntimeDefault"
    memory_limit: int | None = None
    """Bytes."""
    cpu_limit: float | None = None
    """Cores."""
    grace_seconds: int = 30


def quantity(value: object) -> float:
    """A Kubernetes quantity ("512Mi", "250m", "1e3") as a number."""
    return float(_parse_quantity(str(value)))  # type: ignore[no-untyped-call]


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known names are replaced, unknown ones kept as
    written, and ``$$`` is a literal ``$``."""
    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env[name] if name in env else match.group(0)
    return VAR_REF.sub(sub, text)


def field_value(pod: dict[str, Any], path: str, pod_ip: str, node: str) -> str:
    """A downward-API ``fieldRef``."""
    meta = pod["metadata"]
    simple = {"metadata.name": meta["name"], "metadata.namespace": meta["namespace"],
              "metadata.uid": meta.get("uid", ""), "spec.nodeName": node,
              "spec.serviceAccountName": pod["spec"].get("serviceAccountName", "default"),
              "status.podIP": pod_ip, "status.podIPs": pod_ip, "status.hostIP": "127.0.0.1",
              "status.hostIPs": "127.0.0.1"}
    if path in simple:
        return str(simple[path])
    if match := re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path):
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise ConfigError(f"unsupported fieldRef {path!r}")


def resource_value(container: dict[str, Any], ref: dict[str, Any]) -> str:
    """A ``resourceFieldRef``: the limit (or request) in units of ``divisor``."""
    kind, _, name = ref["resource"].partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None:
        return "0"
    amount = quantity(value) / quantity(ref.get("divisor", "1"))
    return str(int(-(-amount // 1)))  # the kubelet rounds up


def resolve_env(pod: dict[str, Any], container: dict[str, Any], *, pod_ip: str, node: str,
                lookup: Lookup, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The container's environment, in order, as the kubelet builds it: ``base`` (the
    service variables) first, then each ``env`` entry, whose value may refer to earlier
    ones with ``$(NAME)``."""
    env = dict(base or {})
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
            if ref := source.get(key):
                values = lookup(kind, ref["name"], "")
                if values is None:
                    if not ref.get("optional"):
                        raise ConfigError(f'{kind.lower()} "{ref["name"]}" not found')
                    continue
                for line in values.splitlines():
                    name, _, value = line.partition("=")
                    env[prefix + name] = value
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        source = item["valueFrom"]
        if ref := source.get("fieldRef"):
            env[name] = field_value(pod, ref["fieldPath"], pod_ip, node)
        elif ref := source.get("resourceFieldRef"):
            env[name] = resource_value(container, ref)
        else:
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if ref := source.get(key):
                    found = lookup(kind, ref["name"], ref["key"])
                    if found is None:
                        if ref.get("optional"):
                            break
                        raise ConfigError(f'couldn\'t find key {ref["key"]} in {kind} '
                                          f'{pod["metadata"]["namespace"]}/{ref["name"]}')
                    env[name] = found
                    break
            else:
                raise ConfigError(f"env {name}: unsupported valueFrom {sorted(source)}")
    return env


def _security(pod: dict[str, Any], container: dict[str, Any]) -> dict[str, Any]:
    """The effective security context: the container's fields win over the pod's."""
    pod_ctx = pod["spec"].get("securityContext") or {}
    ctx = container.get("securityContext") or {}
    merged = {k: pod_ctx[k] for k in ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")
              if k in pod_ctx}
    merged.update(ctx)
    groups = list(pod_ctx.get("supplementalGroups") or [])
    if "fsGroup" in pod_ctx:
        groups.append(pod_ctx["fsGroup"])
    merged["groups"] = groups
    return merged


def container_spec(pod: dict[str, Any], container: dict[str, Any], env: dict[str, str],
                   mounts: list[Mount]) -> ContainerSpec:
    ctx = _security(pod, container)
    caps = ctx.get("capabilities") or {}
    limits = (container.get("resources") or {}).get("limits") or {}
    seccomp = (ctx.get("seccompProfile") or {}).get("type", "RuntimeDefault")
    if seccomp == "Localhost":
        raise ConfigError("seccompProfile Localhost is not supported by the podlet")
    privileged = bool(ctx.get("privileged"))
    escalation = ctx.get("allowPrivilegeEscalation")
    if privileged and escalation is False:
        raise ConfigError("cannot set allowPrivilegeEscalation to false and privileged to true")
    return ContainerSpec(
        name=container["name"],
        image=container.get("image", ""),
        command=[expand(part, env) for part in container["command"]] if container.get("command") else None,
        args=[expand(part, env) for part in container["args"]] if container.get("args") else None,
        env=env,
        mounts=mounts,
        working_dir=container.get("workingDir"),
        run_as_user=ctx.get("runAsUser"),
        run_as_group=ctx.get("runAsGroup"),
        supplemental_groups=[int(g) for g in ctx["groups"]],
        run_as_non_root=bool(ctx.get("runAsNonRoot")),
        read_only_root=bool(ctx.get("readOnlyRootFilesystem")),
        privileged=privileged,
        no_new_privileges=escalation is False,
        cap_add=[str(c) for c in caps.get("add") or []],
        cap_drop=[str(c) for c in caps.get("drop") or []],
        seccomp=str(seccomp),
        memory_limit=int(quantity(limits["memory"])) if "memory" in limits else None,
        cpu_limit=quantity(limits["cpu"]) if "cpu" in limits else None,
        grace_seconds=int(pod["spec"].get("terminationGracePeriodSeconds", 30)),
    )


def non_root_violation(spec: ContainerSpec, image_user: str) -> str | None:
    """The kubelet's runAsNonRoot check against the image's USER, or None when allowed."""
    if not spec.run_as_non_root:
        return None
    if spec.run_as_user is not None:
        return ("container's runAsUser breaks non-root policy" if spec.run_as_user == 0 else None)
    user = image_user.split(":", 1)[0]
    if not user or user in ("root", "0"):
        return "container has runAsNonRoot and image will run as root"
    if not user.isdigit():
        return (f"container has runAsNonRoot and image has non-numeric user ({user}), "
                "cannot verify user is non-root")
    return None


def port_number(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for item in container.get("ports") or []:
        if item.get("name") == port:
            return int(item["containerPort"])
    raise ConfigError(f"no container port named {port!r}")
