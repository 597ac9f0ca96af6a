"""Canary releases inside a MAJOR on the real control plane, with container pods, under load.

The candidates are real artifacts: 1.1.0 (other parameters, a good one), and variants made
with the project's own artifact format: a slow one (800 trees, answered by the estimator:
every version here takes an unbounded month, so none is tabulated and all keep one API),
one whose every prediction fails, and one with its probabilities swapped (the predictions
differ strongly). Shares are measured from the answers' X-Model-Version header, with
clients spreading requests over the ready endpoints as kube-proxy does.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from testkit import (
    Kubectl,
    Load,
    OperatorProcess,
    condition,
    get,
    service_urls,
    wait_for,
    wait_model_ready,
)

from batcomputer.cli import main as cli
from batcomputer.testenv.cluster import ControlPlane
from batcomputer.testenv.harness import serve_files

pytestmark = pytest.mark.e2e

REPLICAS = 9  # 1 candidate pod beside 9 is 10 %, 9 beside 9 is 50 %
ROLLOUT = {"strategy": "Canary", "steps": [10, 50], "interval": "8s",
           "analysis": {"minRequests": 30, "maxErrorRate": 0.05, "maxLatencyP99Ms": 40,
                        "maxPredictionShift": 0.4}}


def _resign(folder: Path, **changes: Any) -> None:
    """Rewrite metadata.json after editing files: new version, digests of every file."""
    meta = json.loads((folder / "metadata.json").read_text())
    meta.update(changes)
    meta["files"] = {name: "sha256:" + hashlib.sha256((folder / name).read_bytes()).hexdigest()
                     for name in meta["files"] if (folder / name).exists()}
    (folder / "metadata.json").chmod(0o644)
    (folder / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True))


def _variant(registry: Path, source: Path, version: str) -> Path:
    """A copy with its pickles only: the variants below edit model.pkl, and their servers
    answer through predict_proba (the BatModels here allow pickles)."""
    folder = registry / "crime" / version
    shutil.copytree(source, folder)
    for path in folder.iterdir():
        path.chmod(0o644)
    for name in ("model.onnx", "lookup.json", "flags.json"):
        (folder / name).unlink()
    _resign(folder)
    return folder


def _estimator_mode(folder: Path) -> None:
    """Month without an upper bound: the input space is not finite, so every request calls
    the estimator (as for any model with a continuous input)."""
    meta = json.loads((folder / "metadata.json").read_text())
    for item in meta["schema"]["inputs"]:
        if item["name"] == "month":
            item.pop("maximum", None)
            item["type"] = "number"
    (folder / "metadata.json").chmod(0o644)
    (folder / "metadata.json").write_text(json.dumps(meta))


@pytest.fixture(scope="module")
def variants(tmp_path_factory: pytest.TempPathFactory, model_registry: Path, crime_data: Path) -> Path:
    registry = tmp_path_factory.mktemp("canary-registry")
    registry.chmod(0o755)
    # Every version of MAJOR 1 here keeps one API (month without an upper bound, so that
    # the slow one is slow): the operator and its servers refuse a MINOR that changes it.
    for version in ("1.0.0", "1.1.0"):
        _estimator_mode(_variant(registry, model_registry / "crime" / version, version))
    # Slow: 800 trees through the estimator on every request.
    heavy = tmp_path_factory.mktemp("heavy")
    assert cli(["-q", "train", str(crime_data), "--registry", str(heavy), "--version", "1.0.0",
                "--param", "n_estimators=800"]) == 0
    slow = _variant(registry, heavy / "crime" / "1.0.0", "1.2.0")
    _estimator_mode(slow)
    _resign(slow, version="1.2.0")
    # Failing: every prediction raises inside the estimator (a 500 from the server).
    failing = _variant(registry, model_registry / "crime" / "1.0.0", "1.3.0")
    _estimator_mode(failing)
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    estimator = pickle.loads((failing / "model.pkl").read_bytes())
    (failing / "model.pkl").write_bytes(pickle.dumps(Pipeline([
        ("broken", FunctionTransformer(str.upper)), ("model", estimator)])))
    _resign(failing, version="1.3.0")
    # Swapped: same API, loads and answers, but each probability is the other label's.
    swapped = _variant(registry, model_registry / "crime" / "1.0.0", "1.4.0")
    _estimator_mode(swapped)
    forest = pickle.loads((swapped / "model.pkl").read_bytes())
    for tree in forest.estimators_:
        tree.tree_.value[:] = tree.tree_.value[:, :, ::-1].copy()
    (swapped / "model.pkl").write_bytes(pickle.dumps(forest))
    _resign(swapped, version="1.4.0")
    # Two more good ones, to decide by hand.
    for version in ("1.5.0", "1.6.0"):
        good = _variant(registry, model_registry / "crime" / "1.1.0", version)
        _estimator_mode(good)
        _resign(good, version=version)
    return registry


@pytest.fixture(scope="module")
def base(control_plane: ControlPlane, variants: Path) -> str:
    return serve_files(control_plane, variants, name="canary-files")


def questions(cp: ControlPlane, ns: str) -> list[dict[str, Any]]:
    """500 different valid inputs: prediction shift is judged on the spread of answers."""
    params = requests.get(service_urls(cp, ns, "crime-v1")[0] + "/api/predict/params", timeout=5).json()
    months = range(params["month"]["minimum"], 13)  # the months of a year (it takes any number)
    every = [{"force": f, "crime": c, "month": m} for f in params["force"]["values"]
             for c in params["crime"]["values"] for m in months]
    return random.Random(7).sample(every, 500)


def apply(kubectl: Kubectl, ns: str, base: str, version: str) -> None:
    doc = {"apiVersion": "batcomputer.io/v1alpha1", "kind": "BatModel", "metadata": {"name": "crime"},
           "spec": {"replicas": REPLICAS, "rollout": ROLLOUT,
                    "versions": [{"version": version, "artifact": f"{base}/crime/{version}/",
                                  "allowPickle": True}]}}
    kubectl("apply", "-f", "-", input=yaml.safe_dump(doc), namespace=ns)


def canary(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = get(kubectl, ns, "bm", "crime").get("status", {}).get("canaries") or []
    return found[0] if found else {}


def aborted(kubectl: Kubectl, ns: str, version: str) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        c = canary(kubectl, ns)
        return c if c.get("candidate") == version and c.get("phase") == "Aborted" else None
    return wait_for(ended, timeout=120, what=f"canary {version} aborted", interval=0.5)


@pytest.fixture(scope="module")
def running(control_plane: ControlPlane, kubectl: Kubectl, operator: OperatorProcess, namespace: str,
            base: str) -> str:
    apply(kubectl, namespace, base, "1.0.0")
    wait_model_ready(kubectl, namespace, timeout=180)
    return namespace


def test_a_good_candidate_steps_up_under_load_and_completes_on_its_own_pods(
        control_plane: ControlPlane, kubectl: Kubectl, running: str, base: str) -> None:
    ns = running
    steps: list[tuple[float, int]] = []  # (when the step's pods were all Ready, weight)
    timeline: list[tuple[float, str]] = []  # (when, what the canary said)
    candidate_pods: set[str] = set()
    with Load(control_plane, ns, "crime-v1", clients=3, pause=0.002,
              rows=questions(control_plane, ns)) as load:
        time.sleep(1)
        apply(kubectl, ns, base, "1.1.0")

        def completed() -> bool:
            c = canary(kubectl, ns)
            said = f"{c.get('phase')} {c.get('weight')} % {c.get('share')}" if c else "none"
            if not timeline or timeline[-1][1] != said:
                timeline.append((time.monotonic(), said))
            if c.get("phase") == "Running" and c.get("stepStarted") and (
                    not steps or steps[-1][1] != c["weight"]):
                steps.append((time.monotonic(), int(c["weight"])))
            if c.get("phase") == "Running" and c.get("weight") == 50 and c.get("stepStarted"):
                candidate_pods.update(p["metadata"]["uid"] for p in get(
                    kubectl, ns, "pods", "-l", "batcomputer.io/version=1.1.0")["items"])
            bm = get(kubectl, ns, "bm", "crime")
            return not c and bm["status"].get("serving") == "1.1.0" and condition(
                bm, "Ready").get("status") == "True"
        wait_for(completed, timeout=240, what="the canary to complete", interval=0.3)
    for when, said in timeline:
        print(f"\n  +{when - timeline[0][0]:5.1f}s {said}", end="")
    assert [w for _, w in steps] == [10, 50], steps
    completing = next(when for when, said in timeline if said.startswith("Completing"))
    shares = []
    for (start, weight), end in zip(steps, [steps[1][0], completing], strict=True):
        window = [r for r in load.results if start + 1 <= r[0] <= end - 1 and r[2]]
        share = sum(1 for r in window if r[1] == "1.1.0") / len(window)
        shares.append(share)
        print(f"\n  step {weight} %: candidate answered {share:.1%} of {len(window)} requests")
        assert abs(share * 100 - weight) <= 5, (weight, share)
    print(f"  canary 1.0.0 -> 1.1.0: {load.ok} answered, {load.failed} failed")
    assert load.failed == 0, load.errors[:10]
    # Completing restarted no pod: the MAJOR now runs on the canary's own pods.
    pods = get(kubectl, ns, "pods", "-l", "batcomputer.io/major=1")["items"]
    live = {p["metadata"]["uid"] for p in pods if not p["metadata"].get("deletionTimestamp")}
    assert candidate_pods and candidate_pods <= live, (len(candidate_pods), len(live))
    assert all(s.get("restartCount", 0) == 0 for p in pods for s in p["status"].get("containerStatuses", []))
    assert not get(kubectl, ns, "deployments", "-l", "app.kubernetes.io/component=canary")["items"]
    history = get(kubectl, ns, "bm", "crime")["status"]["history"]
    assert [(e["target"], e["version"]) for e in history if e["target"] == "v1"] == [
        ("v1", "1.0.0"), ("v1", "1.1.0")]


@pytest.mark.parametrize(("version", "gate"), [
    ("1.2.0", "latency p99"), ("1.3.0", "error rate"), ("1.4.0", "prediction shift")])
def test_a_bad_candidate_is_aborted_by_its_own_gate_and_the_current_version_loses_nothing(
        control_plane: ControlPlane, kubectl: Kubectl, running: str, base: str, version: str,
        gate: str) -> None:
    ns = running
    with Load(control_plane, ns, "crime-v1", clients=3, pause=0.002,
              rows=questions(control_plane, ns)) as load:
        apply(kubectl, ns, base, version)
        ended = aborted(kubectl, ns, version)
        wait_for(lambda: not get(kubectl, ns, "pods", "-l", f"batcomputer.io/version={version}")["items"],
                 timeout=60, what="the candidate's pods to go")
        time.sleep(1)
    print(f"\n  {version}: {ended['message']} ({ended.get('figures')})")
    assert ended["message"].startswith(f"canary {version} aborted at 10 %: {gate}")
    current = [r for r in load.results if r[1] == "1.1.0"]
    assert current and all(r[2] for r in current), [r[3] for r in current if not r[2]][:5]
    assert all(r[2] for r in load.results if r[1] != version), load.errors[:5]
    bm = get(kubectl, ns, "bm", "crime")
    assert bm["status"]["serving"] == "1.1.0"
    assert condition(bm, "Degraded")["reason"] == "CanaryAborted"
    assert gate in condition(bm, "Degraded")["message"]


def test_a_canary_is_decided_by_hand(control_plane: ControlPlane, kubectl: Kubectl, running: str,
                                     base: str) -> None:
    ns = running

    def admin(*args: str) -> int:
        """As a user runs it: the command, with the kubeconfig."""
        env = {**os.environ, "KUBECONFIG": str(control_plane.kubeconfig_path)}
        return subprocess.run([str(Path(sys.executable).parent / "batcomputer"), *args, "-n", ns],
                              env=env, timeout=60, check=False).returncode

    apply(kubectl, ns, base, "1.5.0")
    wait_for(lambda: canary(kubectl, ns).get("candidate") == "1.5.0"
             and canary(kubectl, ns).get("phase") == "Running", timeout=60, what="canary 1.5.0")
    assert admin("canary", "crime", "abort") == 0
    assert aborted(kubectl, ns, "1.5.0")["message"] == "canary 1.5.0 aborted by hand at 10 %"
    assert "batcomputer.io/canary" not in (get(kubectl, ns, "bm", "crime")["metadata"]
                                           .get("annotations") or {})
    apply(kubectl, ns, base, "1.6.0")
    wait_for(lambda: canary(kubectl, ns).get("candidate") == "1.6.0"
             and canary(kubectl, ns).get("phase") == "Running", timeout=60, what="canary 1.6.0")
    assert admin("canary", "crime", "promote") == 0
    wait_for(lambda: get(kubectl, ns, "bm", "crime")["status"].get("serving") == "1.6.0"
             and not canary(kubectl, ns), timeout=120, what="1.6.0 promoted by hand")
    printed = kubectl("get", "bm", "crime", namespace=ns).stdout
    assert "CANARY" in printed.splitlines()[0]
