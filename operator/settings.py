"""Operator settings: one typed object, read from the environment once at start."""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

PREFIX = "BATCOMPUTER_OPERATOR_"
SERVICE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z]([-a-z0-9]*[a-z0-9])?(:[0-9]{1,5})?$")


def _version() -> str:
    try:
        return version("batcomputer")
    except PackageNotFoundError:  # pragma: no cover - a bare checkout
        return "latest"


def _resources(requests_cpu: str, requests_memory: str, limits_memory: str,
               limits_cpu: str = "") -> dict[str, dict[str, str]]:
    limits = {"memory": limits_memory}
    if limits_cpu:
        limits["cpu"] = limits_cpu
    return {"requests": {"cpu": requests_cpu, "memory": requests_memory}, "limits": limits}


def _address_map(text: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in text.split(","):
        source, sep, target = item.strip().partition("=")
        try:
            src, dst = ipaddress.ip_network(source.strip()), ipaddress.ip_network(target.strip())
        except ValueError as exc:
            raise ValueError(f"{PREFIX}POD_ADDRESS_MAP entry {item.strip()!r}: {exc}") from exc
        if not sep or src.prefixlen != dst.prefixlen:
            raise ValueError(f"{PREFIX}POD_ADDRESS_MAP entry {item.strip()!r} must be "
                             "SOURCE=TARGET networks of the same size, e.g. 10.0.0.0/8=127.0.0.0/8")
        pairs.append((str(src), str(dst)))
    return tuple(pairs)


@dataclass(frozen=True)
class Settings:
    server_image: str = field(default_factory=lambda: f"batcomputer-server:{_version()}")
    """Image of the generic prediction server (Dockerfile.server)."""
    image_pull_policy: str = "IfNotPresent"
    namespaces: tuple[str, ...] = ()
    """Namespaces to watch; empty means every namespace (cluster-wide)."""
    resync_seconds: float = 30.0
    """How often every BatModel is reconciled even when nothing changed (drift repair)."""
    field_manager: str = "batcomputer-operator"
    """Server-side apply field manager of everything the operator writes."""
    default_replicas: int = 1
    server_workers: int = 2
    """Gunicorn workers per prediction-server pod."""
    progress_deadline_seconds: int = 300
    """A rollout that makes no progress for this long is reported Degraded."""
    default_resources: dict[str, dict[str, str]] = field(
        default_factory=lambda: _resources("100m", "256Mi", "512Mi"))
    liveness_endpoint: str = "http://0.0.0.0:8081/healthz"
    """Where kopf serves the operator's own liveness probe."""
    metrics_port: int = 8082
    """Where the operator's own Prometheus metrics are served (/metrics; 0: not served)."""
    metrics_addr: str = "0.0.0.0"
    cluster_domain: str = "svc"
    """Suffix of in-cluster endpoint URLs: http://<service>.<namespace>.<cluster_domain>/."""
    pod_address_map: tuple[tuple[str, str], ...] = ()
    """Where to reach pods for canary analysis when their IPs are not routable from the
    operator, as SOURCE=TARGET networks (the local cluster: 10.0.0.0/8=127.0.0.0/8).
    Empty (the default): pods are reached at their own IPs, as in any real cluster."""

    operator_namespace: str = "batcomputer-system"
    """Where the operator runs (POD_NAMESPACE, from the downward API): a model's
    NetworkPolicy lets its pods in (they read the servers' /metrics and /api/info)."""

    log_level: str = "info"
    """debug, info, warning or error."""
    leader_election: bool = False
    """Run as one of several replicas, one active at a time (a Lease in operator_namespace).
    Off: one replica, standalone."""
    lease_name: str = "batcomputer-operator"
    lease_seconds: int = 8
    """A standby takes over once the active replica has not renewed the Lease for this
    long (at once when it let it go on a clean shutdown)."""

    webhook_host: str = ""
    """The admission webhook's address as the API server calls it (an IP or DNS name of this
    operator; in a pod, its own IP): https://<host>:<port>/. Empty, and no webhook_service:
    no webhook."""
    webhook_service: str = ""
    """Instead of webhook_host: the API server calls the webhook through this Service,
    namespace/name[:port] (port 443 by default), for clusters whose API server cannot
    reach pod IPs."""
    webhook_addr: str = "0.0.0.0"
    """Where the webhook listens."""
    webhook_port: int = 9443
    webhook_name: str = "batmodels.batcomputer.io"
    """The ValidatingWebhookConfiguration the operator keeps up to date."""
    webhook_cert_dir: str = ""
    """A folder with tls.crt and tls.key (and optionally ca.crt, the CA that signed them),
    e.g. a mounted cert-manager Secret. Empty: a self-signed certificate made at start."""

    @property
    def webhook(self) -> bool:
        return bool(self.webhook_host or self.webhook_service)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, Any] = {}

        def get(name: str) -> str | None:
            value = env.get(PREFIX + name)
            return value.strip() if value is not None and value.strip() else None

        if (v := get("SERVER_IMAGE")) is not None:
            values["server_image"] = v
        if (v := get("IMAGE_PULL_POLICY")) is not None:
            if v not in ("Always", "IfNotPresent", "Never"):
                raise ValueError(f"{PREFIX}IMAGE_PULL_POLICY must be Always, IfNotPresent or Never")
            values["image_pull_policy"] = v
        if (v := get("NAMESPACES")) is not None:
            values["namespaces"] = tuple(n.strip() for n in v.split(",") if n.strip())
        for name, key, kind in (("RESYNC_SECONDS", "resync_seconds", float),
                                ("DEFAULT_REPLICAS", "default_replicas", int),
                                ("SERVER_WORKERS", "server_workers", int),
                                ("PROGRESS_DEADLINE_SECONDS", "progress_deadline_seconds", int)):
            if (v := get(name)) is not None:
                try:
                    values[key] = kind(v)
                except ValueError as exc:
                    raise ValueError(f"{PREFIX}{name}={v!r} is not a number") from exc
                if values[key] <= 0 and key != "default_replicas":
                    raise ValueError(f"{PREFIX}{name} must be positive")
        if (v := get("FIELD_MANAGER")) is not None:
            values["field_manager"] = v
        if (v := get("LIVENESS_ENDPOINT")) is not None:
            values["liveness_endpoint"] = v
        if (v := get("METRICS_PORT")) is not None:
            if not v.isdigit() or not 0 <= int(v) < 65536:
                raise ValueError(f"{PREFIX}METRICS_PORT={v!r} is not a port number (0: off)")
            values["metrics_port"] = int(v)
        if (v := get("METRICS_ADDR")) is not None:
            values["metrics_addr"] = v
        if (v := get("CLUSTER_DOMAIN")) is not None:
            values["cluster_domain"] = v
        if (v := get("POD_NAMESPACE")) is not None:
            values["operator_namespace"] = v
        if (v := get("LOG_LEVEL")) is not None:
            if v.lower() not in ("debug", "info", "warning", "error"):
                raise ValueError(f"{PREFIX}LOG_LEVEL must be debug, info, warning or error")
            values["log_level"] = v.lower()
        if (v := get("LEADER_ELECTION")) is not None:
            if v.lower() not in ("true", "false"):
                raise ValueError(f"{PREFIX}LEADER_ELECTION must be true or false")
            values["leader_election"] = v.lower() == "true"
        if (v := get("LEASE_NAME")) is not None:
            values["lease_name"] = v
        if (v := get("LEASE_SECONDS")) is not None:
            try:
                values["lease_seconds"] = int(v)
            except ValueError as exc:
                raise ValueError(f"{PREFIX}LEASE_SECONDS={v!r} is not a whole number") from exc
            if values["lease_seconds"] < 3:
                raise ValueError(f"{PREFIX}LEASE_SECONDS must be at least 3")
        for name in ("WEBHOOK_HOST", "WEBHOOK_SERVICE", "WEBHOOK_ADDR", "WEBHOOK_NAME",
                     "WEBHOOK_CERT_DIR"):
            if (v := get(name)) is not None:
                values[name.lower()] = v
        if (v := get("WEBHOOK_PORT")) is not None:
            if not v.isdigit() or not 0 < int(v) < 65536:
                raise ValueError(f"{PREFIX}WEBHOOK_PORT={v!r} is not a port number")
            values["webhook_port"] = int(v)
        if (v := values.get("webhook_service")) and not SERVICE_RE.match(v):
            raise ValueError(f"{PREFIX}WEBHOOK_SERVICE={v!r} must be namespace/name[:port]")
        if (v := get("POD_ADDRESS_MAP")) is not None:
            values["pod_address_map"] = _address_map(v)
        resources = {k: get(k) for k in ("CPU_REQUEST", "MEMORY_REQUEST", "MEMORY_LIMIT",
                                         "CPU_LIMIT")}
        if any(resources.values()):
            values["default_resources"] = _resources(
                resources["CPU_REQUEST"] or "100m", resources["MEMORY_REQUEST"] or "256Mi",
                resources["MEMORY_LIMIT"] or "512Mi", resources["CPU_LIMIT"] or "")
        return cls(**values)
