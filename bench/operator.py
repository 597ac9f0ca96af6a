"""Operator benchmark on the real local control plane.

Prints: time from `kubectl apply` of one BatModel to its children existing and to
status Ready, alone and again once N others are managed; time for N BatModels (2 versions
each) to all be Ready; the API requests
that took, per model, by verb and resource (the API server's own apiserver_request_total);
the requests of an idle resync cycle (nothing changed: writes should be 0); CPU seconds
of the operator and the control plane; the operator's resident memory. Pods run on the
kwok node (they only need to look Ready here: the podlet and real servers are what the
e2e tests are for).

    .venv/bin/python bench/operator.py [--models 200] [--resync 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from batcomputer.testenv.cluster import ControlPlane
from batcomputer.testenv.harness import Kubectl, OperatorProcess, install

REPO = Path(__file__).resolve().parents[1]

NS = "bench"


def batmodel(name: str, versions: int) -> dict[str, Any]:
    return {"apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": 1, "versions": [
                # Loopback port 9 (discard): nothing listens, so the webhook warns at once.
                {"version": f"{v}.0.0", "artifact": f"http://127.0.0.1:9/{name}/{v}.0.0/"}
                for v in range(1, versions + 1)]}}


def rss_mb(pid: int) -> float:
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1]) / 1024
    return total


class RssSampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.stop = pid, 0.0, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.2):
            try:
                self.peak = max(self.peak, rss_mb(self.pid))
            except OSError:
                return


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks


WRITES = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}
Requests = dict[tuple[str, str], float]


def api_requests(plane: ControlPlane) -> Requests:
    """The API server's request counters, (verb, resource) -> count, excluding watches'
    long-running streams and the benchmark's own reads of BatModels."""
    counts: Requests = {}
    for family in text_string_to_metric_families(plane.get("/metrics").text):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            if sample.name != "apiserver_request_total":
                continue
            key = (sample.labels.get("verb", ""), sample.labels.get("resource", ""))
            counts[key] = counts.get(key, 0) + sample.value
    return counts


def delta(after: Requests, before: Requests, per: float = 1) -> dict[str, float]:
    out = {f"{verb} {resource}": round((n - before.get((verb, resource), 0)) / per, 2)
           for (verb, resource), n in sorted(after.items())}
    return {k: v for k, v in out.items() if v}


def operator_requests(operator: OperatorProcess) -> Requests:
    """The operator's own count of its client's requests (operator.metrics), named as the
    API server names verbs."""
    verbs = {"get": "GET", "list": "LIST", "watch": "WATCH", "create": "POST",
             "update": "PUT", "patch": "PATCH", "apply": "APPLY", "delete": "DELETE"}
    counts: Requests = {}
    for family in text_string_to_metric_families(operator.metrics()):
        for sample in family.samples:
            if sample.name == "batcomputer_operator_api_requests_total":
                key = (verbs.get(sample.labels["verb"], sample.labels["verb"]),
                       sample.labels["resource"])
                counts[key] = counts.get(key, 0) + sample.value
    return counts


def writes(counts: dict[str, float]) -> float:
    return round(sum(n for key, n in counts.items() if key.split()[0] in WRITES), 2)


def ready_names(plane: ControlPlane) -> set[str]:
    items = plane.get(f"/apis/batcomputer.io/v1alpha1/namespaces/{NS}/batmodels").json()["items"]
    out = set()
    for bm in items:
        st = bm.get("status", {})
        ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
        if ready and st.get("observedGeneration") == bm["metadata"]["generation"]:
            out.add(bm["metadata"]["name"])
    return out


def one_model(plane: ControlPlane, kubectl: Kubectl, name: str) -> tuple[float, float]:
    doc = yaml.safe_dump(batmodel(name, 1))
    started = time.monotonic()
    kubectl("apply", "-f", "-", input=doc)
    children = None
    while True:
        now = time.monotonic() - started
        if children is None:
            dep = plane.get(f"/apis/apps/v1/namespaces/{NS}/deployments/{name}-v1").status_code
            svc = plane.get(f"/api/v1/namespaces/{NS}/services/{name}").status_code
            if dep == svc == 200:
                children = now
        if children is not None and name in ready_names(plane):
            return children, now
        if now > 60:
            raise SystemExit(f"{name} not Ready after 60s")
        time.sleep(0.02)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--singles", type=int, default=5)
    parser.add_argument("--resync", type=float, default=30,
                        help="the operator's resync interval; one idle cycle is measured")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        plane = ControlPlane(Path(tmp) / "cp", podlet=False, tie_to_parent=True)
        plane.start()
        try:
            kubectl = Kubectl(plane)
            install(kubectl, REPO)
            kubectl("create", "namespace", NS)
            operator = OperatorProcess(plane, kubectl, Path(tmp), namespaces=NS,
                                       resync_seconds=args.resync)
            operator.start()
            assert operator.proc is not None
            sampler = RssSampler(operator.proc.pid)
            sampler.start()
            time.sleep(3)  # let kopf list and start watching
            idle_rss = rss_mb(operator.proc.pid)

            singles = [one_model(plane, kubectl, f"single-{i}") for i in range(args.singles)]
            children = statistics.median(s[0] for s in singles)
            ready = statistics.median(s[1] for s in singles)

            names = {f"m{i:03d}" for i in range(args.models)}
            # Created as a GitOps tool would: straight to the API, 4 requests at a time.
            path = f"/apis/batcomputer.io/v1alpha1/namespaces/{NS}/batmodels"
            pids = {**plane.state.pids, "operator": operator.proc.pid}
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            requests_before = api_requests(plane)
            own_created = operator_requests(operator)
            started = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(lambda i: plane.request("POST", path, json=batmodel(
                    f"m{i:03d}", 2)).status_code, range(args.models)))
            assert set(codes) == {201}, codes
            applied = time.monotonic() - started
            while not names <= ready_names(plane):
                if time.monotonic() - started > 600:
                    raise SystemExit("not all Ready after 600s")
                time.sleep(0.5)
            many = time.monotonic() - started
            pids = {**plane.state.pids, "operator": operator.proc.pid}
            cpu = {name: round(cpu_seconds(pid) - cpu_before[name], 1) for name, pid in pids.items()}
            per_model = delta(api_requests(plane), requests_before, per=args.models)
            own_per_model = delta(operator_requests(operator), own_created, per=args.models)
            # One model more, while all the others are managed (their resyncs included).
            time.sleep(max(5.0, args.resync / 2))  # let the creation's tail settle
            loaded = [one_model(plane, kubectl, f"later-{i}") for i in range(args.singles)]
            loaded_children = statistics.median(s[0] for s in loaded)
            loaded_ready = statistics.median(s[1] for s in loaded)
            # An idle resync cycle: every model is reconciled once more and nothing changed.
            time.sleep(5.0)
            idle_before = api_requests(plane)
            own_before = operator_requests(operator)
            idle_cpu = cpu_seconds(operator.proc.pid)
            time.sleep(args.resync + 2)
            idle = delta(api_requests(plane), idle_before)
            own = delta(operator_requests(operator), own_before)
            idle_cpu = round(cpu_seconds(operator.proc.pid) - idle_cpu, 1)
            sampler.stop.set()
            report = {
                f"one model: apply -> children exist (median of {args.singles}) [s]": round(children, 3),
                "one model: apply -> status Ready (median) [s]": round(ready, 3),
                f"one model more while {args.models} are managed: apply -> children exist "
                "(median) [s]": round(loaded_children, 3),
                f"one model more while {args.models} are managed: apply -> status Ready "
                "(median) [s]": round(loaded_ready, 3),
                f"{args.models} models x 2 versions: creating them took [s]": round(applied, 1),
                f"{args.models} models x 2 versions: apply -> all Ready [s]": round(many, 1),
                f"CPU seconds used while {args.models} models were reconciled": cpu,
                f"API requests per model while {args.models} were created and reconciled":
                    per_model,
                "API requests per model: total, writes": [round(sum(per_model.values()), 1),
                                                          writes(per_model)],
                "of which the operator's own client's (its metrics; kopf's are not counted)":
                    own_per_model,
                f"idle resync cycle ({args.resync:g} s, all {2 * args.singles + args.models} models): "
                "API requests": idle,
                "idle resync cycle: writes (all clients: the kwok node, leases...)": writes(idle),
                "idle resync cycle: the operator's own requests (its metrics)": own,
                "idle resync cycle: the operator's own writes": writes(own),
                "idle resync cycle: operator CPU seconds": idle_cpu,
                "operator RSS idle [MB]": round(idle_rss, 1),
                "operator RSS peak [MB]": round(sampler.peak, 1),
                "operator RSS after [MB]": round(rss_mb(operator.proc.pid), 1),
            }
            operator.stop()
            print(json.dumps(report, indent=2))
        finally:
            plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
