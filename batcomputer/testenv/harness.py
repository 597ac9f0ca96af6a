"""What tests, benchmarks and the demo run beside the control plane: kubectl, the
operator as its own process with its ServiceAccount's token, a model file server,
and Service endpoints resolved to the podlet's local addresses."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml

from batcomputer.testenv.cluster import ControlPlane, TestEnvError, free_port, kubeconfig
from batcomputer.testenv.podlet import local_address

OPERATOR_NAMESPACE = "batcomputer-system"
OPERATOR_ACCOUNT = "batcomputer-operator"


class Kubectl:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        if plane.bin_dir is None:
            raise TestEnvError("the control plane is not started")
        self.binary = str(plane.bin_dir / "kubectl")

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 namespace: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [self.binary, f"--kubeconfig={self.plane.kubeconfig_path}", *args]
        if namespace:
            command.append(f"--namespace={namespace}")
        done = subprocess.run(command, input=input, capture_output=True, text=True, timeout=120,
                              check=False)
        if check and done.returncode != 0:
            raise TestEnvError(f"kubectl {' '.join(args)} failed: {done.stderr.strip()}")
        return done


def install(kubectl: Kubectl, repo: Path) -> None:
    """The CRD, namespace, RBAC and webhook configuration from crds/ and manifests/, as an
    admin installs them (the operator Deployment itself is replaced by `OperatorProcess`)."""
    kubectl("apply", "-k", str(repo / "crds"))
    kubectl("apply", "-f", str(repo / "manifests" / "namespace.yaml"),
            "-f", str(repo / "manifests" / "rbac.yaml"),
            "-f", str(repo / "manifests" / "webhook.yaml"))
    kubectl("wait", "--for=condition=Established", "crd/batmodels.batcomputer.io", "--timeout=60s")


class OperatorProcess:
    """`batcomputer operator` as a separate process, authenticated as the
    batcomputer-operator ServiceAccount, so the RBAC in manifests/ is all it has."""

    def __init__(self, plane: ControlPlane, kubectl: Kubectl, folder: Path,
                 namespaces: str = "", resync_seconds: float = 2, name: str = "operator",
                 env: dict[str, str] | None = None) -> None:
        token = kubectl("create", "token", OPERATOR_ACCOUNT, "-n", OPERATOR_NAMESPACE,
                        "--duration=24h").stdout.strip()
        self.metrics_port = free_port()
        self.plane = plane
        self.kubeconfig = folder / "operator.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig(plane.state.server, plane.ca_path,
                                                             token, OPERATOR_ACCOUNT)))
        self.kubeconfig.chmod(0o600)
        self.log = folder / "operator.log"
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                    "BATCOMPUTER_OPERATOR_NAMESPACES": namespaces,
                    "BATCOMPUTER_OPERATOR_RESYNC_SECONDS": str(resync_seconds),
                    "BATCOMPUTER_OPERATOR_SERVER_WORKERS": "1",
                    # Pod IPs 10.N.x.y are served on 127.N.x.y here (canary analysis reads
                    # the pods' /metrics).
                    "BATCOMPUTER_OPERATOR_POD_ADDRESS_MAP": "10.0.0.0/8=127.0.0.0/8",
                    "BATCOMPUTER_OPERATOR_LIVENESS_ENDPOINT":
                        f"http://127.0.0.1:{free_port()}/healthz",
                    "BATCOMPUTER_OPERATOR_METRICS_ADDR": "127.0.0.1",
                    "BATCOMPUTER_OPERATOR_METRICS_PORT": str(self.metrics_port),
                    # The admission webhook on loopback, where the API server calls it.
                    "BATCOMPUTER_OPERATOR_WEBHOOK_HOST": "127.0.0.1",
                    "BATCOMPUTER_OPERATOR_WEBHOOK_ADDR": "127.0.0.1",
                    "BATCOMPUTER_OPERATOR_WEBHOOK_PORT": str(free_port()),
                    **(env or {})}
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = self.plane.spawn(self.name, [sys.executable, "-m", "batcomputer.cli",
                                                 "operator"], env=self.env, log=self.log)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def metrics(self) -> str:
        """The operator's own Prometheus metrics (operator.metrics)."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                    timeout=5) as reply:
            text: str = reply.read().decode()
            return text

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def serve_files(plane: ControlPlane, folder: Path, name: str = "model-files") -> str:
    """Serve a registry folder over HTTP on loopback (stopped with the control plane)."""
    port = free_port()
    proc = plane.spawn(name, [sys.executable, "-m", "http.server", str(port), "--bind",
                              "127.0.0.1", "--directory", str(folder)],
                       log=plane.logs / f"{name}.log")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return f"http://127.0.0.1:{port}"
        time.sleep(0.05)
    raise TestEnvError(f"the file server for {folder} did not start:\n{plane.tail(name)}")


def service_urls(plane: ControlPlane, namespace: str, service: str) -> list[str]:
    """Ready endpoints of a Service, from the EndpointSlices the real controller keeps,
    as URLs of the podlet's local addresses."""
    slices = plane.get(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices"
                       f"?labelSelector=kubernetes.io/service-name={service}").json()["items"]
    return [f"http://{local_address(address)}:{item['ports'][0]['port']}"
            for item in slices for ep in item.get("endpoints") or []
            if ep["conditions"].get("ready") for address in ep["addresses"]]
