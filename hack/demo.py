"""The whole story on one machine: `make demo`.

Starts the local control plane and the operator, trains crime 1.0.0, 1.1.0 and an
API-changing 2.0.0, serves them over HTTP, applies a BatModel and walks it through a
MINOR roll, a new MAJOR beside the old one, promotion and roll-back, with
predictions from real prediction servers along the way. It leaves everything
running to look around; `make demo-down` stops it. Ctrl-C stops everything.

Where podman can run (or hack/build-images.sh can install it), every pod is a container
from the project's images and the operator is installed with `kubectl apply -k
manifests/`, as on a real cluster; elsewhere pods are local processes and the operator
runs as a process with its ServiceAccount's token. It says which it uses.
BATCOMPUTER_TESTENV_RUNTIME=podman|process chooses.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from batcomputer.testenv.cluster import ControlPlane, State, stop_state
from batcomputer.testenv.harness import Kubectl, OperatorProcess, install, serve_files, service_urls
from batcomputer.testenv.podlet import cluster_id
from batcomputer.testenv.runtime import CLUSTER_LABEL, podman_environment

REPO = Path(__file__).resolve().parents[1]
DEMO = Path(os.environ.get("BATCOMPUTER_DEMO_DIR") or REPO / ".demo").resolve()
CLUSTER = DEMO / "cluster"
NAMESPACE = "demo"
BATCOMPUTER = str(Path(sys.executable).parent / "batcomputer")
QUESTION_V1 = {"force": "Metropolitan Police Service", "crime": "Shoplifting", "month": 11}
QUESTION_V2 = {**QUESTION_V1, "place": "Supermarket"}
started = time.monotonic()


def step(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m  [{time.monotonic() - started:5.1f}s]", flush=True)


def show(text: str) -> None:
    print("    " + text.replace("\n", "\n    "), flush=True)


def run(*args: str) -> None:
    show("$ " + shlex.join(["batcomputer", *args]))
    subprocess.run([BATCOMPUTER, "-q", *args], check=True)


def batmodel(base: str, versions: list[str], promoted: str) -> dict[str, Any]:
    return {"apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel",
            "metadata": {"name": "crime", "namespace": NAMESPACE},
            "spec": {"versions": [{"version": v, "artifact": f"{base}/crime/{v}/"} for v in versions],
                     "promoted": promoted, "replicas": 2}}


def apply(kubectl: Kubectl, doc: dict[str, Any]) -> None:
    text = yaml.safe_dump(doc, sort_keys=False)
    show("$ kubectl apply -f - <<EOF\n" + text.rstrip() + "\nEOF")
    show(kubectl("apply", "-f", "-", input=text).stdout.strip())


def wait_ready(kubectl: Kubectl, timeout: float = 180) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        bm = json.loads(kubectl("get", "bm", "crime", "-o", "json", namespace=NAMESPACE).stdout)
        st = bm.get("status", {})
        ready = next((c for c in st.get("conditions", []) if c["type"] == "Ready"), {})
        line = ", ".join(f"{v['version']} {v['phase']}" for v in st.get("versions", []))
        if line and line != last:
            show(f"... {line}")
            last = line
        if st.get("observedGeneration") == bm["metadata"]["generation"] and ready.get("status") == "True":
            show(f"Ready: {ready['message']}")
            return bm
        time.sleep(0.5)
    raise SystemExit(f"BatModel crime not Ready after {timeout:.0f}s: {last}")


def get(kubectl: Kubectl) -> None:
    show("$ kubectl get bm,deploy,svc -n demo")
    show(kubectl("get", "bm,deploy,svc", namespace=NAMESPACE).stdout.rstrip())


def predict(plane: ControlPlane, service: str, question: dict[str, Any]) -> None:
    urls = []
    deadline = time.monotonic() + 30
    while not urls and time.monotonic() < deadline:
        urls = service_urls(plane, NAMESPACE, service)
        time.sleep(0.2)
    if not urls:
        raise SystemExit(f"Service {service} has no ready endpoints")
    info = requests.get(urls[0] + "/api/info", timeout=5).json()
    answer = requests.post(urls[0] + "/api/predict", json=question, timeout=5)
    show(f"POST http://{service}.{NAMESPACE}.svc/api/predict   (endpoint {urls[0]}, "
         f"serving {info['version']})")
    show(f"  {json.dumps(question)}")
    show(f"  -> {answer.status_code} {answer.text.strip()}")


def choose_runtime() -> tuple[str, str]:
    """(runtime, why)."""
    chosen = os.environ.get("BATCOMPUTER_TESTENV_RUNTIME")
    if chosen:
        return chosen, "BATCOMPUTER_TESTENV_RUNTIME"
    if shutil.which("podman"):
        return "podman", "podman is installed"
    if shutil.which("apt-get") and (os.geteuid() == 0 or shutil.which("sudo")):
        return "podman", "hack/build-images.sh installs podman from Debian packages"
    return "process", "podman is not installed and cannot be installed here"


def install_operator(kubectl: Kubectl) -> None:
    show("$ kubectl apply -k manifests/")
    show(kubectl("apply", "-k", str(REPO / "manifests")).stdout.strip())
    # This cluster serves pod IPs 10.N.x.y on 127.N.x.y: tell the operator, for the canary
    # analysis that reads the pods' /metrics (a real cluster needs no such setting).
    command = ("set", "env", "deployment/batcomputer-operator",
               "BATCOMPUTER_OPERATOR_POD_ADDRESS_MAP=10.0.0.0/8=127.0.0.0/8")
    show("$ kubectl -n batcomputer-system " + " ".join(command))
    kubectl(*command, namespace="batcomputer-system")
    show("$ kubectl -n batcomputer-system rollout status deployment/batcomputer-operator")
    show(kubectl("rollout", "status", "deployment/batcomputer-operator", "--timeout=180s",
                 namespace="batcomputer-system").stdout.strip())


def show_containers() -> None:
    """`podman ps`-style evidence: what ran as a container, as which user, how confined."""
    label = f"label={CLUSTER_LABEL}={cluster_id(CLUSTER / 'pods')}"
    env = podman_environment()
    ids = subprocess.run(["podman", "ps", "--quiet", "--filter", label], capture_output=True,
                         text=True, env=env, check=True).stdout.split()
    inspected = json.loads(subprocess.run(["podman", "inspect", *ids], capture_output=True,
                                          text=True, env=env, check=True).stdout) if ids else []
    show(f"$ podman ps --filter {label}   (+ podman inspect)")
    show(f"{'CONTAINER':<60} {'IMAGE':<38} {'USER':<12} {'RO ROOT':<8} {'NO-NEW-PRIVS':<13} CAPS ADDED")
    for c in sorted(inspected, key=lambda c: c["Name"]):
        host = c["HostConfig"]
        show(f"{c['Name'][:60]:<60} {c['ImageName'][:38]:<38} {c['Config']['User']:<12} "
             f"{str(host['ReadonlyRootfs']).lower():<8} "
             f"{str('no-new-privileges' in (host.get('SecurityOpt') or [])).lower():<13} "
             f"{','.join(host.get('CapAdd') or []) or 'none'}")


class Traffic(threading.Thread):
    """Apps calling crime-v1: requests spread over its ready endpoints, as kube-proxy does."""

    def __init__(self, plane: ControlPlane, question: dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.plane, self.question, self.stop = plane, question, threading.Event()
        self.answers: dict[str, int] = {}

    def run(self) -> None:
        urls: list[str] = []
        refreshed, i = 0.0, 0
        while not self.stop.is_set():
            if time.monotonic() - refreshed > 1:
                urls, refreshed = service_urls(self.plane, NAMESPACE, "crime-v1") or urls, time.monotonic()
            if not urls:
                time.sleep(0.1)
                continue
            i += 1
            try:
                got = requests.post(urls[i % len(urls)] + "/api/predict", json=self.question, timeout=5)
                key = got.headers.get("X-Model-Version", "?") if got.ok else f"failed {got.status_code}"
            except requests.RequestException:
                key = "failed"
            self.answers[key] = self.answers.get(key, 0) + 1
            time.sleep(0.01)


def canary_chapter(plane: ControlPlane, kubectl: Kubectl, base: str) -> None:
    doc = batmodel(base, ["1.2.0", "2.0.0"], "1.2.0")
    doc["spec"]["rollout"] = {"strategy": "Canary", "steps": [25, 50], "interval": "10s",
                              "analysis": {"minRequests": 20, "maxErrorRate": 0.01,
                                           "maxLatencyP99Ms": 100, "maxPredictionShift": 0.4}}
    traffic = Traffic(plane, QUESTION_V1)
    traffic.start()
    apply(kubectl, doc)
    last, deadline = "", time.monotonic() + 240
    while time.monotonic() < deadline:
        bm = json.loads(kubectl("get", "bm", "crime", "-o", "json", namespace=NAMESPACE).stdout)
        canaries = bm.get("status", {}).get("canaries") or []
        line = canaries[0].get("message", "") if canaries else f"serving {bm['status'].get('serving')}"
        if line != last:
            show(f"... {line}")
            last = line
        if canaries and canaries[0].get("phase") == "Aborted":
            raise SystemExit(f"the canary was aborted: {line}")
        if not canaries and bm["status"].get("serving") == "1.2.0":
            break
        time.sleep(0.5)
    else:
        raise SystemExit(f"the canary did not complete: {last}")
    traffic.stop.set()
    traffic.join()
    show(f"answers during the canary, by version: {json.dumps(traffic.answers, sort_keys=True)}")
    show("$ batcomputer status crime -n demo")
    subprocess.run([BATCOMPUTER, "status", "crime", "-n", NAMESPACE], check=True,
                   env={**os.environ, "KUBECONFIG": str(plane.kubeconfig_path)})


def stop_previous() -> None:
    state = State.load(CLUSTER)
    if state is not None:
        stopped = stop_state(state)
        if stopped:
            show(f"Stopped the previous demo ({', '.join(stopped)})")


def main() -> int:
    print(__doc__.strip().splitlines()[0])
    DEMO.mkdir(parents=True, exist_ok=True)
    stop_previous()
    runtime, why = choose_runtime()
    plane = ControlPlane(CLUSTER, runtime=runtime)

    def interrupted(*_: object) -> None:
        print("\nInterrupted: stopping everything the demo started", flush=True)
        plane.stop()
        sys.exit(130)
    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)

    how = ("pods are podman containers from the batcomputer-server and batcomputer-operator "
           "images" if runtime == "podman" else "pods are local processes from this virtualenv")
    step("Starting the local control plane (etcd, kube-apiserver, controller-manager, "
         f"scheduler, kwok, podlet): {how} ({why})")
    plane.start()
    show(", ".join(f"{k} {v:.1f}s" for k, v in plane.timings.items()))
    kubectl = Kubectl(plane)

    operator_log = ""
    if runtime == "podman":
        step("Installing the operator as users do: CRD, namespace, RBAC and the operator Deployment")
        install_operator(kubectl)
        operator_log = f"{CLUSTER}/pods/batcomputer-system_batcomputer-operator-*/container.log"
    else:
        step("Installing the BatModel CRD and the operator's RBAC (crds/, manifests/)")
        install(kubectl, REPO)
        step("Starting the operator with the batcomputer-operator ServiceAccount's token")
        operator = OperatorProcess(plane, kubectl, DEMO, resync_seconds=10)
        operator.start()
        operator_log = str(operator.log)
    kubectl("create", "namespace", NAMESPACE)

    data, registry = DEMO / "data", DEMO / "registry"
    step("Generating police.uk-shaped data and training the model")
    if not data.is_dir():
        run("generate-data", str(data))
    trainings = {"1.0.0": [],
                 "1.1.0": ["--param", "max_depth=12"],
                 "1.2.0": ["--param", "max_depth=14"],
                 "2.0.0": ["--features", "force,crime,month,place"]}
    for version, extra in trainings.items():
        if (registry / "crime" / version / "metadata.json").is_file():
            show(f"crime {version} already in {registry}")
            continue
        run("train", str(data), "--registry", str(registry), "--version", version, *extra)
    subprocess.run([BATCOMPUTER, "versions", str(registry), "crime"], check=True)
    base = serve_files(plane, registry)
    show(f"Registry served at {base}/")

    step("Apply crime 1.0.0")
    apply(kubectl, batmodel(base, ["1.0.0"], "1.0.0"))
    wait_ready(kubectl)
    get(kubectl)
    predict(plane, "crime-v1", QUESTION_V1)

    step("MINOR release 1.1.0 (new parameters): rolls crime-v1 in place, no downtime")
    apply(kubectl, batmodel(base, ["1.1.0"], "1.1.0"))
    wait_ready(kubectl)
    predict(plane, "crime-v1", QUESTION_V1)

    step("MAJOR release 2.0.0 (adds the `place` input): runs beside 1.x")
    apply(kubectl, batmodel(base, ["1.1.0", "2.0.0"], "1.1.0"))
    wait_ready(kubectl)
    get(kubectl)
    predict(plane, "crime-v1", QUESTION_V1)
    predict(plane, "crime-v2", QUESTION_V2)
    predict(plane, "crime-v2", QUESTION_V1)
    predict(plane, "crime", QUESTION_V1)

    step("Promote 2.0.0: the stable Service `crime` now routes to v2")
    show(kubectl("patch", "bm", "crime", "--type=merge", "-p", '{"spec":{"promoted":"2.0.0"}}',
                 namespace=NAMESPACE).stdout.strip())
    wait_ready(kubectl)
    predict(plane, "crime", QUESTION_V2)
    get(kubectl)

    step("Roll back: promote 1.1.0 again")
    show(kubectl("patch", "bm", "crime", "--type=merge", "-p", '{"spec":{"promoted":"1.1.0"}}',
                 namespace=NAMESPACE).stdout.strip())
    wait_ready(kubectl)
    predict(plane, "crime", QUESTION_V1)
    step("Canary: MINOR 1.2.0 takes 25 %, then 50 % of crime-v1's traffic, judged on its "
         "metrics at each step, then completes on its own pods")
    canary_chapter(plane, kubectl, base)

    show("$ kubectl get events -n demo --field-selector involvedObject.kind=BatModel")
    show(kubectl("get", "events", "--field-selector", "involvedObject.kind=BatModel",
                 "--sort-by=.lastTimestamp", namespace=NAMESPACE).stdout.rstrip())

    if runtime == "podman":
        step("Every pod ran as a container from the project's images, as uid 10001")
        show_containers()

    step("Done. Everything keeps running so you can look around:")
    show(f"eval \"$({BATCOMPUTER} testenv --dir {CLUSTER} env)\"")
    show("kubectl get bm -n demo -o wide; kubectl describe bm crime -n demo")
    for service in ("crime", "crime-v1", "crime-v2"):
        for url in service_urls(plane, NAMESPACE, service):
            show(f"{service:<9} {url}/api/predict   Swagger UI {url}/api/docs")
    show(f"operator log: {operator_log}; component logs: {plane.logs}/; pod logs: {CLUSTER}/pods/")
    show("Stop it all: make demo-down")
    return 0


if __name__ == "__main__":
    sys.exit(main())
