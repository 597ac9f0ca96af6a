"""A kubelet that runs pods as local processes: the "process node" of the test environment.

kwok simulates nodes whose pods only *look* Running and Ready. For Batcomputer's
own pods that is not enough: a model server that cannot load its artifact must
never become Ready, and apps must get real predictions through real endpoints.
The podlet registers a Node, keeps it Ready, and for every pod bound to it:

- gives the pod an IP 10.245.x.y (``status.podIP``, so the real EndpointSlice
  controller lists it; the API refuses loopback addresses there) that maps one to
  one onto the loopback address 127.245.x.y the process listens on: see
  `local_address`;
- starts the first container as a real process: ``command``/``args`` from the pod
  template, or the image's entrypoint (``batcomputer`` by default), with the
  container's ``env`` plus ``BATCOMPUTER_HOST=<local address>`` (the process's
  "network namespace"; a ``status.podIP`` fieldRef also gives the local address)
  and its own working and temp folders;
- runs the container's HTTP readiness probe against that process and reports
  the Ready condition from it;
- restarts an exited container with back-off (CrashLoopBackOff, with the last
  log line as the message) and, on deletion, stops the process and removes the pod;
- "mounts" emptyDir volumes (a folder of the pod's) and PersistentVolumeClaims bound to
  a hostPath or local PersistentVolume by rewriting paths under their ``mountPath`` in
  the container's environment (there is no mount namespace);

Not emulated: other volume types, liveness probes, resource limits, more than one
container.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as dt
import ipaddress
import itertools
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

log = logging.getLogger("batcomputer.podlet")

NODE_NAME = "batcomputer-proc-0"
NODE_LABELS = {"kubernetes.io/hostname": NODE_NAME, "kubernetes.io/os": "linux",
               "kubernetes.io/arch": "amd64", "type": "process"}
BACKOFF_START, BACKOFF_MAX = 1.0, 20.0
POD_NETWORK = "10.245.0.0"
VAR_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _translate(value: str, mounts: list[tuple[str, str]]) -> str:
    """A container path under a mount -> the same path on this machine."""
    for mount_path, folder in mounts:
        if value == mount_path or value.startswith(mount_path + "/"):
            return folder + value[len(mount_path):]
    return value


def _die_with_podlet() -> None:
    """Pods are the podlet's children: if it is killed, they stop too (SIGTERM)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


def local_address(pod_ip: str) -> str:
    """The loopback address a podlet pod with this IP listens on (10.245.x.y -> 127.245.x.y)."""
    return "127." + pod_ip.split(".", 1)[1]


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    """The few API calls a kubelet needs, as the identity in a kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would override our CA
        self.session.verify = cluster.get("certificate-authority", True)
        self.session.headers["Authorization"] = f"Bearer {config['users'][0]['user']['token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.server + path, timeout=10, **kwargs)

    def merge_patch(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.call("PATCH", path, json=body,
                         headers={"Content-Type": "application/merge-patch+json"})


@dataclass
class Container:
    pod_ip: str
    folder: Path
    process: subprocess.Popen[bytes] | None = None
    started_at: str = ""
    restarts: int = 0
    ready: bool = False
    next_probe: float = 0.0
    last_exit: dict[str, Any] | None = None
    restart_at: float = 0.0
    backoff: float = BACKOFF_START
    last_status: dict[str, Any] = field(default_factory=dict)


class Podlet:
    def __init__(self, api: Api, folder: Path, node: str = NODE_NAME,
                 entrypoint: list[str] | None = None) -> None:
        self.api = api
        self.folder = folder
        self.node = node
        self.entrypoint = entrypoint or [str(Path(sys.executable).parent / "batcomputer")]
        self.pods: dict[str, Container] = {}
        self.ips = (str(ipaddress.ip_address(POD_NETWORK) + i) for i in itertools.count(2)
                    if (i % 256) not in (0, 255))
        self.stopping = threading.Event()

    # ------------------------------------------------------------------ node
    def register(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node, "labels": {**NODE_LABELS,
                                                           "kubernetes.io/hostname": self.node}},
                "spec": {}, "status": self._node_status()}
        response = self.api.call("POST", "/api/v1/nodes", json=node)
        if response.status_code == 409:
            response = self.api.merge_patch(f"/api/v1/nodes/{self.node}/status",
                                            {"status": self._node_status()})
        response.raise_for_status()
        log.info("Registered node %s", self.node)

    def _node_status(self) -> dict[str, Any]:
        stamp = now()
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110"}
        conditions = [{"type": t, "status": "False", "reason": r, "lastHeartbeatTime": stamp,
                       "lastTransitionTime": stamp}
                      for t, r in (("MemoryPressure", "KubeletHasSufficientMemory"),
                                   ("DiskPressure", "KubeletHasNoDiskPressure"),
                                   ("PIDPressure", "KubeletHasSufficientPID"))]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": "podlet is running pods as local processes",
                           "lastHeartbeatTime": stamp, "lastTransitionTime": stamp})
        return {"capacity": capacity, "allocatable": capacity, "conditions": conditions,
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.node}],
                "nodeInfo": {"kubeletVersion": "podlet", "operatingSystem": "linux",
                             "architecture": "amd64", "containerRuntimeVersion": "process://",
                             "kernelVersion": os.uname().release, "osImage": "local processes",
                             "kubeProxyVersion": "", "machineID": "", "systemUUID": "",
                             "bootID": ""}}

    def heartbeat(self) -> None:
        ready = {"type": "Ready", "status": "True", "reason": "KubeletReady",
                 "lastHeartbeatTime": now()}
        self.api.call("PATCH", f"/api/v1/nodes/{self.node}/status",
                      json={"status": {"conditions": [ready]}},
                      headers={"Content-Type": "application/strategic-merge-patch+json"})

    # ------------------------------------------------------------------ pods
    def sync(self) -> None:
        response = self.api.call("GET", "/api/v1/pods",
                                 params={"fieldSelector": f"spec.nodeName={self.node}"})
        response.raise_for_status()
        seen = set()
        for pod in response.json()["items"]:
            uid = pod["metadata"]["uid"]
            seen.add(uid)
            try:
                self._sync_pod(uid, pod)
            except requests.RequestException as exc:
                log.warning("Pod %s: %s", pod["metadata"]["name"], exc)
        for uid in set(self.pods) - seen:  # deleted behind our back
            self._stop(self.pods.pop(uid))

    def _sync_pod(self, uid: str, pod: dict[str, Any]) -> None:
        meta, spec = pod["metadata"], pod["spec"]
        where = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        if meta.get("deletionTimestamp"):
            container = self.pods.pop(uid, None)
            if container:
                self._stop(container, grace=min(int(spec.get("terminationGracePeriodSeconds", 30)), 10))
            self.api.call("DELETE", where, json={"gracePeriodSeconds": 0,
                                                 "preconditions": {"uid": uid}})
            log.info("Deleted pod %s/%s", meta["namespace"], meta["name"])
            return
        container = self.pods.get(uid)
        if container is None:
            container = Container(pod_ip=next(self.ips),
                                  folder=self.folder / f"{meta['namespace']}_{meta['name']}")
            self.pods[uid] = container
            self._start(pod, container)
        self._check(pod, container)
        status = self._pod_status(pod, container)
        if status != container.last_status:
            response = self.api.merge_patch(where + "/status", {"status": status})
            if response.ok:
                container.last_status = status

    def _start(self, pod: dict[str, Any], container: Container) -> None:
        spec = pod["spec"]["containers"][0]
        command = (spec.get("command") or self.entrypoint) + spec.get("args", [])
        env = {k: v for k, v in os.environ.items()
               if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "HOME")}
        tmp = container.folder / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        fields = {"metadata.name": pod["metadata"]["name"],
                  "metadata.namespace": pod["metadata"]["namespace"],
                  "status.podIP": local_address(container.pod_ip), "spec.nodeName": self.node}
        for item in spec.get("env", []):
            if "value" in item:
                env[item["name"]] = str(item["value"])
            elif ref := item.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath"):
                env[item["name"]] = fields.get(ref, "")
        env.update(HOSTNAME=pod["metadata"]["name"], TMPDIR=str(tmp),
                   BATCOMPUTER_HOST=local_address(container.pod_ip))
        # No mount namespace: paths under a volume's mountPath are rewritten to where
        # the volume is on this machine.
        mounts = self._mounts(pod, container)
        env = {k: _translate(v, mounts) for k, v in env.items()}
        # $(VAR) references in command and args, as the kubelet expands them.
        command = [VAR_REF.sub(lambda m: env.get(m.group(1), m.group(0)), part) for part in command]
        logfile = (container.folder / "container.log").open("ab")
        container.process = subprocess.Popen(command, env=env, cwd=container.folder,
                                             stdout=logfile, stderr=subprocess.STDOUT,
                                             stdin=subprocess.DEVNULL, start_new_session=True,
                                             preexec_fn=_die_with_podlet)
        logfile.close()
        container.started_at = now()
        container.ready = False
        container.next_probe = time.monotonic() + float(
            (spec.get("readinessProbe") or {}).get("initialDelaySeconds", 0))
        log.info("Started %s/%s on %s (%s): %s", pod["metadata"]["namespace"],
                 pod["metadata"]["name"], container.pod_ip, local_address(container.pod_ip),
                 shlex.join(command))

    def _mounts(self, pod: dict[str, Any], container: Container) -> list[tuple[str, str]]:
        """(mountPath, folder on this machine) of the container's volumes: an emptyDir is a
        folder of the pod's; a PersistentVolumeClaim is its bound PersistentVolume's
        hostPath or local path."""
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        mounts = []
        for mount in pod["spec"]["containers"][0].get("volumeMounts") or []:
            volume = volumes.get(mount["name"], {})
            folder: str | None = None
            if "emptyDir" in volume:
                path = container.folder / "volumes" / mount["name"]
                path.mkdir(parents=True, exist_ok=True)
                folder = str(path)
            elif claim := volume.get("persistentVolumeClaim", {}).get("claimName"):
                folder = self._claim_folder(pod["metadata"]["namespace"], claim)
            if folder is not None:
                mounts.append((mount["mountPath"].rstrip("/"), folder.rstrip("/")))
        return sorted(mounts, key=lambda m: len(m[0]), reverse=True)

    def _claim_folder(self, namespace: str, claim: str) -> str | None:
        got = self.api.call("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
        name = got.json().get("spec", {}).get("volumeName") if got.ok else None
        if not name:
            log.warning("PersistentVolumeClaim %s/%s is not bound", namespace, claim)
            return None
        spec = self.api.call("GET", f"/api/v1/persistentvolumes/{name}").json().get("spec", {})
        path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        return str(path) if path else None

    def _check(self, pod: dict[str, Any], container: Container) -> None:
        proc = container.process
        if proc is not None and proc.poll() is not None:
            container.last_exit = {"exitCode": proc.returncode, "finishedAt": now(),
                                   "startedAt": container.started_at,
                                   "reason": "Error" if proc.returncode else "Completed",
                                   "message": self._last_line(container)}
            container.process = None
            container.ready = False
            container.restart_at = time.monotonic() + container.backoff
            log.info("Container of %s exited with %s; restarting in %.0fs",
                     pod["metadata"]["name"], proc.returncode, container.backoff)
            container.backoff = min(container.backoff * 2, BACKOFF_MAX)
        if container.process is None:
            if time.monotonic() >= container.restart_at:
                container.restarts += 1
                self._start(pod, container)
            return
        probe = pod["spec"]["containers"][0].get("readinessProbe")
        if probe is None:
            container.ready = True
            return
        if time.monotonic() < container.next_probe:
            return
        container.next_probe = time.monotonic() + min(float(probe.get("periodSeconds", 10)), 1.0)
        http = probe.get("httpGet")
        if not http:
            container.ready = True
            return
        port = self._port(pod, http.get("port", 80))
        try:
            got = requests.get(f"http://{local_address(container.pod_ip)}:{port}{http.get('path', '/')}",
                               timeout=float(probe.get("timeoutSeconds", 1)))
            container.ready = 200 <= got.status_code < 400
        except requests.RequestException:
            container.ready = False
        if container.ready:
            container.backoff = BACKOFF_START

    @staticmethod
    def _port(pod: dict[str, Any], port: int | str) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for item in pod["spec"]["containers"][0].get("ports", []):
            if item.get("name") == port:
                return int(item["containerPort"])
        raise ValueError(f"no container port named {port!r}")

    @staticmethod
    def _last_line(container: Container) -> str:
        with contextlib.suppress(OSError):
            lines = (container.folder / "container.log").read_text(errors="replace").splitlines()
            lines = [line for line in lines if line.strip()]
            return lines[-1][-400:] if lines else ""
        return ""

    def _pod_status(self, pod: dict[str, Any], container: Container) -> dict[str, Any]:
        spec = pod["spec"]["containers"][0]
        old = {c["type"]: c for c in pod.get("status", {}).get("conditions", [])}

        def condition(kind: str, ok: bool, reason: str = "") -> dict[str, Any]:
            status = "True" if ok else "False"
            previous = old.get(kind, {})
            since = previous.get("lastTransitionTime") if previous.get("status") == status else now()
            out = {"type": kind, "status": status, "lastTransitionTime": since or now()}
            if reason and not ok:
                out["reason"] = reason
            return out

        if container.process is not None:
            state: dict[str, Any] = {"running": {"startedAt": container.started_at}}
        else:
            exit_line = (container.last_exit or {}).get("message", "")
            state = {"waiting": {"reason": "CrashLoopBackOff",
                                 "message": f"back-off restarting failed container: {exit_line}"}}
        status_ = {
            "name": spec["name"], "image": spec.get("image", ""), "imageID": "",
            "containerID": f"process://{container.process.pid}" if container.process else "",
            "ready": container.ready, "started": container.process is not None,
            "restartCount": container.restarts, "state": state,
        }
        if container.last_exit:
            status_["lastState"] = {"terminated": container.last_exit}
        return {
            "phase": "Running", "hostIP": "127.0.0.1", "podIP": container.pod_ip,
            "podIPs": [{"ip": container.pod_ip}], "startTime": container.started_at,
            "conditions": [condition("PodScheduled", True), condition("Initialized", True),
                           condition("ContainersReady", container.ready, "ContainersNotReady"),
                           condition("Ready", container.ready, "ContainersNotReady")],
            "containerStatuses": [status_],
        }

    def _stop(self, container: Container, grace: float = 5) -> None:
        proc = container.process
        container.process = None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    # ------------------------------------------------------------------ main loop
    def run(self, period: float = 0.25, heartbeat_every: float = 10.0) -> None:
        self.register()
        last_beat = time.monotonic()
        try:
            while not self.stopping.is_set():
                try:
                    self.sync()
                    if time.monotonic() - last_beat >= heartbeat_every:
                        self.heartbeat()
                        last_beat = time.monotonic()
                except requests.RequestException as exc:
                    log.warning("API server: %s", exc)
                self.stopping.wait(period)
        finally:
            for container in self.pods.values():
                self._stop(container, grace=3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batcomputer.testenv.podlet",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="working folders of the pods")
    parser.add_argument("--node", default=NODE_NAME)
    parser.add_argument("--entrypoint", default=None,
                        help="command for containers without one (default: batcomputer)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    podlet = Podlet(Api(args.kubeconfig), args.dir, args.node,
                    shlex.split(args.entrypoint) if args.entrypoint else None)
    signal.signal(signal.SIGTERM, lambda *_: podlet.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: podlet.stopping.set())
    podlet.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
