"""A real `batcomputer serve` (gunicorn) on a loopback port, for the server tests."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_command(*flags: str) -> list[str]:
    return [sys.executable, "-m", "batcomputer.cli", "serve", *flags]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATCOMPUTER_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    return {**env, **extra}


@dataclass
class Server:
    url: str
    process: subprocess.Popen[str]
    cache: Path

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(self.url + path, timeout=10) as reply:
                return reply.status, reply.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def predict(self, body: Any) -> tuple[int, Any]:
        request = urllib.request.Request(self.url + "/api/predict", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


def start(artifact: str, cache: Path, *flags: str, **env: str) -> Server:
    port = free_port()
    process = subprocess.Popen(
        serve_command("--artifact", artifact, "--host", "127.0.0.1", "--port", str(port), *flags),
        env=clean_env(BATCOMPUTER_CACHE_DIR=str(cache), **env),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    server = Server(f"http://127.0.0.1:{port}", process, cache)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"serve exited with {process.returncode}:\n"
                                 f"{process.stdout.read() if process.stdout else ''}")
        try:
            if server.get("/readyz")[0] == 200:
                return server
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.05)
    stop(server)
    raise AssertionError("serve did not become ready in 90s")


def stop(server: Server) -> str:
    server.process.send_signal(signal.SIGTERM)
    try:
        out, _ = server.process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        server.process.kill()
        out, _ = server.process.communicate()
    return out
