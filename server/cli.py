"""`batcomputer serve`: fetch, verify and load the artifact once, then run gunicorn.

The artifact is loaded in the gunicorn master before the workers fork (preload),
so a bad artifact stops the process with one log line and a non-zero exit, and
the workers share the loaded model's memory.
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from gunicorn.app.base import BaseApplication

from batcomputer.server.artifacts import ArtifactError, fetch_verified, redact
from batcomputer.server.model import Model, load_model
from batcomputer.server.settings import Settings, SettingsError

if TYPE_CHECKING:
    from flask import Flask

log = logging.getLogger("batcomputer.server")

EXIT_BAD_SETTINGS: Final = 2
EXIT_BAD_ARTIFACT: Final = 3


DESCRIPTION: Final = ("Fetch and verify a model artifact, then serve predictions. Every flag "
                      "can also be set with its BATCOMPUTER_* environment variable; flags win.")
FLAGS: Final = ("artifact", "version", "digest", "model_name", "host", "port", "workers",
                "threads")
# Imported by the other subcommands; a server process should not carry them.
HEAVY_MODULES: Final = ("pandas", "sklearn", "kopf", "kubernetes")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="serve a model artifact over HTTP (Flask + gunicorn)",
                           description=DESCRIPTION)
    add_arguments(serve)
    serve.set_defaults(func=cmd_serve)


def add_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--artifact", help="artifact URI: folder, file://, http(s)://, "
                                          "pvc://CLAIM/PATH [BATCOMPUTER_ARTIFACT]")
    serve.add_argument("--version", help="refuse to serve any other version "
                                         "[BATCOMPUTER_VERSION]")
    serve.add_argument("--digest", help="pinned sha256:HEX of metadata.json "
                                        "[BATCOMPUTER_DIGEST]")
    serve.add_argument("--model-name", help="name to serve under (default: the artifact's) "
                                            "[BATCOMPUTER_MODEL_NAME]")
    serve.add_argument("--host", help="address to bind (default 0.0.0.0) [BATCOMPUTER_HOST]")
    serve.add_argument("--port", type=int, help="port (default 8080) [BATCOMPUTER_PORT]")
    serve.add_argument("--workers", type=int, help="gunicorn workers (default 2) "
                                                   "[BATCOMPUTER_WORKERS]")
    serve.add_argument("--threads", type=int, help="threads per worker; more than 1 uses "
                                                   "gthread workers (default 1: sync workers) "
                                                   "[BATCOMPUTER_THREADS]")


def cmd_serve(args: argparse.Namespace) -> int:
    if any(name in sys.modules for name in HEAVY_MODULES):
        _exec_lean(args)
    try:
        settings = Settings.from_env(artifact=args.artifact, version=args.version,
                                     digest=args.digest, model_name=args.model_name,
                                     host=args.host, port=args.port, workers=args.workers,
                                     threads=args.threads)
    except SettingsError as exc:
        log.error("Refusing to serve: %s", exc)
        return EXIT_BAD_SETTINGS
    if not getattr(args, "quiet", False):
        logging.getLogger().setLevel(settings.log_level.upper())
    return serve(settings)


def _exec_lean(args: argparse.Namespace) -> None:
    """Become `python -m batcomputer.server` (same PID, same flags): the `batcomputer`
    command imports the training and operator stacks, which every worker would carry."""
    argv = [sys.executable, "-m", "batcomputer.server"]
    if getattr(args, "quiet", False):
        argv.append("-q")
    for flag in FLAGS:
        value = getattr(args, flag, None)
        if value is not None:
            argv += [f"--{flag.replace('_', '-')}", str(value)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)


def serve(settings: Settings) -> int:
    """Load the model, then hand over to gunicorn (which exits the process when done)."""
    metrics_dir = _prepare_metrics_dir(settings)
    started = time.perf_counter()
    try:
        artifact = fetch_verified(settings)
        model = load_model(artifact, name=settings.model_name, memo_limit=settings.memo_limit,
                           isolate=True)
    except ArtifactError as exc:
        log.error("Refusing to serve: %s", exc)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        return EXIT_BAD_ARTIFACT
    except Exception as exc:  # still one line; the traceback only at debug level
        log.debug("Loading failed", exc_info=True)
        log.error("Refusing to serve: loading %s failed: %s: %s", redact(settings.artifact),
                  type(exc).__name__, exc)
        shutil.rmtree(metrics_dir, ignore_errors=True)
        return EXIT_BAD_ARTIFACT
    del artifact
    log.info("Loaded %s %s from %s (metadata %s, %s mode) in %.2fs", model.name, model.version,
             model.uri, model.metadata_digest, model.mode, time.perf_counter() - started)

    # Imported only now: prometheus_client picks its multiprocess mode at import time.
    from batcomputer.server.app import create_app
    from batcomputer.server.metrics import Metrics

    app = create_app(settings, model, metrics=Metrics(metrics_dir))
    gc.collect()
    gc.freeze()  # objects made so far stay in pages shared with the forked workers
    GunicornServer(app, gunicorn_options(settings, metrics_dir, model)).run()
    return 0


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

    def when_ready(server: Any) -> None:
        log.info("Serving %s %s on http://%s:%d with %d worker(s)", model.name, model.version,
                 host, settings.port, settings.workers)

    shm = Path("/dev/shm")
    return {
        "bind": f"{host}:{settings.port}",
        "workers": settings.workers,
        # sync workers: one request at a time per process, so no GIL hand-offs and
        # requests spread over the workers; measured (bench/) the same requests/s as
        # gthread on 2 cores with about half the p99. Threads > 1 -> gthread
        # (keep-alive, useful for slow clients or the estimator mode).
        "worker_class": "sync" if settings.threads == 1 else "gthread",
        "threads": settings.threads,
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
