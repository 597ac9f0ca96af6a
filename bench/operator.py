"""Operator benchmark on the real local control plane.

Prints: time from `kubectl apply` of one BatModel to its children existing and to
status Ready, alone and again once N others are managed; time for N BatModels (2 versions
each) to all be Ready, and first, as the baseline in the same run, the floor: the time
Kubernetes alone takes to make the same Deployments and Services (created straight from
the operator's own desired state, 5 requests per model, by a client that does nothing else)
available, which no operator can beat on this machine. The floor's namespace is deleted
before the models are made, so both start from an equally empty cluster, and both are
created over keep-alive connections, 4 at a time. For both: the API requests per model, by
verb and resource (the API server's own apiserver_request_total), and the CPU seconds of
each process, the benchmark's own included (the machine is shared). Then the operator's
own requests and reconciles per model; the requests of an idle resync cycle (nothing
changed: writes should be 0); the operator's resident memory. Pods run on the kwok node
(they only need to look Ready here: the podlet and real servers are what the e2e tests are
for). Readiness is followed with a watch, so that looking costs the API server little.

    .venv/bin/python bench/operator.py [--models 200] [--resync 30]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from batcomputer.operator import desired, spec
from batcomputer.operator.settings import Settings
from batcomputer.testenv.cluster import ControlPlane
from batcomputer.testenv.harness import Kubectl, OperatorProcess, install

REPO = Path(__file__).resolve().parents[1]

NS = "bench"
FLOOR = "bench-floor"


def batmodel(name: str, versions: int) -> dict[str, Any]:
    return {"apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"replicas": 1, "versions": [
                # Loopback port 9 (discard): nothing listens, so the webhook warns at once.
                {"version": f"{v}.0.0", "artifact": f"http://127.0.0.1:9/{name}/{v}.0.0/"}
                for v in range(1, versions + 1)]}}


class Client:
    """Keep-alive connections to the API server, one per thread, as kubectl or a GitOps
    tool keeps them (a new TLS connection per request would cost the API server a
    handshake each, about as much CPU as a small request)."""

    def __init__(self, plane: ControlPlane) -> None:
        self.plane, self.local = plane, threading.local()

    def post(self, path: str, body: dict[str, Any]) -> int:
        session: requests.Session | None = getattr(self.local, "session", None)
        if session is None:
            session = self.local.session = requests.Session()
            session.headers["Authorization"] = f"Bearer {self.plane.admin_token()}"
        answer = session.post(self.plane.state.server + path, json=body,
                              verify=str(self.plane.ca_path), timeout=30)
        return answer.status_code


def cpu_use(pids: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far of each process, and of this one as "benchmark" (its watches and
    clients share the machine with what it measures)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {**{name: cpu_seconds(pid) for name, pid in pids.items()},
            "benchmark": usage.ru_utime + usage.ru_stime}


def cpu_since(before: dict[str, float], pids: dict[str, int]) -> dict[str, float]:
    now = cpu_use(pids)
    return {name: round(now[name] - seconds, 1) for name, seconds in before.items()}


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """Resident memory now, or with ``VmHWM`` its peak over the process's life."""
    total = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
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


def reconciles(operator: OperatorProcess) -> float:
    """How many reconciles the operator has run (its metrics)."""
    return sum(sample.value for family in text_string_to_metric_families(operator.metrics())
               for sample in family.samples
               if sample.name == "batcomputer_operator_reconciles_total")


def writes(counts: dict[str, float]) -> float:
    return round(sum(n for key, n in counts.items() if key.split()[0] in WRITES), 2)


def model_ready(bm: dict[str, Any]) -> bool:
    st = bm.get("status", {})
    ready = any(c["type"] == "Ready" and c["status"] == "True" for c in st.get("conditions", []))
    return bool(ready and st.get("observedGeneration") == bm["metadata"]["generation"])


def available(deployment: dict[str, Any]) -> bool:
    st = deployment.get("status", {})
    want = deployment["spec"].get("replicas", 1)
    return bool(st.get("observedGeneration", 0) >= deployment["metadata"]["generation"]
                and st.get("updatedReplicas") == st.get("availableReplicas") == want)


class Ready(threading.Thread):
    """The names of the objects at ``path`` that ``ready`` says are ready: one LIST, then a
    watch (listing again if it breaks)."""

    started: list[Ready] = []

    def __init__(self, plane: ControlPlane, path: str,
                 ready: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(daemon=True)
        self.plane, self.path, self.ready = plane, path, ready
        self.names: set[str] = set()
        self.first_seen: dict[str, float] = {}
        self.ready_at: dict[str, float] = {}
        """When each name was first seen and first seen ready (time.monotonic)."""
        self.changed = threading.Condition()
        self.listed = threading.Event()
        self.stop = threading.Event()

    def start(self) -> None:
        Ready.started.append(self)
        super().start()

    def _see(self, kind: str, obj: dict[str, Any]) -> None:
        name, now = obj["metadata"]["name"], time.monotonic()
        with self.changed:
            self.first_seen.setdefault(name, now)
            if kind != "DELETED" and self.ready(obj):
                self.names.add(name)
                self.ready_at.setdefault(name, now)
            else:
                self.names.discard(name)
            self.changed.notify_all()

    def run(self) -> None:
        headers = {"Authorization": f"Bearer {self.plane.admin_token()}"}
        while not self.stop.is_set():
            try:
                answer = self.plane.get(self.path)
                if answer.status_code != 200:
                    print(f"LIST {self.path}: {answer.status_code} {answer.text[:300]}",
                          file=sys.stderr, flush=True)
                    time.sleep(0.5)
                    continue
                listing = answer.json()
                for obj in listing["items"]:
                    self._see("ADDED", obj)
                self.listed.set()
                version = listing["metadata"]["resourceVersion"]
                with requests.get(self.plane.state.server + self.path, headers=headers,
                                  params={"watch": "1", "resourceVersion": version,
                                          "allowWatchBookmarks": "true"},
                                  verify=str(self.plane.ca_path), stream=True,
                                  timeout=(5, 120)) as answer:
                    for line in answer.iter_lines():
                        event = json.loads(line)
                        if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                            self._see(event["type"], event["object"])
                        elif event["type"] == "ERROR":
                            break
            except (requests.RequestException, ValueError) as exc:
                if self.stop.is_set():
                    return
                print(f"watch {self.path}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
                time.sleep(0.5)

    def wait_for(self, names: set[str], timeout: float) -> bool:
        self.listed.wait(timeout)
        with self.changed:
            return self.changed.wait_for(lambda: names <= self.names, timeout)


def one_model(plane: ControlPlane, kubectl: Kubectl, models: Ready, name: str) -> tuple[float, float]:
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
        if children is not None and models.wait_for({name}, 0.02):
            return children, time.monotonic() - started
        if now > 60:
            raise SystemExit(f"{name} not Ready after 60s")
        time.sleep(0.02)


def floor(plane: ControlPlane, kubectl: Kubectl,
          models: int) -> tuple[float, dict[str, float], dict[str, float]]:
    """Seconds for Kubernetes alone to make available what the operator makes for
    ``models`` two-version models: their Deployments and Services from the operator's own
    desired state (without owners: there is no BatModel), created 5 requests per model, 4
    at a time, as the models are, in a namespace of their own that the operator does not
    watch. Also returns the CPU seconds each control-plane process used meanwhile, and the
    API requests per model."""
    kubectl("create", "namespace", FLOOR)
    deadline = time.monotonic() + 60
    while plane.get(f"/api/v1/namespaces/{FLOOR}/serviceaccounts/default").status_code != 200:
        if time.monotonic() > deadline:
            raise SystemExit(f"no default ServiceAccount in {FLOOR}")
        time.sleep(0.1)
    settings = Settings()
    per_model = []
    for i in range(models):
        body = batmodel(f"f{i:03d}", 2)
        body["metadata"].update(namespace=FLOOR, uid="floor", generation=1)
        model = spec.parse(body)
        objects = [o for v in model.versions
                   for o in (desired.deployment(model, v, settings), desired.version_service(model, v))]
        objects.append(desired.stable_service(model, model.versions[-1], ""))
        for obj in objects:
            obj["metadata"].pop("ownerReferences", None)
        per_model.append(objects)
    deployments = Ready(plane, f"/apis/apps/v1/namespaces/{FLOOR}/deployments", available)
    deployments.start()
    deployments.listed.wait(30)

    client = Client(plane)

    def create(objects: list[dict[str, Any]]) -> None:
        for obj in objects:
            group = "/api/v1" if obj["apiVersion"] == "v1" else f"/apis/{obj['apiVersion']}"
            plural = obj["kind"].lower() + "s"
            code = client.post(f"{group}/namespaces/{FLOOR}/{plural}", obj)
            assert code == 201, (obj["metadata"]["name"], code)

    cpu_before = cpu_use(plane.state.pids)
    requests_before = api_requests(plane)
    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, per_model))
    names = {o["metadata"]["name"] for objects in per_model for o in objects if o["kind"] == "Deployment"}
    if not deployments.wait_for(names, 600):
        raise SystemExit("the floor's Deployments were not available after 600s")
    seconds = time.monotonic() - started
    cpu = cpu_since(cpu_before, plane.state.pids)
    deployments.stop.set()
    return seconds, cpu, delta(api_requests(plane), requests_before, per=models)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=200)
    parser.add_argument("--singles", type=int, default=5)
    parser.add_argument("--resync", type=float, default=30,
                        help="the operator's resync interval; one idle cycle is measured")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="skip the floor (Kubernetes alone, the same objects)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-operator-") as tmp:
        plane = ControlPlane(Path(tmp) / "cp", podlet=False, tie_to_parent=True)
        plane.start()
        try:
            kubectl = Kubectl(plane)
            install(kubectl, REPO)
            # The floor first, on the fresh cluster; then its namespace goes, so that the
            # models are measured on a cluster as empty as the floor's was (the API
            # server's ClusterIP allocator, for one, counts every Service at each new one).
            floor_seconds, floor_cpu, floor_requests = (
                floor(plane, kubectl, args.models) if args.floor else (None, None, None))
            if args.floor:
                kubectl("delete", "namespace", FLOOR, "--timeout=600s")
            kubectl("create", "namespace", NS)
            models = Ready(plane, f"/apis/batcomputer.io/v1alpha1/namespaces/{NS}/batmodels",
                           model_ready)
            models.start()
            deployments = Ready(plane, f"/apis/apps/v1/namespaces/{NS}/deployments", available)
            deployments.start()
            operator = OperatorProcess(plane, kubectl, Path(tmp), namespaces=NS,
                                       resync_seconds=args.resync)
            operator.start()
            assert operator.proc is not None
            sampler = RssSampler(operator.proc.pid)
            sampler.start()
            time.sleep(3)  # let kopf list and start watching
            idle_rss = rss_mb(operator.proc.pid)

            singles = [one_model(plane, kubectl, models, f"single-{i}") for i in range(args.singles)]
            children = statistics.median(s[0] for s in singles)
            ready = statistics.median(s[1] for s in singles)

            names = {f"m{i:03d}" for i in range(args.models)}
            # Created as a GitOps tool would: straight to the API, 4 requests at a time.
            path = f"/apis/batcomputer.io/v1alpha1/namespaces/{NS}/batmodels"
            pids = {**plane.state.pids, "operator": operator.proc.pid}
            cpu_before = cpu_use(pids)
            requests_before = api_requests(plane)
            reconciles_before = reconciles(operator)
            client = Client(plane)
            own_created = operator_requests(operator)
            started = time.monotonic()
            with ThreadPoolExecutor(4) as pool:
                codes = list(pool.map(lambda i: client.post(path, batmodel(f"m{i:03d}", 2)),
                                      range(args.models)))
            assert set(codes) == {201}, codes
            applied = time.monotonic() - started
            if not models.wait_for(names, 600 - (time.monotonic() - started)):
                raise SystemExit("not all Ready after 600s")
            many = time.monotonic() - started
            # Where each model's time went: the operator made its Deployments, Kubernetes
            # made them available, and the operator said Ready.
            made, available_after, said = [], [], []
            for name in names:
                pair = [f"{name}-v1", f"{name}-v2"]
                made.append(max(deployments.first_seen[c] for c in pair) - started)
                available_after.append(max(deployments.ready_at[c] for c in pair) - started)
                said.append(models.ready_at[name] - max(deployments.ready_at[c] for c in pair))
            cpu = cpu_since(cpu_before, pids)
            reconciled = round((reconciles(operator) - reconciles_before) / args.models, 1)
            per_model = delta(api_requests(plane), requests_before, per=args.models)
            own_per_model = delta(operator_requests(operator), own_created, per=args.models)
            # One model more, while all the others are managed (their resyncs included).
            time.sleep(max(5.0, args.resync / 2))  # let the creation's tail settle
            loaded = [one_model(plane, kubectl, models, f"later-{i}") for i in range(args.singles)]
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
                f"the floor: Kubernetes alone makes the same {2 * args.models} Deployments and "
                f"{3 * args.models} Services available [s]":
                    round(floor_seconds, 1) if floor_seconds is not None else None,
                "all Ready / the floor": round(many / floor_seconds, 2) if floor_seconds else None,
                "CPU seconds used meanwhile by the floor": floor_cpu,
                "API requests per model of the floor": floor_requests,
                "per model, from the start: both Deployments exist (median, last) [s]":
                    [round(statistics.median(made), 1), round(max(made), 1)],
                "per model, from the start: both Deployments available (median, last) [s]":
                    [round(statistics.median(available_after), 1), round(max(available_after), 1)],
                "per model: last Deployment available -> status Ready (median, 90th percentile, "
                "largest) [s]": [round(statistics.median(said), 2),
                                 round(statistics.quantiles(said, n=10)[-1], 2), round(max(said), 2)],
                f"CPU seconds used while {args.models} models were reconciled": cpu,
                f"API requests per model while {args.models} were created and reconciled":
                    per_model,
                "API requests per model: total, writes": [round(sum(per_model.values()), 1),
                                                          writes(per_model)],
                "of which the operator's own client's (its metrics; kopf's are not counted)":
                    own_per_model,
                "the operator's reconciles per model": reconciled,
                f"idle resync cycle ({args.resync:g} s, all {2 * args.singles + args.models} models): "
                "API requests": idle,
                "idle resync cycle: writes (all clients: the kwok node, leases...)": writes(idle),
                "idle resync cycle: the operator's own requests (its metrics)": own,
                "idle resync cycle: the operator's own writes": writes(own),
                "idle resync cycle: operator CPU seconds": idle_cpu,
                "operator RSS idle [MB]": round(idle_rss, 1),
                "operator RSS peak [MB]": round(sampler.peak, 1),
                "operator RSS after [MB]": round(rss_mb(operator.proc.pid), 1),
                "control plane: peak RSS over the whole run [MB]": {
                    name: round(rss_mb(pid, "VmHWM")) for name, pid in plane.state.pids.items()},
            }
            operator.stop()
            print(json.dumps(report, indent=2))
            for watcher in Ready.started:
                watcher.stop.set()
        finally:
            plane.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
