"""A kubelet for the local cluster: runs the pods bound to its node, as processes or containers.

kwok simulates nodes whose pods only *look* Running and Ready. For Batcomputer's
own pods that is not enough: a model server that cannot load its artifact must
never become Ready, and apps must get real predictions through real endpoints.
The podlet registers a Node, keeps it Ready, and for every pod bound to it:

- gives the pod an IP ``10.N.x.y`` (``status.podIP``, so the real EndpointSlice
  controller lists it) from the block this podlet claimed (`network`), and runs the pod
  on the loopback address ``127.N.x.y`` it maps onto. Pods share the host network, so
  that address stands in for the pod's network namespace: a ``status.podIP`` fieldRef
  resolves to it, and ``BATCOMPUTER_HOST`` (the bind address Batcomputer's components
  honour) is set to it. Nothing ever sends traffic to ``10.N.x.y``;
- builds the container's environment as the kubelet does (``env``, ``envFrom``,
  fieldRef/resourceFieldRef/ConfigMap/Secret references, ``$(VAR)``, the
  ``KUBERNETES_SERVICE_*`` variables pointing at the API server on loopback);
- makes its volumes: emptyDir, hostPath, PersistentVolumeClaims bound to hostPath or
  local PersistentVolumes, configMap, secret, downwardAPI and projected volumes,
  including the ServiceAccount token from the TokenRequest API, so in-cluster clients
  authenticate as the pod's ServiceAccount;
- runs the first container with the runtime the node was started with (`runtime`):
  podman (the pod's image, security context, bind mounts and limits) or a local process;
- runs its startup, liveness and readiness probes (HTTP, TCP, exec) against the real
  container (`probes`), reports Ready from them, restarts it when startup or liveness
  gives up, restarts an exited container with back-off (CrashLoopBackOff, with the
  termination-message file the container wrote, or the last log line as the kubelet's
  FallbackToLogsOnError does), and on deletion runs its preStop hook (sleep, exec,
  httpGet), then stops it within what is left of its grace period.

Not emulated: init and sidecar containers (only the first container runs), image pulls
(images must be present locally), token rotation, updates of ConfigMap/Secret volumes
after start, network policy, and ephemeral-storage limits.
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import datetime as dt
import hashlib
import logging
import os
import shlex
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
import yaml

from batcomputer.testenv import network, pods, runtime
from batcomputer.testenv.pods import ConfigError, ContainerSpec, Mount
from batcomputer.testenv.podstatus import Observation, pod_status
from batcomputer.testenv.probes import ContainerProbes, Probe

log = logging.getLogger("batcomputer.podlet")

NODE_NAME = "batcomputer-podlet-0"
NODE_LABELS = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64", "type": "podlet"}
RUNTIME_LABEL = "batcomputer.io/runtime"
BACKOFF_START, BACKOFF_MAX = 1.0, 20.0
IMAGE_RETRY = 5.0
local_address = network.local_address
# What this node gives every container, as a cloud node's environment would: it has no
# instance metadata service (169.254.169.254 is not loopback), so AWS clients must not
# look for one.
NODE_ENV = {"AWS_EC2_METADATA_DISABLED": "true"}


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    """The few API calls a kubelet needs, as the identity in a kubeconfig."""

    def __init__(self, kubeconfig: Path) -> None:
        config = yaml.safe_load(kubeconfig.read_text())
        cluster = config["clusters"][0]["cluster"]
        self.server = cluster["server"]
        self.ca = cluster.get("certificate-authority", "")
        self.session = requests.Session()
        self.session.trust_env = False  # REQUESTS_CA_BUNDLE would override our CA
        self.session.verify = self.ca or True
        self.session.headers["Authorization"] = f"Bearer {config['users'][0]['user']['token']}"

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.server + path, timeout=10, **kwargs)

    def merge_patch(self, path: str, body: dict[str, Any]) -> requests.Response:
        return self.call("PATCH", path, json=body,
                         headers={"Content-Type": "application/merge-patch+json"})

    def object_data(self, namespace: str, kind: str, name: str) -> dict[str, bytes] | None:
        """The keys of a ConfigMap or Secret, as bytes; None when it does not exist."""
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        got = self.call("GET", f"/api/v1/namespaces/{namespace}/{plural}/{name}")
        if got.status_code == 404:
            return None
        got.raise_for_status()
        return _object_data(got.json())

    def lookup(self, namespace: str, kind: str, name: str, key: str) -> str | None:
        """A ConfigMap or Secret value (``key``), or all of it as KEY=value lines (``key=""``)."""
        data = self.object_data(namespace, kind, name)
        if data is None:
            return None
        if not key:
            return "\n".join(f"{k}={v.decode(errors='replace')}" for k, v in data.items())
        value = data.get(key)
        return None if value is None else value.decode(errors="replace")


def _object_data(obj: dict[str, Any]) -> dict[str, bytes]:
    """The files of a ConfigMap or Secret, as bytes."""
    out: dict[str, bytes] = {}
    for key, value in (obj.get("data") or {}).items():
        out[key] = base64.b64decode(value) if obj.get("kind") == "Secret" else str(value).encode()
    for key, value in (obj.get("binaryData") or {}).items():
        out[key] = base64.b64decode(value)
    for key, value in (obj.get("stringData") or {}).items():
        out[key] = str(value).encode()
    return out


@dataclass
class PodRun:
    """The podlet's state for one pod."""

    uid: str
    pod_ip: str
    folder: Path
    container_name: str
    started_at: str = field(default_factory=now)
    running: runtime.Running | None = None
    run_started: str | None = None
    probes: ContainerProbes | None = None
    image_id: str = ""
    restarts: int = 0
    ever_ran: bool = False
    last_exit: dict[str, Any] | None = None
    waiting: tuple[str, str] | None = ("ContainerCreating", "")
    retry_at: float = 0.0
    backoff: float = BACKOFF_START
    deleting: bool = False
    killing: bool = False
    last_status: dict[str, Any] = field(default_factory=dict)

    @property
    def log_path(self) -> Path:
        return self.folder / "container.log"

    @property
    def termination_log(self) -> Path:
        return self.folder / "termination-log"

    def termination_message(self, code: int, policy: str) -> str:
        """As the kubelet: the termination-message file, else (with FallbackToLogsOnError
        and a failure) the end of the log."""
        with contextlib.suppress(OSError):
            written = self.termination_log.read_text(errors="replace").strip()
            if written:
                return written[-4096:]
        return self.last_line() if code and policy == "FallbackToLogsOnError" else ""

    def last_line(self) -> str:
        with contextlib.suppress(OSError):
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines()
                     if line.strip()]
            return lines[-1][-400:] if lines else ""
        return ""


class Podlet:
    def __init__(self, api: Api, folder: Path, engine: runtime.Runtime, block: int,
                 node: str = NODE_NAME) -> None:
        self.api = api
        self.folder = folder
        self.engine = engine
        self.block = block
        self.node = node
        self.pods: dict[str, PodRun] = {}
        self.ips: Iterator[str] = network.addresses(block)
        self.stopping = threading.Event()
        self.workers = concurrent.futures.ThreadPoolExecutor(max_workers=8,
                                                             thread_name_prefix="podlet-stop")
        api_url = urlsplit(api.server)
        self.service_env = {
            "KUBERNETES_SERVICE_HOST": api_url.hostname or "127.0.0.1",
            "KUBERNETES_SERVICE_PORT": str(api_url.port or 443),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(api_url.port or 443),
            "KUBERNETES_PORT": f"tcp://{api_url.hostname}:{api_url.port or 443}",
        }

    # ------------------------------------------------------------------ node
    def register(self) -> None:
        node = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node,
                             "labels": {**NODE_LABELS, "kubernetes.io/hostname": self.node,
                                        RUNTIME_LABEL: self.engine.name}},
                "spec": {"podCIDR": network.pod_cidr(self.block),
                         "podCIDRs": [network.pod_cidr(self.block)]},
                "status": self._node_status()}
        existing = self.api.call("GET", f"/api/v1/nodes/{self.node}")
        if existing.ok and existing.json()["spec"].get("podCIDR") != network.pod_cidr(self.block):
            # The node of an earlier run with another block: its pods' IPs are stale.
            self.api.call("DELETE", f"/api/v1/nodes/{self.node}")
            existing = self.api.call("GET", f"/api/v1/nodes/{self.node}")
        if existing.ok:
            response = self.api.merge_patch(f"/api/v1/nodes/{self.node}/status",
                                            {"status": self._node_status()})
        else:
            response = self.api.call("POST", "/api/v1/nodes", json=node)
        response.raise_for_status()
        log.info("Registered node %s (runtime %s, pods %s on %s)", self.node, self.engine.version,
                 network.pod_cidr(self.block), local_address(f"10.{self.block}.0.0") + "/16")

    def _node_status(self) -> dict[str, Any]:
        stamp = now()
        capacity = {"cpu": str(os.cpu_count() or 2), "memory": "64Gi", "pods": "110"}
        conditions = [{"type": t, "status": "False", "reason": r, "lastHeartbeatTime": stamp,
                       "lastTransitionTime": stamp}
                      for t, r in (("MemoryPressure", "KubeletHasSufficientMemory"),
                                   ("DiskPressure", "KubeletHasNoDiskPressure"),
                                   ("PIDPressure", "KubeletHasSufficientPID"))]
        conditions.append({"type": "Ready", "status": "True", "reason": "KubeletReady",
                           "message": f"podlet is running pods with {self.engine.name}",
                           "lastHeartbeatTime": stamp, "lastTransitionTime": stamp})
        return {"capacity": capacity, "allocatable": capacity, "conditions": conditions,
                "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                              {"type": "Hostname", "address": self.node}],
                "nodeInfo": {"kubeletVersion": "podlet", "operatingSystem": "linux",
                             "architecture": "amd64", "containerRuntimeVersion": self.engine.version,
                             "kernelVersion": os.uname().release,
                             "osImage": "podman containers" if self.engine.name == "podman"
                             else "local processes",
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
            run = self.pods.pop(uid)
            if not run.deleting and run.running is not None:
                self.workers.submit(self.engine.stop, run.running, 2)

    def _sync_pod(self, uid: str, pod: dict[str, Any]) -> None:
        meta = pod["metadata"]
        run = self.pods.get(uid)
        if meta.get("deletionTimestamp"):
            if run is None:
                run = self.pods[uid] = PodRun(uid, "", self.folder / "gone", "")
            if not run.deleting:
                run.deleting = True
                self.workers.submit(self._delete, pod, run)
            return
        if run is None:
            container = pod["spec"]["containers"][0]
            run = PodRun(uid, next(self.ips), self.folder / f"{meta['namespace']}_{meta['name']}",
                         container_name=self._container_name(pod))
            run.folder.mkdir(parents=True, exist_ok=True)
            self.pods[uid] = run
            log.info("Pod %s/%s bound here: IP %s, listening on %s (%s)", meta["namespace"],
                     meta["name"], run.pod_ip, local_address(run.pod_ip), container.get("image", ""))
        self._check(pod, run)
        status = self._status(pod, run)
        if status != run.last_status:
            response = self.api.merge_patch(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status", {"status": status})
            if response.ok:
                run.last_status = status

    def _container_name(self, pod: dict[str, Any]) -> str:
        """Unique per pod and per cluster, readable in ``podman ps``."""
        meta = pod["metadata"]
        name = f"k8s_{meta['namespace']}_{meta['name']}"[:100]
        return f"{name}_{meta['uid'][:8]}"

    def _delete(self, pod: dict[str, Any], run: PodRun) -> None:
        meta = pod["metadata"]
        grace = float(meta.get("deletionGracePeriodSeconds",
                               pod["spec"].get("terminationGracePeriodSeconds", 30)))
        try:
            if run.running is not None:
                started = time.monotonic()
                self._pre_stop(pod, run, grace)
                self.engine.stop(run.running, max(grace - (time.monotonic() - started), 1))
                run.running = None
            self.api.call("DELETE", f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}",
                          json={"gracePeriodSeconds": 0, "preconditions": {"uid": run.uid}})
            log.info("Deleted pod %s/%s", meta["namespace"], meta["name"])
        except Exception:  # noqa: BLE001 - retried at the next sync
            log.exception("Deleting pod %s/%s", meta["namespace"], meta["name"])
            run.deleting = False

    def _pre_stop(self, pod: dict[str, Any], run: PodRun, grace: float) -> None:
        """The container's preStop hook, within the grace period (sleep, exec, httpGet)."""
        container = pod["spec"]["containers"][0]
        hook = ((container.get("lifecycle") or {}).get("preStop")) or {}
        if not hook or run.running is None or run.running.poll() is not None:
            return
        try:
            if "sleep" in hook:
                time.sleep(min(float(hook["sleep"].get("seconds", 0)), grace))
            elif command := (hook.get("exec") or {}).get("command"):
                self.engine.exec(run.running, list(command), grace)
            elif http := hook.get("httpGet"):
                port = pods.port_number(container, http.get("port", 80))
                host = http.get("host") or local_address(run.pod_ip)
                requests.get(f"{str(http.get('scheme', 'HTTP')).lower()}://{host}:{port}"
                             f"{http.get('path', '/')}", timeout=grace, verify=False)
        except (OSError, requests.RequestException, ConfigError) as exc:
            log.info("preStop hook of %s failed: %s", pod["metadata"]["name"], exc)

    # ------------------------------------------------------------------ container
    def _check(self, pod: dict[str, Any], run: PodRun) -> None:
        container = pod["spec"]["containers"][0]
        if run.running is not None and (code := run.running.poll()) is not None:
            self._exited(pod, run, code)
        if run.running is None:
            if time.monotonic() >= run.retry_at:
                self._start(pod, run)
            return
        probes = run.probes
        assert probes is not None
        for probe in probes.due(time.monotonic()):
            ok, detail = self._probe(container, run, probe)
            probes.record(probe, ok, time.monotonic(), detail)
        if probes.failed and not run.killing:
            # As the kubelet: stop it within its grace period, then restart it (once it exits).
            log.info("Pod %s: %s; killing the container", pod["metadata"]["name"], probes.failed)
            run.killing = True
            self.workers.submit(self.engine.stop, run.running,
                                float(pod["spec"].get("terminationGracePeriodSeconds", 30)))
        elif probes.ready:
            run.backoff = BACKOFF_START

    def _exited(self, pod: dict[str, Any], run: PodRun, code: int) -> None:
        container = pod["spec"]["containers"][0]
        message = run.termination_message(code, container.get("terminationMessagePolicy", "File"))
        reason = run.probes.failed if run.probes and run.probes.failed else ""
        run.last_exit = {"exitCode": code, "finishedAt": now(), "startedAt": run.run_started,
                         "reason": "Error" if code else "Completed",
                         "message": f"{reason}; {message}" if reason else message,
                         "containerID": run.running.container_id if run.running else ""}
        run.running, run.run_started, run.probes, run.killing = None, None, None, False
        run.retry_at = time.monotonic() + run.backoff
        run.waiting = ("CrashLoopBackOff",
                       f"back-off {run.backoff:.0f}s restarting failed container: {run.last_exit['message']}")
        log.info("Container of %s exited with %s; restarting in %.0fs",
                 pod["metadata"]["name"], code, run.backoff)
        run.backoff = min(run.backoff * 2, BACKOFF_MAX)

    def _start(self, pod: dict[str, Any], run: PodRun) -> None:
        meta = pod["metadata"]
        container = pod["spec"]["containers"][0]
        image = self.engine.image(container.get("image", ""))
        if image is None:
            policy = container.get("imagePullPolicy", "IfNotPresent")
            run.waiting = ("ErrImageNeverPull" if policy == "Never" else "ErrImagePull",
                           f'image "{container.get("image")}" is not present on node {self.node} '
                           "(the local cluster has no registry: build it with hack/build-images.sh)")
            run.retry_at = time.monotonic() + IMAGE_RETRY
            return
        try:
            spec = self._container_spec(pod, container, run)
            if self.engine.enforces_security and (problem := pods.non_root_violation(spec, image.user)):
                raise ConfigError(problem)
        except (ConfigError, OSError, requests.RequestException) as exc:
            run.waiting = ("CreateContainerConfigError", str(exc))
            run.retry_at = time.monotonic() + IMAGE_RETRY
            log.warning("Pod %s/%s: %s", meta["namespace"], meta["name"], exc)
            return
        if run.ever_ran:
            run.restarts += 1
        run.image_id = image.id
        run.running = self.engine.start(spec, name=run.container_name, folder=run.folder,
                                        log_path=run.log_path)
        run.run_started = now()
        run.ever_ran = True
        run.waiting = None
        run.probes = ContainerProbes.for_container(container, time.monotonic())
        log.info("Started %s/%s (%s)", meta["namespace"], meta["name"], run.running.container_id)

    def _container_spec(self, pod: dict[str, Any], container: dict[str, Any], run: PodRun) -> ContainerSpec:
        namespace = pod["metadata"]["namespace"]
        address = local_address(run.pod_ip)
        env = pods.resolve_env(pod, container, pod_ip=address, node=self.node,
                               lookup=lambda kind, name, key: self.api.lookup(namespace, kind, name, key),
                               base={**NODE_ENV, **self.service_env})
        env.update(HOSTNAME=pod["metadata"]["name"][:63], BATCOMPUTER_HOST=address)
        mounts = self._mounts(pod, container, run)
        # The termination-message file, fresh for each run, writable by any user.
        run.termination_log.parent.mkdir(parents=True, exist_ok=True)
        run.termination_log.write_text("")
        run.termination_log.chmod(0o666)
        mounts.append(Mount(str(run.termination_log),
                            container.get("terminationMessagePath", "/dev/termination-log")))
        return pods.container_spec(pod, container, env, mounts)

    # ------------------------------------------------------------------ volumes
    def _mounts(self, pod: dict[str, Any], container: dict[str, Any], run: PodRun) -> list[Mount]:
        volumes = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        made: dict[str, tuple[str, bool]] = {}
        mounts = []
        for mount in container.get("volumeMounts") or []:
            name = mount["name"]
            if name not in volumes:
                raise ConfigError(f"volume {name!r} is mounted but not defined")
            if name not in made:
                made[name] = self._volume(pod, volumes[name], run)
            source, read_only = made[name]
            if mount.get("subPath"):
                source = str(Path(source) / mount["subPath"])
            mounts.append(Mount(source, mount["mountPath"], read_only or bool(mount.get("readOnly"))))
        return mounts

    def _volume(self, pod: dict[str, Any], volume: dict[str, Any], run: PodRun) -> tuple[str, bool]:
        """Make a volume into a folder on this machine: (folder, read-only)."""
        folder = run.folder / "volumes" / volume["name"]
        namespace = pod["metadata"]["namespace"]
        if "emptyDir" in volume:
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)  # as the kubelet makes it: writable by any user of the pod
            return str(folder), False
        if "hostPath" in volume:
            return str(volume["hostPath"]["path"]), False
        if claim := volume.get("persistentVolumeClaim"):
            return self._claim_folder(namespace, claim["claimName"]), bool(claim.get("readOnly"))
        files: dict[str, bytes] = {}
        if "configMap" in volume or "secret" in volume:
            files = self._object_files(namespace, volume)
        elif "downwardAPI" in volume:
            files = self._downward_files(pod, volume["downwardAPI"], run)
        elif "projected" in volume:
            for source in volume["projected"].get("sources") or []:
                if token := source.get("serviceAccountToken"):
                    files[token["path"]] = self._token(pod, token).encode()
                elif "downwardAPI" in source:
                    files.update(self._downward_files(pod, source["downwardAPI"], run))
                else:
                    files.update(self._object_files(namespace, source))
        else:
            raise ConfigError(f"volume {volume['name']!r}: this volume type is not supported "
                              "by the podlet")
        self._write_files(pod, folder, files)
        return str(folder), True

    def _claim_folder(self, namespace: str, claim: str) -> str:
        got = self.api.call("GET", f"/api/v1/namespaces/{namespace}/persistentvolumeclaims/{claim}")
        if got.status_code == 404:
            raise ConfigError(f'persistentvolumeclaim "{claim}" not found')
        name = got.json().get("spec", {}).get("volumeName")
        if not name:
            raise ConfigError(f'persistentvolumeclaim "{claim}" is not bound')
        spec = self.api.call("GET", f"/api/v1/persistentvolumes/{name}").json().get("spec", {})
        path = (spec.get("hostPath") or spec.get("local") or {}).get("path")
        if not path:
            raise ConfigError(f"persistentvolume {name}: only hostPath and local volumes are supported")
        return str(path)

    def _object_files(self, namespace: str, source: dict[str, Any]) -> dict[str, bytes]:
        """configMap or secret files, with ``items`` selecting and renaming keys."""
        kind = "ConfigMap" if "configMap" in source else "Secret"
        ref = source["configMap"] if kind == "ConfigMap" else source["secret"]
        name = ref.get("name") or ref.get("secretName", "")
        data = self.api.object_data(namespace, kind, name)
        if data is None:
            if ref.get("optional"):
                return {}
            raise ConfigError(f'{kind.lower()} "{name}" not found')
        if not ref.get("items"):
            return data
        files = {}
        for item in ref["items"]:
            if item["key"] not in data:
                raise ConfigError(f'couldn\'t find key {item["key"]} in {kind} {namespace}/{name}')
            files[item["path"]] = data[item["key"]]
        return files

    def _downward_files(self, pod: dict[str, Any], source: dict[str, Any], run: PodRun) -> dict[str, bytes]:
        files = {}
        for item in source.get("items") or []:
            if ref := item.get("fieldRef"):
                value = pods.field_value(pod, ref["fieldPath"], local_address(run.pod_ip), self.node)
            else:
                value = pods.resource_value(pod["spec"]["containers"][0], item["resourceFieldRef"])
            files[item["path"]] = value.encode()
        return files

    def _token(self, pod: dict[str, Any], source: dict[str, Any]) -> str:
        """A token for the pod's ServiceAccount, bound to the pod (TokenRequest API)."""
        meta = pod["metadata"]
        account = pod["spec"].get("serviceAccountName") or "default"
        spec: dict[str, Any] = {"expirationSeconds": int(source.get("expirationSeconds", 3607)),
                                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                                   "name": meta["name"], "uid": meta["uid"]}}
        if source.get("audience"):
            spec["audiences"] = [source["audience"]]
        got = self.api.call("POST", f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/"
                                    f"{account}/token",
                            json={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                                  "spec": spec})
        if not got.ok:
            raise ConfigError(f"token for ServiceAccount {account}: {got.status_code} {got.text[:200]}")
        return str(got.json()["status"]["token"])

    @staticmethod
    def _write_files(pod: dict[str, Any], folder: Path, files: dict[str, bytes]) -> None:
        """Write a volume's files readable by the pod's user only (its runAsUser or fsGroup)."""
        folder.mkdir(parents=True, exist_ok=True)
        ctx = pod["spec"].get("securityContext") or {}
        user = (pod["spec"]["containers"][0].get("securityContext") or {}).get("runAsUser",
                                                                                ctx.get("runAsUser"))
        group = ctx.get("fsGroup")
        for path, data in files.items():
            target = folder / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
            mode = 0o644
            if os.geteuid() == 0 and (user is not None or group is not None):
                os.chown(target, -1 if user is None else int(user), -1 if group is None else int(group))
                mode = 0o640 if group is not None else 0o600
            target.chmod(mode)

    # ------------------------------------------------------------------ probes
    def _probe(self, container: dict[str, Any], run: PodRun, probe: Probe) -> tuple[bool, str]:
        spec = probe.spec
        host = local_address(run.pod_ip)
        try:
            if http := spec.get("httpGet"):
                port = pods.port_number(container, http.get("port", 80))
                scheme = str(http.get("scheme", "HTTP")).lower()
                headers = {h["name"]: h["value"] for h in http.get("httpHeaders") or []}
                url = f"{scheme}://{http.get('host') or host}:{port}{http.get('path', '/')}"
                got = requests.get(url, timeout=probe.timeout, headers=headers, verify=False,
                                   allow_redirects=False)
                return 200 <= got.status_code < 400, f"HTTP probe failed with statuscode: {got.status_code}"
            if tcp := spec.get("tcpSocket"):
                port = pods.port_number(container, tcp["port"])
                with socket.create_connection((tcp.get("host") or host, port), timeout=probe.timeout):
                    return True, ""
            if command := (spec.get("exec") or {}).get("command"):
                assert run.running is not None
                code = self.engine.exec(run.running, list(command), probe.timeout)
                return code == 0, f"command {command!r} exited with {code}"
        except (OSError, requests.RequestException, ConfigError) as exc:
            return False, f"{type(exc).__name__}: {exc}"[:300]
        return False, "unsupported probe (only httpGet, tcpSocket and exec)"

    # ------------------------------------------------------------------ status
    def _status(self, pod: dict[str, Any], run: PodRun) -> dict[str, Any]:
        container = pod["spec"]["containers"][0]
        probes = run.probes
        seen = Observation(
            name=container["name"], image=container.get("image", ""), pod_ip=run.pod_ip,
            pod_started_at=run.started_at, image_id=run.image_id,
            container_id=f"{self.engine.name}://{run.running.container_id}" if run.running else "",
            running_since=run.run_started if run.running else None, waiting=run.waiting,
            started=bool(run.running and probes and probes.started),
            ready=bool(run.running and probes and probes.ready),
            restarts=run.restarts, last_exit=run.last_exit, ever_ran=run.ever_ran)
        return pod_status(seen, pod.get("status", {}).get("conditions", []), now())

    # ------------------------------------------------------------------ main loop
    def run(self, period: float = 0.25, heartbeat_every: float = 10.0) -> None:
        self.engine.cleanup()
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
            running = [run.running for run in self.pods.values() if run.running is not None]
            list(self.workers.map(lambda r: self.engine.stop(r, 3), running))
            self.workers.shutdown(wait=True)
            self.engine.cleanup()


def cluster_id(folder: Path) -> str:
    """A short name for this cluster, from its state folder (labels its containers)."""
    return hashlib.sha256(str(folder.resolve()).encode()).hexdigest()[:12]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batcomputer.testenv.podlet",
                                     description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--dir", type=Path, required=True, help="working folders of the pods")
    parser.add_argument("--node", default=NODE_NAME)
    parser.add_argument("--runtime", choices=("podman", "process"), default="podman",
                        help="run pods as podman containers from their images, or as local "
                             "processes from this virtualenv")
    parser.add_argument("--entrypoint", default=None,
                        help="process runtime: command for containers without one "
                             "(default: batcomputer)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)  # HTTPS probes, as the kubelet
    claim = network.Claim()
    block = claim.acquire()
    engine = runtime.make(args.runtime, cluster_id(args.dir),
                          shlex.split(args.entrypoint) if args.entrypoint else None)
    podlet = Podlet(Api(args.kubeconfig), args.dir, engine, block, args.node)
    signal.signal(signal.SIGTERM, lambda *_: podlet.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: podlet.stopping.set())
    try:
        podlet.run()
    finally:
        claim.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
