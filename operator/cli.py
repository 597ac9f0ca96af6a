"""`batcomputer operator` runs the operator; `batcomputer status|promote|rollback` are the
admin commands (also `kubectl batmodel status|promote|rollback`: batcomputer.cli).

The admin commands use the user's kubeconfig, as kubectl does, and only change the
BatModel's spec: the operator does the rest.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from typing import TYPE_CHECKING, Any

from batcomputer.operator.settings import PREFIX, Settings

if TYPE_CHECKING:  # the kubernetes client is imported only when a command runs
    from batcomputer.operator.k8s import Kube

ADMIN_FIELD_MANAGER = "batcomputer-cli"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "operator", help="run the BatModel operator (kopf)",
        description=f"Watch BatModels and reconcile their Deployments and Services. "
                    f"Configured by {PREFIX}* environment variables (see README).")
    parser.add_argument("--namespace", action="append", default=None,
                        help=f"namespace to watch (repeatable; default {PREFIX}NAMESPACES "
                             "or every namespace)")
    parser.set_defaults(func=run)
    register_admin(sub)


def register_admin(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", help="the BatModel's name")
        p.add_argument("-n", "--namespace", default=None,
                       help="namespace (default: the kubeconfig context's, as kubectl)")

    status = sub.add_parser("status", help="a BatModel's versions, traffic and recent history",
                            description="Show a BatModel's versions, what serves each endpoint, "
                                        "its conditions and its recent history.")
    common(status)
    status.set_defaults(func=cmd_status)
    promote = sub.add_parser("promote", help="make the stable endpoint serve a listed version",
                             description="Set spec.promoted; the stable Service moves once the "
                                         "version is Ready.")
    common(promote)
    promote.add_argument("version")
    promote.set_defaults(func=cmd_promote)
    rollback = sub.add_parser(
        "rollback", help="go back to the version that served before (from status.history)",
        description="Put back the version that served before, with the artifact and digest "
                    "history recorded: the stable endpoint's by default, or one MAJOR's.")
    common(rollback)
    rollback.add_argument("--major", type=int, default=None,
                          help="roll back this MAJOR's version instead of the stable endpoint")
    rollback.set_defaults(func=cmd_rollback)
    decide = sub.add_parser("canary", help="decide a running canary by hand: promote or abort",
                            description="Complete a running canary now (promote) or end it, all "
                                        "traffic back to the current version (abort).")
    common(decide)
    decide.add_argument("action", choices=("promote", "abort"))
    decide.set_defaults(func=cmd_canary)


def run(args: argparse.Namespace) -> int:
    from batcomputer.operator.handlers import run_operator

    settings = Settings.from_env()
    if args.namespace:
        settings = dataclasses.replace(settings, namespaces=tuple(args.namespace))
    if not getattr(args, "quiet", False):
        logging.getLogger().setLevel(settings.log_level.upper())
    run_operator(settings)
    return 0


def _connect(args: argparse.Namespace) -> tuple[Kube, str, dict[str, Any]]:
    from batcomputer.errors import UserError
    from batcomputer.operator import k8s

    kube = k8s.Kube(k8s.api_client(), ADMIN_FIELD_MANAGER)
    namespace = args.namespace or k8s.default_namespace()
    bm = kube.batmodel(namespace, args.model)
    if bm is None:
        raise UserError(f"BatModel {namespace}/{args.model} not found")
    return kube, namespace, bm


def cmd_status(args: argparse.Namespace) -> int:
    from batcomputer.operator.admin import render_status

    _, _, bm = _connect(args)
    print(render_status(bm))
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from batcomputer.operator.admin import promote_patch

    kube, namespace, bm = _connect(args)
    kube.patch_batmodel(namespace, args.model, promote_patch(bm, args.version))
    print(f"Promoted {args.version} for {namespace}/{args.model}; the stable endpoint moves "
          f"once it is Ready (batcomputer status {args.model} -n {namespace})")
    return 0


def cmd_canary(args: argparse.Namespace) -> int:
    from batcomputer.operator.admin import canary_patch

    kube, namespace, bm = _connect(args)
    kube.patch_batmodel(namespace, args.model, canary_patch(bm, args.action))
    print(f"Asked the operator to {args.action} the canary of {namespace}/{args.model}")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    from batcomputer.operator.admin import rollback_patch

    kube, namespace, bm = _connect(args)
    patch, what = rollback_patch(bm, args.major)
    kube.patch_batmodel(namespace, args.model, patch)
    print(f"Rolling {what}")
    return 0
