"""Helpers shared by tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import requests
import yaml

from batcomputer.testenv.cluster import ControlPlane
from batcomputer.testenv.harness import Kubectl, OperatorProcess, service_urls

__all__ = ["KENT", "Kubectl", "Load", "OperatorProcess", "batmodel", "condition", "get", "predict",
           "read_only_claim", "served_versions", "service_urls", "wait_for", "wait_model_ready"]

KENT = {"force": "Kent Police", "crime": "Drugs", "month": 6}

T = TypeVar("T")


def wait_for(predicate: Callable[[], T | None], timeout: float = 30, what: str = "condition",
             interval: float = 0.2) -> T:
    """Poll until ``predicate`` returns something truthy; fail with ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - reported on timeout
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                         + (f" (last error: {last_error!r})" if last_error else ""))


def batmodel(base: str, *versions: str, promoted: str | None = None, replicas: int = 2,
             name: str = "crime", **extra: Any) -> str:
    """A BatModel of the reference model whose artifacts are served under ``base``."""
    spec: dict[str, Any] = {"versions": [{"version": v, "artifact": f"{base}/crime/{v}/"}
                                         for v in versions], "replicas": replicas, **extra}
    if promoted:
        spec["promoted"] = promoted
    return yaml.safe_dump({"apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel",
                           "metadata": {"name": name}, "spec": spec})


def read_only_claim(kubectl: Kubectl, ns: str, claim: str, folder: Any) -> None:
    """A PersistentVolumeClaim ``claim`` bound to a hostPath PersistentVolume of ``folder``
    (a model registry), as an admin prepares a volume of models."""
    volume = f"{ns}-{claim}"
    pv = {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": volume},
          "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadOnlyMany"],
                   "storageClassName": "manual", "hostPath": {"path": str(folder)}}}
    pvc = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": claim},
           "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "manual",
                    "volumeName": volume, "resources": {"requests": {"storage": "1Gi"}}}}
    kubectl("apply", "-f", "-", input=yaml.safe_dump(pv))
    kubectl("apply", "-f", "-", input=yaml.safe_dump(pvc), namespace=ns)


def get(kubectl: Kubectl, ns: str, *what: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(kubectl("get", *what, "-o", "json", namespace=ns).stdout)
    return out


def condition(bm: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in bm.get("status", {}).get("conditions", []) if c["type"] == kind), {})


def wait_model_ready(kubectl: Kubectl, ns: str, name: str = "crime", timeout: float = 90,
                     check: Callable[[], None] | None = None) -> dict[str, Any]:
    """Wait until the BatModel's status is for its latest generation and Ready; ``check``
    runs at every poll (for example: the operator is still alive)."""
    def ready() -> dict[str, Any] | None:
        if check is not None:
            check()
        bm = get(kubectl, ns, "bm", name)
        st = bm.get("status", {})
        if (st.get("observedGeneration") == bm["metadata"]["generation"]
                and condition(bm, "Ready").get("status") == "True"):
            return bm
        return None
    try:
        return wait_for(ready, timeout=timeout, what=f"BatModel {name} Ready")
    except AssertionError:
        print(json.dumps(get(kubectl, ns, "bm", name).get("status"), indent=1))
        raise


def served_versions(cp: ControlPlane, ns: str, service: str) -> set[str]:
    """The model versions the ready endpoints of a Service answer with."""
    return {requests.get(url + "/api/info", timeout=5).json()["version"]
            for url in service_urls(cp, ns, service)}


def predict(cp: ControlPlane, ns: str, service: str, body: Any) -> requests.Response:
    urls = service_urls(cp, ns, service)
    assert urls, f"no ready endpoints for Service {service}"
    return requests.post(urls[0] + "/api/predict", json=body, timeout=5)


class Load:
    """Clients that send predictions round-robin to a Service's ready endpoints, read
    from its EndpointSlices every ``refresh`` seconds as kube-proxy follows them, and
    record every answer: (time, version that answered, ok, error)."""

    def __init__(self, cp: ControlPlane, ns: str, service: str, clients: int = 4,
                 refresh: float = 1.0, pause: float = 0.0, rows: list[dict[str, Any]] | None = None) -> None:
        self.cp, self.ns, self.service, self.refresh, self.pause = cp, ns, service, refresh, pause
        self.rows = rows or [KENT]
        self.urls: list[str] = service_urls(cp, ns, service)
        self.results: list[tuple[float, str, bool, str]] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._refresh, daemon=True)]
        self.threads += [threading.Thread(target=self._client, args=(i,), daemon=True)
                         for i in range(clients)]

    @property
    def ok(self) -> int:
        return sum(1 for r in self.results if r[2])

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r[2])

    @property
    def errors(self) -> list[str]:
        return [r[3] for r in self.results if not r[2]]

    def _refresh(self) -> None:
        while not self.stop.wait(self.refresh):
            with contextlib.suppress(requests.RequestException):
                self.urls = service_urls(self.cp, self.ns, self.service) or self.urls

    def _client(self, offset: int) -> None:
        i = offset
        while not self.stop.is_set():
            urls = self.urls
            url = urls[i % len(urls)]
            i += 1
            try:
                got = requests.post(url + "/api/predict", json=self.rows[i % len(self.rows)], timeout=5)
                result = (time.monotonic(), got.headers.get("X-Model-Version", "?"),
                          got.status_code == 200, f"{got.status_code} {got.text[:80]}")
            except requests.RequestException as exc:
                result = (time.monotonic(), "?", False, f"{type(exc).__name__} {url}")
            with self.lock:
                self.results.append(result)
            if self.pause:
                time.sleep(self.pause)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
