"""Helpers shared by tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

from batcomputer.testenv.cluster import ControlPlane, kubeconfig
from batcomputer.testenv.cluster import free_port as cluster_free_port

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


class Kubectl:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        assert plane.bin_dir is not None
        self.binary = str(plane.bin_dir / "kubectl")

    def __call__(self, *args: str, input: str | None = None, check: bool = True,
                 namespace: str | None = None) -> subprocess.CompletedProcess[str]:
        command = [self.binary, f"--kubeconfig={self.plane.kubeconfig_path}", *args]
        if namespace:
            command.append(f"--namespace={namespace}")
        done = subprocess.run(command, input=input, capture_output=True, text=True, timeout=60,
                              check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}")
        return done


class OperatorProcess:
    """`batcomputer operator` as a separate process, authenticated as the
    batcomputer-operator ServiceAccount (so the RBAC in manifests/ is what it has)."""

    def __init__(self, plane: ControlPlane, kubectl: Kubectl, folder: Path, namespace: str) -> None:
        token = kubectl("create", "token", "batcomputer-operator", "-n", "batcomputer-system",
                        "--duration=2h").stdout.strip()
        self.kubeconfig = folder / "operator.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig(plane.state.server, plane.ca_path,
                                                             token, "batcomputer-operator")))
        self.log = folder / "operator.log"
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig),
                    "BATCOMPUTER_OPERATOR_NAMESPACES": namespace,
                    "BATCOMPUTER_OPERATOR_RESYNC_SECONDS": "2",
                    "BATCOMPUTER_OPERATOR_SERVER_WORKERS": "1",
                    "BATCOMPUTER_OPERATOR_LIVENESS_ENDPOINT": f"http://127.0.0.1:{cluster_free_port()}/healthz"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "batcomputer.cli", "operator"],
                                         env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
