"""One active operator among several replicas (the Lease itself: `k8s.Leadership`): who
this replica is, and the health endpoint a standby answers while it waits to lead."""

from __future__ import annotations

import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit


def identity() -> str:
    """This replica's name in the Lease: the pod's name where there is one."""
    return os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"


class StandbyHealth:
    """While waiting to lead, answer the health endpoint kopf will serve once leading, so
    that the kubelet neither restarts a standby nor counts it unready."""

    def __init__(self, endpoint: str) -> None:
        parts = urlsplit(endpoint)
        self.path = parts.path or "/healthz"
        server_path = self.path

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                ok = self.path == server_path
                body = b'{"standby": true}' if ok else b""
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((parts.hostname or "0.0.0.0", parts.port or 80), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="standby-health",
                                       daemon=True)

    def __enter__(self) -> StandbyHealth:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
