"""Start and stop the local control plane.

Every component is a child process bound to 127.0.0.1 on a free port, with its
log in ``<dir>/logs/``. ``<dir>/state.json`` records what was started so that
another process (``batcomputer testenv down``) can stop it by PID.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from batcomputer.errors import UserError
from batcomputer.testenv.podlet import NODE_NAME, cluster_id

PODLET_NODE = NODE_NAME
RUNTIMES = ("podman", "process")

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO_ROOT / "hack" / "build-controlplane.sh"
IMAGES_SCRIPT = REPO_ROOT / "hack" / "build-images.sh"
SA_ISSUER = "https://kubernetes.default.svc.cluster.local"
KWOK_NODE = "kwok-node-0"
KWOK_TAINT = {"key": "kwok.x-k8s.io/node", "value": "fake", "effect": "NoSchedule"}
# Identities in the static token file: name -> groups.
USERS: dict[str, list[str]] = {
    "admin": ["system:masters"],
    "system:kube-controller-manager": [],
    "system:kube-scheduler": [],
    "kwok": ["system:masters"],
    "podlet": ["system:masters"],
}


class TestEnvError(UserError, RuntimeError):
    """The control plane could not be built, started or reached."""


def default_runtime() -> str:
    """$BATCOMPUTER_TESTENV_RUNTIME, or podman: pods run from the real images."""
    runtime = os.environ.get("BATCOMPUTER_TESTENV_RUNTIME", "podman")
    if runtime not in RUNTIMES:
        raise TestEnvError(f"BATCOMPUTER_TESTENV_RUNTIME={runtime!r}: use one of {', '.join(RUNTIMES)}")
    return runtime


def default_dir() -> Path:
    return Path(os.environ.get("BATCOMPUTER_TESTENV_DIR",
                               Path(os.environ.get("TMPDIR", "/tmp")) / f"batcomputer-testenv-{os.getuid()}"))


def binaries(build: bool = True) -> Path:
    """The folder with the pinned binaries: $BATCOMPUTER_CONTROLPLANE_BIN, or what
    hack/build-controlplane.sh builds (or finds already built) in the user cache."""
    override = os.environ.get("BATCOMPUTER_CONTROLPLANE_BIN")
    if override:
        return Path(override)
    if not BUILD_SCRIPT.is_file():
        raise TestEnvError(f"{BUILD_SCRIPT} not found; set BATCOMPUTER_CONTROLPLANE_BIN")
    if not build:
        raise TestEnvError("control-plane binaries are not built; run hack/build-controlplane.sh")
    started = time.monotonic()
    done = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TestEnvError(f"hack/build-controlplane.sh failed:\n{done.stderr[-4000:]}")
    folder = Path(done.stdout.strip().splitlines()[-1])
    log.info("Control-plane binaries in %s (%.1fs)", folder, time.monotonic() - started)
    return folder


def images() -> list[str]:
    """Build (or find up to date, in a few seconds) the server and operator images with
    hack/build-images.sh, so that podman pods run the code of this checkout."""
    if not IMAGES_SCRIPT.is_file():
        raise TestEnvError(f"{IMAGES_SCRIPT} not found")
    started = time.monotonic()
    done = subprocess.run([str(IMAGES_SCRIPT)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise TestEnvError(f"hack/build-images.sh failed:\n{done.stderr[-4000:]}")
    built = done.stdout.split()
    log.info("Images %s (%.1fs)", ", ".join(built), time.monotonic() - started)
    return built


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kubeconfig(server: str, ca: Path, token: str, user: str = "admin") -> dict[str, Any]:
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "batcomputer-testenv",
        "clusters": [{"name": "batcomputer-testenv",
                      "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "batcomputer-testenv",
                      "context": {"cluster": "batcomputer-testenv", "user": user,
                                  "namespace": "default"}}],
    }


@dataclass
class State:
    dir: str
    server: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    commands: dict[str, str] = field(default_factory=dict)
    runtime: str = ""
    """The podlet's runtime ("" when there is no podlet)."""

    @property
    def path(self) -> Path:
        return Path(self.dir) / "state.json"

    def save(self) -> None:
        self.path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> State | None:
        path = folder / "state.json"
        if not path.is_file():
            return None
        return cls(**json.loads(path.read_text()))


class ControlPlane:
    """``with ControlPlane(dir) as cp:`` starts everything and stops it on exit."""

    def __init__(self, folder: Path | None = None, bin_dir: Path | None = None,
                 podlet: bool = True, tie_to_parent: bool = False,
                 runtime: str | None = None, build_images: bool = True) -> None:
        """``podlet=False``: no podlet node, and the kwok node takes every pod (for
        benchmarks of the control loop, where pods only need to look Ready).
        ``runtime``: how the podlet runs pods, ``podman`` (containers from the pods'
        images) or ``process`` (local processes from this virtualenv); default
        `default_runtime()`. With podman, the project's images are built first (cached)
        unless ``build_images`` is False.
        ``tie_to_parent``: everything dies with this process, even if it is killed
        (tests); otherwise it keeps running until `stop` (``testenv up``, the demo)."""
        self.dir = (folder or default_dir()).resolve()
        self.bin_dir = bin_dir
        self.podlet = podlet
        self.runtime = (runtime or default_runtime()) if podlet else ""
        if self.runtime and self.runtime not in RUNTIMES:
            raise TestEnvError(f"unknown runtime {self.runtime!r}: use one of {', '.join(RUNTIMES)}")
        self.tie_to_parent = tie_to_parent
        self.build_images = build_images
        self.state = State(dir=str(self.dir), runtime=self.runtime)
        self.tokens: dict[str, str] = {}
        self.timings: dict[str, float] = {}
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    # ------------------------------------------------------------------ paths
    @property
    def kubeconfig_path(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def ca_path(self) -> Path:
        return self.dir / "pki" / "ca.crt"

    @property
    def logs(self) -> Path:
        return self.dir / "logs"

    def admin_token(self) -> str:
        return self.tokens["admin"]

    # ------------------------------------------------------------------ start
    def start(self) -> ControlPlane:
        started = time.monotonic()
        existing = State.load(self.dir)
        if existing and any(_alive(pid) for pid in existing.pids.values()):
            raise TestEnvError(f"a control plane is already running from {self.dir}; "
                               "`batcomputer testenv down` first")
        if self.dir.exists():
            shutil.rmtree(self.dir)
        self.logs.mkdir(parents=True)
        bin_dir = self.bin_dir or binaries()
        self.bin_dir = bin_dir
        if self.runtime == "podman" and self.build_images:
            started_images = time.monotonic()
            images()
            self.timings["images"] = time.monotonic() - started_images
        try:
            self._start_all(bin_dir)
        except BaseException:
            self.stop(remove=False)
            raise
        self.timings["total"] = time.monotonic() - started
        log.info("Control plane ready in %.1fs at %s (kubeconfig %s, logs %s)",
                 self.timings["total"], self.state.server, self.kubeconfig_path, self.logs)
        return self

    def _start_all(self, bin_dir: Path) -> None:
        from batcomputer.testenv import pki

        d = self.dir
        pki.make_pki(d / "pki", hosts=["localhost", "kubernetes", "kubernetes.default",
                                       "kubernetes.default.svc",
                                       "kubernetes.default.svc.cluster.local"],
                     ips=["127.0.0.1", "10.96.0.1"])
        self.tokens = {user: secrets.token_hex(16) for user in USERS}
        (d / "tokens.csv").write_text("".join(
            f'{self.tokens[u]},{u},{u},"{",".join(groups)}"\n' for u, groups in USERS.items()))
        (d / "tokens.csv").chmod(0o600)
        etcd_port, etcd_peer, api_port = free_port(), free_port(), free_port()
        self.state.server = f"https://127.0.0.1:{api_port}"
        for user in USERS:
            name = "admin" if user == "admin" else user.removeprefix("system:")
            path = d / f"{name}.kubeconfig"
            path.write_text(yaml.safe_dump(kubeconfig(self.state.server, self.ca_path,
                                                      self.tokens[user], user)))
            path.chmod(0o600)
        p = d / "pki"

        self._spawn("etcd", [
            str(bin_dir / "etcd"), "--name=default", f"--data-dir={d / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_port}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_port}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=default=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync", "--log-level=warn"])
        self._wait("etcd", lambda: requests.get(f"http://127.0.0.1:{etcd_port}/health",
                                                timeout=1).json().get("health") == "true", 30)

        self._spawn("kube-apiserver", [
            str(bin_dir / "kube-apiserver"), f"--etcd-servers=http://127.0.0.1:{etcd_port}",
            "--bind-address=127.0.0.1", "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}", f"--cert-dir={d / 'apiserver'}",
            f"--tls-cert-file={p / 'apiserver.crt'}", f"--tls-private-key-file={p / 'apiserver.key'}",
            f"--client-ca-file={p / 'ca.crt'}", f"--token-auth-file={d / 'tokens.csv'}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SA_ISSUER}",
            f"--service-account-key-file={p / 'sa.pub'}",
            f"--service-account-signing-key-file={p / 'sa.key'}",
            "--service-cluster-ip-range=10.96.0.0/16", "--endpoint-reconciler-type=none",
            "--allow-privileged=true", "--profiling=false", "--v=0"])
        self._wait("kube-apiserver", lambda: self.get("/readyz").status_code == 200, 90)

        self._spawn("kube-controller-manager", [
            str(bin_dir / "kube-controller-manager"),
            f"--kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
            f"--authentication-kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
            f"--authorization-kubeconfig={d / 'kube-controller-manager.kubeconfig'}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cert-dir={d / 'kube-controller-manager'}",
            "--use-service-account-credentials=true",
            f"--service-account-private-key-file={p / 'sa.key'}", f"--root-ca-file={p / 'ca.crt'}",
            f"--cluster-signing-cert-file={p / 'ca.crt'}",
            f"--cluster-signing-key-file={p / 'ca.key'}",
            # The default client rate limit (20 QPS) throttles ReplicaSet and Pod
            # creation long before a 2-core machine is busy.
            "--kube-api-qps=200", "--kube-api-burst=400",
            "--leader-elect=false", "--profiling=false", "--v=0"])
        self._spawn("kube-scheduler", [
            str(bin_dir / "kube-scheduler"), f"--kubeconfig={d / 'kube-scheduler.kubeconfig'}",
            f"--authentication-kubeconfig={d / 'kube-scheduler.kubeconfig'}",
            f"--authorization-kubeconfig={d / 'kube-scheduler.kubeconfig'}",
            "--bind-address=127.0.0.1", f"--secure-port={free_port()}",
            f"--cert-dir={d / 'kube-scheduler'}", "--leader-elect=false", "--profiling=false",
            "--kube-api-qps=200", "--kube-api-burst=400", "--v=0"])
        self._spawn("kwok", [
            str(bin_dir / "kwok"), f"--kubeconfig={d / 'kwok.kubeconfig'}",
            "--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
            "--node-ip=127.0.0.1", f"--server-address=127.0.0.1:{free_port()}",
            "--cidr=10.244.0.0/16", f"--config={bin_dir.parent / 'kwok-stages.yaml'}"])
        self.create_kwok_node(tainted=self.podlet)
        if self.podlet:
            self._spawn("podlet", [sys.executable, "-m", "batcomputer.testenv.podlet",
                                   f"--kubeconfig={d / 'podlet.kubeconfig'}", f"--dir={d / 'pods'}",
                                   f"--runtime={self.runtime}"])
        self._wait("kube-controller-manager", self._default_service_account_exists, 90)
        self._wait("kwok", lambda: self._node_ready(KWOK_NODE), 60)
        if self.podlet:
            self._wait("podlet", lambda: self._node_ready(PODLET_NODE), 60)

    def _spawn(self, name: str, command: list[str]) -> None:
        log.info("Starting %s", name)
        self._children[name] = self.spawn(name, command)

    def spawn(self, name: str, command: list[str], env: dict[str, str] | None = None,
              log: Path | None = None) -> subprocess.Popen[bytes]:
        """Start a process that belongs to this environment: recorded in state.json, so
        `stop` (and `batcomputer testenv down`) stops it too."""
        with (log or self.logs / f"{name}.log").open("ab") as handle:
            proc = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True,
                                    cwd=self.dir, env=env,
                                    preexec_fn=die_with_parent if self.tie_to_parent else None)
        self.state.pids[name] = proc.pid
        self.state.commands[name] = command[0]
        self.state.save()
        return proc

    def _wait(self, name: str, ready: Callable[[], bool], timeout: float) -> None:
        started = time.monotonic()
        deadline = started + timeout
        proc = self._children.get(name)
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise TestEnvError(f"{name} exited with {proc.returncode}:\n{self.tail(name)}")
            with contextlib.suppress(requests.RequestException, ValueError, KeyError):
                if ready():
                    self.timings[name] = time.monotonic() - started
                    log.info("%s ready (%.1fs)", name, self.timings[name])
                    return
            time.sleep(0.2)
        raise TestEnvError(f"{name} not ready after {timeout:.0f}s:\n{self.tail(name)}")

    def tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        if not path.is_file():
            return "(no log)"
        text = path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"  {name}| {line}" for line in text)

    # ------------------------------------------------------------------ API helpers
    def request(self, method: str, path: str, token: str | None = "", **kwargs: Any) -> requests.Response:
        headers = kwargs.pop("headers", {})
        token = self.admin_token() if token == "" else token
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.state.server + path, headers=headers,
                                verify=str(self.ca_path), timeout=10, **kwargs)

    def get(self, path: str, token: str | None = "") -> requests.Response:
        return self.request("GET", path, token)

    def _default_service_account_exists(self) -> bool:
        return self.get("/api/v1/namespaces/default/serviceaccounts/default").status_code == 200

    def create_kwok_node(self, name: str = KWOK_NODE, tainted: bool = True) -> None:
        node = {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                         "annotations": {"kwok.x-k8s.io/node": "fake",
                                         "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "type": "kwok"}},
            "spec": {"taints": [KWOK_TAINT] if tainted else []},
        }
        response = self.request("POST", "/api/v1/nodes", json=node)
        if response.status_code not in (201, 409):
            raise TestEnvError(f"creating node {name}: {response.status_code} {response.text}")

    def _node_ready(self, name: str) -> bool:
        got = self.get(f"/api/v1/nodes/{name}")
        if got.status_code != 200:  # not registered yet (the body is a Status, not a Node)
            return False
        node = got.json()
        return any(c["type"] == "Ready" and c["status"] == "True"
                   for c in node.get("status", {}).get("conditions", []))

    # ------------------------------------------------------------------ stop
    def stop(self, remove: bool = True) -> None:
        stop_state(self.state)
        if remove:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        return {"KUBECONFIG": str(self.kubeconfig_path),
                "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """In a child between fork and exec: ask Linux to send ``sig`` when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, int(sig), 0, 0, 0)  # PR_SET_PDEATHSIG


def _alive(pid: int) -> bool:
    """Running (a zombie, which an init that does not reap leaves behind, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


def _is_ours(pid: int, command: str) -> bool:
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() == command
    return False


def stop_state(state: State, timeout: float = 10) -> list[str]:
    """Stop what a state file says was started (reverse order), by PID; SIGKILL stragglers;
    then remove any container the podlet could not stop itself."""
    stopped = []
    for name, pid in reversed(list(state.pids.items())):
        command = state.commands.get(name, "")
        if not _alive(pid) or (command and not _is_ours(pid, command)):
            continue
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        stopped.append(name)
    deadline = time.monotonic() + timeout
    for pid in state.pids.values():
        while _alive(pid) and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0]:
                    break
            time.sleep(0.05)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
    if state.runtime == "podman":
        from batcomputer.testenv.runtime import PodmanRuntime, RuntimeUnavailable

        with contextlib.suppress(RuntimeUnavailable, OSError, subprocess.SubprocessError):
            PodmanRuntime(cluster_id(Path(state.dir) / "pods")).cleanup()
    return stopped

