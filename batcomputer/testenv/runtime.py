"""How the podlet runs a container: as a local process, or as a podman container.

Both runtimes take the same `ContainerSpec` (see `pods`) and return a `Running`
whose ``poll()`` gives the exit code once the container has exited, so the podlet's
restart, probe and status logic is the same for both.

- `ProcessRuntime` runs the command from this machine's virtualenv (the image is not
  used): fast, for tests and benchmarks that only need real servers. There is no mount
  namespace, so paths under a volume's ``mountPath`` are rewritten in the environment;
  the security context, resource limits and the image are not applied.
- `PodmanRuntime` runs the pod's image with podman in the foreground (``podman run``
  is the child process, its output the container log), on the host network, with the
  security context, volumes as bind mounts and resource limits applied by runc.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from batcomputer.testenv.pods import ContainerSpec

log = logging.getLogger("batcomputer.podlet")

REPO_ROOT = Path(__file__).resolve().parents[2]
PODMAN_CONF_SCRIPT = REPO_ROOT / "hack" / "podman-conf.sh"
CLUSTER_LABEL = "io.batcomputer.testenv.cluster"


class RuntimeUnavailable(RuntimeError):
    """The container runtime cannot be used on this machine."""


@dataclass(frozen=True)
class Image:
    id: str
    user: str
    """The image's USER ("" for root)."""


class Running:
    """A started container: the foreground process that lives as long as it does."""

    def __init__(self, process: subprocess.Popen[bytes], container_id: str) -> None:
        self.process = process
        self.container_id = container_id

    def poll(self) -> int | None:
        return self.process.poll()


class Runtime(Protocol):
    name: str
    version: str
    enforces_security: bool
    """Whether the security context and the image's USER are applied (runAsNonRoot checks)."""

    def image(self, name: str) -> Image | None:
        """The local image, or None when it is not present (no pulls: no registry)."""

    def start(self, spec: ContainerSpec, *, name: str, folder: Path, log_path: Path) -> Running:
        """Start the container; ``folder`` is the pod's own working folder."""

    def stop(self, running: Running, grace: float) -> None:
        """SIGTERM, then SIGKILL after ``grace`` seconds; returns once it has exited."""

    def exec(self, running: Running, command: list[str], timeout: float) -> int:
        """Run a command inside the container (exec probes); its exit code."""

    def cleanup(self) -> None:
        """Remove what an earlier run of this node left behind."""


def _die_with_podlet() -> None:
    """Containers are the podlet's children: if it is killed, they stop too (SIGTERM)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


def _wait(process: subprocess.Popen[bytes], grace: float) -> None:
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def translate(value: str, mounts: list[tuple[str, str]]) -> str:
    """A container path under a mount -> the same path on this machine (longest first)."""
    for target, source in mounts:
        if value == target or value.startswith(target + "/"):
            return source + value[len(target):]
    return value


class ProcessRuntime:
    name = "process"
    enforces_security = False

    def __init__(self, entrypoint: list[str] | None = None) -> None:
        self.entrypoint = entrypoint or [str(Path(sys.executable).parent / "batcomputer")]
        self.version = "process://" + Path(self.entrypoint[0]).name

    def image(self, name: str) -> Image | None:
        return Image(id="process", user="")

    def start(self, spec: ContainerSpec, *, name: str, folder: Path, log_path: Path) -> Running:
        mounts = sorted(((m.target.rstrip("/"), m.source.rstrip("/")) for m in spec.mounts),
                        key=lambda m: len(m[0]), reverse=True)
        tmp = folder / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {k: v for k, v in os.environ.items()
               if k in ("PATH", "LANG", "LC_ALL", "PYTHONPATH", "VIRTUAL_ENV", "HOME")}
        env.update({k: translate(v, mounts) for k, v in spec.env.items()})
        env.setdefault("TMPDIR", str(tmp))
        if env["TMPDIR"] == "/tmp":
            env["TMPDIR"] = str(tmp)
        command = (spec.command or self.entrypoint) + (spec.args or [])
        with log_path.open("ab") as handle:
            process = subprocess.Popen(command, env=env, cwd=folder, stdout=handle,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=_die_with_podlet)
        return Running(process, f"process://{process.pid}")

    def stop(self, running: Running, grace: float) -> None:
        if running.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(running.process.pid, signal.SIGTERM)
        _wait(running.process, grace)

    def exec(self, running: Running, command: list[str], timeout: float) -> int:
        try:
            return subprocess.run(command, capture_output=True, timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            return -1

    def cleanup(self) -> None:
        return None


def podman_environment() -> dict[str, str]:
    """The environment for podman and buildah: the project's containers.conf."""
    env = dict(os.environ)
    if "CONTAINERS_CONF" not in env:
        if not PODMAN_CONF_SCRIPT.is_file():
            raise RuntimeUnavailable(f"{PODMAN_CONF_SCRIPT} not found; set CONTAINERS_CONF")
        done = subprocess.run([str(PODMAN_CONF_SCRIPT)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeUnavailable(f"hack/podman-conf.sh failed: {done.stderr.strip()}")
        env["CONTAINERS_CONF"] = done.stdout.strip().splitlines()[-1]
    return env


def podman_run_args(spec: ContainerSpec, *, name: str, cluster: str, cidfile: Path) -> list[str]:
    """PURE: the ``podman run`` arguments a kubelet's runtime would use for this spec."""
    args = ["run", "--rm", "--name", name, "--cidfile", str(cidfile),
            "--label", f"{CLUSTER_LABEL}={cluster}",
            "--network", "host", "--pull", "never", "--no-healthcheck",
            "--stop-timeout", str(spec.grace_seconds), "--log-driver", "passthrough"]
    if spec.run_as_user is not None:
        user = str(spec.run_as_user)
        if spec.run_as_group is not None:
            user += f":{spec.run_as_group}"
        args += ["--user", user]
    for group in spec.supplemental_groups:
        args += ["--group-add", str(group)]
    if spec.read_only_root:
        # Only the volumes are writable, as in Kubernetes (podman would add tmpfs mounts).
        args += ["--read-only", "--read-only-tmpfs=false"]
    if spec.privileged:
        args += ["--privileged"]
    if spec.no_new_privileges:
        args += ["--security-opt", "no-new-privileges"]
    if spec.seccomp == "Unconfined":
        args += ["--security-opt", "seccomp=unconfined"]
    for cap in spec.cap_drop:
        args += ["--cap-drop", cap.upper()]
    for cap in spec.cap_add:
        args += ["--cap-add", cap.upper()]
    if spec.memory_limit is not None:
        args += ["--memory", f"{spec.memory_limit}b"]
    if spec.cpu_limit is not None:
        args += ["--cpus", f"{spec.cpu_limit:g}"]
    if spec.working_dir:
        args += ["--workdir", spec.working_dir]
    if "HOSTNAME" in spec.env:
        args += ["--hostname", spec.env["HOSTNAME"]]
    for key, value in spec.env.items():
        args += ["--env", f"{key}={value}"]
    for mount in spec.mounts:
        option = f"type=bind,source={mount.source},destination={mount.target}"
        args += ["--mount", option + (",ro=true" if mount.read_only else "")]
    if spec.command is not None:
        args += ["--entrypoint", json.dumps(spec.command)]
    args.append(spec.image)
    return args + (spec.args or [])


class PodmanRuntime:
    name = "podman"
    enforces_security = True

    def __init__(self, cluster: str, podman: str | None = None) -> None:
        self.cluster = cluster
        found = podman or shutil.which("podman")
        if not found:
            raise RuntimeUnavailable("podman is not installed (hack/build-images.sh installs it)")
        self.podman = found
        self.env = podman_environment()
        done = self._run("version", "--format", "{{.Client.Version}}", timeout=60)
        if done.returncode != 0:
            raise RuntimeUnavailable(f"podman does not work here: {done.stderr.strip()}")
        self.version = f"podman://{done.stdout.strip()}"
        self._lock = threading.Lock()

    def _run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.podman, *args], capture_output=True, text=True,
                              env=self.env, timeout=timeout, check=False)

    def image(self, name: str) -> Image | None:
        done = self._run("image", "inspect", "--format", "{{.Id}} {{.Config.User}}", name)
        if done.returncode != 0:
            return None
        image_id, _, user = done.stdout.strip().partition(" ")
        return Image(id=f"sha256:{image_id}", user=user)

    def start(self, spec: ContainerSpec, *, name: str, folder: Path, log_path: Path) -> Running:
        cidfile = folder / "container.id"
        cidfile.unlink(missing_ok=True)
        self._run("rm", "--force", "--ignore", name)  # a leftover of a killed podlet
        args = podman_run_args(spec, name=name, cluster=self.cluster, cidfile=cidfile)
        with log_path.open("ab") as handle:
            process = subprocess.Popen([self.podman, *args], env=self.env, cwd=folder, stdout=handle,
                                       stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                       start_new_session=True, preexec_fn=_die_with_podlet)
        return Running(process, name)

    def stop(self, running: Running, grace: float) -> None:
        if running.poll() is None:
            self._run("stop", "--ignore", "--time", str(int(grace)), running.container_id,
                      timeout=grace + 30)
        _wait(running.process, 10)
        self._run("rm", "--force", "--ignore", running.container_id)

    def exec(self, running: Running, command: list[str], timeout: float) -> int:
        try:
            return self._run("exec", running.container_id, *command, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return -1

    def container_id(self, folder: Path) -> str:
        with contextlib.suppress(OSError):
            return (folder / "container.id").read_text().strip()
        return ""

    def cleanup(self) -> None:
        done = self._run("ps", "--all", "--quiet", "--filter", f"label={CLUSTER_LABEL}={self.cluster}")
        ids = done.stdout.split()
        if ids:
            self._run("rm", "--force", "--time", "2", *ids, timeout=120)
            log.info("Removed %d container(s) left by an earlier run", len(ids))


def make(name: str, cluster: str, entrypoint: list[str] | None = None) -> Runtime:
    if name == "process":
        return ProcessRuntime(entrypoint)
    if name == "podman":
        return PodmanRuntime(cluster)
    raise ValueError(f"unknown container runtime {name!r} (process or podman)")
