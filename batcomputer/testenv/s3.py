"""A real S3-compatible server on loopback: SeaweedFS (`weed server -s3`), for the tests
and hand use of s3:// artifacts and registries.

The binary is built by hack/build-seaweedfs.sh into the user cache. Every port is chosen
here and bound to 127.0.0.1; telemetry is off. The server knows the identities it is
given (access key, secret, allowed actions), so private buckets, read-only users and
wrong credentials behave as on AWS; anonymous requests are refused.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Final

import requests

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
BUILD_SCRIPT: Final = REPO_ROOT / "hack" / "build-seaweedfs.sh"
PORT_NAMES: Final = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
                     "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc",
                     "s3.port.iceberg", "s3.port.lance")
MIN_FREE_MIB: Final = 256
"""SeaweedFS makes every volume read-only while its disk has less free space than this. Its
own default, 1 % of the disk, is gigabytes on a large disk, more than the tests write."""


@dataclass(frozen=True)
class Identity:
    name: str
    access_key: str
    secret_key: str
    actions: tuple[str, ...]
    """SeaweedFS actions: Admin, Read, Write, List, Tagging; ``Read:BUCKET`` limits one
    to a bucket."""

    @classmethod
    def new(cls, name: str, *actions: str) -> Identity:
        return cls(name, name.upper() + secrets.token_hex(6).upper(), secrets.token_urlsafe(24),
                   actions)

    def env(self) -> dict[str, str]:
        """The standard AWS variables for this identity."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key}


@dataclass
class S3Server:
    workdir: Path
    identities: tuple[Identity, ...] = ()
    weed: Path | None = None
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self, identity: Identity | None = None) -> dict[str, str]:
        """What a client of this server needs: its endpoint, a region and ``identity``'s
        keys (none: anonymous). Never a credentials file or the instance metadata service
        (169.254.169.254 is not loopback)."""
        env = {"BATCOMPUTER_S3_ENDPOINT": self.endpoint, "AWS_REGION": "us-east-1",
               "AWS_EC2_METADATA_DISABLED": "true", "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
        return {**env, **identity.env()} if identity else env

    def make_bucket(self, name: str, owner: Identity) -> None:
        from batcomputer import objectstore

        config = objectstore.S3Config.from_env(self.env(owner))
        objectstore.Store(objectstore.Location(name, ""), config).client.make_bucket(name)

    @property
    def log_path(self) -> Path:
        return self.workdir / "weed.log"

    def start(self, timeout: float = 60.0) -> S3Server:
        self.workdir.mkdir(parents=True, exist_ok=True)
        free_mib = shutil.disk_usage(self.workdir).free // 2**20
        if free_mib < 2 * MIN_FREE_MIB:
            raise RuntimeError(f"only {free_mib} MiB free on the disk of {self.workdir}; "
                               f"SeaweedFS refuses writes below {MIN_FREE_MIB} MiB")
        weed = self.weed or find_weed()
        (self.workdir / "data").mkdir(exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(json.dumps({"identities": [
            {"name": i.name, "actions": list(i.actions),
             "credentials": [{"accessKey": i.access_key, "secretKey": i.secret_key}]}
            for i in self.identities]}))
        config.chmod(0o600)
        self.ports = free_ports(PORT_NAMES)
        args = [str(weed), "server", f"-dir={self.workdir / 'data'}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", "-master.telemetry=false", "-master.volumeSizeLimitMB=64",
                "-volume.max=20", f"-volume.minFreeSpace={MIN_FREE_MIB}MiB",
                "-s3", f"-s3.config={config}",
                *(f"-{name}={port}" for name, port in self.ports.items())]
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                        cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"weed exited with {self.process.returncode}; see "
                                   f"{self.log_path}")
            if self._ready():
                self._grow()
                return self
            time.sleep(0.25)
        self.stop()
        raise RuntimeError(f"SeaweedFS did not answer on {self.endpoint} within {timeout:g}s; "
                           f"see {self.log_path}")

    def _ready(self) -> bool:
        try:
            # Anonymous requests are refused (403) once the S3 gateway is up and can reach
            # the filer; a volume must also be writable, which /dir/status tells.
            s3 = requests.get(self.endpoint + "/", timeout=1).status_code == 403
            master = requests.get(f"http://127.0.0.1:{self.ports['master.port']}/dir/status",
                                  timeout=1)
            return s3 and master.ok and '"DataNodes"' in master.text and \
                '"Url"' in master.text
        except requests.RequestException:
            return False

    def _grow(self) -> None:
        """Allocate a volume now, so the first write does not wait for one (seconds)."""
        master = f"http://127.0.0.1:{self.ports['master.port']}"
        requests.get(f"{master}/vol/grow", params={"count": "1"}, timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:  # a scratch server: its data need no orderly shutdown
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def find_weed() -> Path:
    """The cached weed binary, built first if needed (minutes, once per machine)."""
    done = subprocess.run([str(BUILD_SCRIPT)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{BUILD_SCRIPT} failed:\n{done.stderr[-4000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def free_ports(names: tuple[str, ...]) -> dict[str, int]:
    """A free loopback port for each name (held open together, so they differ)."""
    sockets = []
    try:
        for _ in names:
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return {name: sock.getsockname()[1] for name, sock in zip(names, sockets, strict=True)}
    finally:
        for sock in sockets:
            sock.close()
