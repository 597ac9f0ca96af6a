"""`batcomputer operator`: run the BatModel operator."""

from __future__ import annotations

import argparse
import dataclasses

from batcomputer.operator.settings import PREFIX, Settings


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser(
        "operator", help="run the BatModel operator (kopf)",
        description=f"Watch BatModels and reconcile their Deployments and Services. "
                    f"Configured by {PREFIX}* environment variables (see README).")
    parser.add_argument("--namespace", action="append", default=None,
                        help=f"namespace to watch (repeatable; default {PREFIX}NAMESPACES "
                             "or every namespace)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from batcomputer.operator.handlers import run_operator

    settings = Settings.from_env()
    if args.namespace:
        settings = dataclasses.replace(settings, namespaces=tuple(args.namespace))
    run_operator(settings)
    return 0
