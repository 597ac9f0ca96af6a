"""`batcomputer serve`: fetch, verify and load the artifact once, then run gunicorn.

The artifact is loaded in the gunicorn master before the workers fork (preload),
so a bad artifact stops the process with one log line and a non-zero exit, and
the workers share the loaded model's memory.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Final

from batcomputer.server.settings import Settings, SettingsError

log = logging.getLogger("batcomputer.server")

EXIT_BAD_SETTINGS: Final = 2
EXIT_BAD_ARTIFACT: Final = 3


DESCRIPTION: Final = ("Fetch and verify a model artifact, then serve predictions. Every flag "
                      "can also be set with its BATCOMPUTER_* environment variable; flags win.")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="serve a model artifact over HTTP (Flask + gunicorn)",
                           description=DESCRIPTION)
    add_arguments(serve)
    serve.set_defaults(func=cmd_serve)


def add_arguments(serve: argparse.ArgumentParser) -> None:
    serve.add_argument("--artifact", help="artifact URI: folder, file://, http(s)://, "
                                          "pvc://CLAIM/PATH or s3://BUCKET/PREFIX/ "
                                          "[BATCOMPUTER_ARTIFACT]")
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
    serve.add_argument("--worker-class", choices=["gevent", "sync", "gthread"],
                       help="gunicorn worker model (default gevent: slow or idle clients hold "
                            "nothing others need) [BATCOMPUTER_WORKER_CLASS]")
    serve.add_argument("--threads", type=int, help="threads per gthread worker "
                                                   "[BATCOMPUTER_THREADS]")
    serve.add_argument("--allow-pickle", action=argparse.BooleanOptionalAction, default=None,
                       help="whether pickles may be loaded for an artifact without the "
                            "pickle-free form (default: allowed; the image says false) "
                            "[BATCOMPUTER_ALLOW_PICKLE]")


def refuse(termination_log: Path, reason: str) -> None:
    """Say once why the server will not serve: in the log, and in the termination-message
    file when the platform provides one (Kubernetes shows it in the pod's status)."""
    message = f"Refusing to serve: {reason}"
    log.error("%s", message)
    if termination_log.is_file():
        try:
            termination_log.write_text(message[:4000] + "\n")
        except OSError as exc:
            log.debug("Cannot write %s: %s", termination_log, exc)


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        settings = Settings.from_env(artifact=args.artifact, version=args.version,
                                     digest=args.digest, model_name=args.model_name,
                                     host=args.host, port=args.port, workers=args.workers,
                                     threads=args.threads, worker_class=args.worker_class,
                                     allow_pickle=args.allow_pickle)
    except SettingsError as exc:
        refuse(Settings.termination_log, str(exc))
        return EXIT_BAD_SETTINGS
    if not getattr(args, "quiet", False):
        logging.getLogger().setLevel(settings.log_level.upper())
    from batcomputer.server.runner import serve  # Flask, gunicorn, numpy: only to serve

    return serve(settings)
