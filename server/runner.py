"""Load the verified model once, then run gunicorn with the app built around it.

The artifact is loaded in the gunicorn master before the workers fork (preload),
so a bad artifact stops the process with one log line and a non-zero exit, and
the workers share the loaded model's memory.
"""

from __future__ import annotations

import ctypes
import gc
import logging
import os
import shutil
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gunicorn.app.base import BaseApplication

from batcomputer.server import contract
from batcomputer.server.artifacts import ArtifactError, fetch_verified, redact
from batcomputer.server.cli import EXIT_BAD_ARTIFACT, refuse
from batcomputer.server.model import Model, load_model, needed_files
from batcomputer.server.settings import Settings

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("batcomputer.server")


def serve(settings: Settings) -> int:
    """Load the model, then hand over to gunicorn (which exits the process when done)."""
    metrics_dir = _prepare_metrics_dir(settings)
    started = time.perf_counter()
    try:
        artifact = fetch_verified(settings, select=partial(needed_files,
                                                          allow_pickle=settings.allow_pickle))
        model = load_model(artifact, name=settings.model_name, memo_limit=settings.memo_limit,
                           isolate=True, allow_pickle=settings.allow_pickle)
        contract.check(model, contract.expected(settings.expected_api))
    except ArtifactError as exc:
        refuse(settings.termination_log, str(exc))
        shutil.rmtree(metrics_dir, ignore_errors=True)
        return EXIT_BAD_ARTIFACT
    except Exception as exc:  # still one line; the traceback only at debug level
        log.debug("Loading failed", exc_info=True)
        refuse(settings.termination_log,
               f"loading {redact(settings.artifact)} failed: {type(exc).__name__}: {exc}")
        shutil.rmtree(metrics_dir, ignore_errors=True)
        return EXIT_BAD_ARTIFACT
    del artifact
    log.info("Loaded %s %s from %s (metadata %s, %s mode, %s) in %.2fs", model.name,
             model.version, model.uri, model.metadata_digest, model.mode, model.runtime,
             time.perf_counter() - started)

    # Imported only now: prometheus_client picks its multiprocess mode at import time.
    from batcomputer.server.app import create_app
    from batcomputer.server.metrics import Metrics

    app = create_app(settings, model, metrics=Metrics(metrics_dir))
    gc.collect()
    release_freed_memory()
    gc.freeze()  # objects made so far stay in pages shared with the forked workers
    GunicornServer(app, gunicorn_options(settings, metrics_dir, model)).run()
    return 0


def release_freed_memory() -> None:
    """Give the heap freed after loading back to the system before the workers fork.
    glibc keeps it otherwise: onnxruntime's parse of model.onnx leaves as much freed heap
    as the session itself (34 MiB of 68 for the 100-tree continuous model), in every
    process."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def _prepare_metrics_dir(settings: Settings) -> Path:
    """A clean folder for the workers' metric files, announced to prometheus_client."""
    root = settings.cache_dir or Path(tempfile.gettempdir())
    root.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="batcomputer-metrics-", dir=root))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)
    return folder


def gunicorn_options(settings: Settings, metrics_dir: Path, model: Model) -> dict[str, Any]:
    """The gunicorn configuration, in code."""
    from batcomputer.server.metrics import worker_exited

    host = f"[{settings.host}]" if ":" in settings.host else settings.host

    def child_exit(server: Any, worker: Any) -> None:
        worker_exited(metrics_dir, worker.pid)

    def on_exit(server: Any) -> None:
        shutil.rmtree(metrics_dir, ignore_errors=True)

    def worker_exit(server: Any, worker: Any) -> None:
        """With gevent workers, end the worker here, with the code it was leaving with:
        at interpreter exit, logging's clean-up runs after gevent's patched threading is
        gone and prints a traceback on every clean exit."""
        if settings.worker_class != "gevent":
            return
        leaving = sys.exc_info()[1]
        code = (leaving.code if isinstance(leaving, SystemExit) and isinstance(leaving.code, int)
                else 0 if leaving is None else 1)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    def pre_request(worker: Any, request: Any) -> None:
        """With gevent workers, let every other connection with a request waiting go first.
        A keep-alive client whose next request is already in the socket buffer is read
        without a switch, so a fast client could hold its worker while others wait
        (measured with wrk at 8 clients: p99 178 ms for a 0.2 ms request)."""
        if settings.worker_class == "gevent":
            import gevent

            gevent.sleep(0)

    def when_ready(server: Any) -> None:
        log.info("Serving %s %s on http://%s:%d with %d worker(s)", model.name, model.version,
                 host, settings.port, settings.workers)

    shm = Path("/dev/shm")
    return {
        "bind": f"{host}:{settings.port}",
        "workers": settings.workers,
        # See Settings.worker_class (and bench/server.py for the figures).
        "worker_class": ("gthread" if settings.worker_class == "sync" and settings.threads > 1
                         else settings.worker_class),
        "threads": settings.threads,
        "worker_connections": settings.worker_connections,
        "preload_app": True,
        "timeout": 30,
        "graceful_timeout": 20,
        "keepalive": 5,
        "loglevel": settings.log_level,
        "errorlog": "-",
        "accesslog": None,
        "control_socket_disable": True,  # it would write under $HOME (read-only in pods)
        "worker_tmp_dir": str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None,
        "proc_name": f"batcomputer-{model.name}-{model.version}",
        "child_exit": child_exit,
        "worker_exit": worker_exit,
        "pre_request": pre_request,
        "when_ready": when_ready,
        "on_exit": on_exit,
    }


class GunicornServer(BaseApplication):  # type: ignore[misc]
    """gunicorn's BaseApplication around an app that is already built."""

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self.application = app
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Flask:
        return self.application
