"""The `batcomputer` command: one entry point, a subcommand per job."""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import PackageNotFoundError, version

from batcomputer.errors import UserError
from batcomputer.operator import cli as operator_cli
from batcomputer.server import cli as server_cli
from batcomputer.testenv import cli as testenv_cli
from batcomputer.training import cli as training_cli

# The optional dependencies each command needs (pyproject.toml).
EXTRAS = {"serve": "server", "operator": "operator", "status": "operator", "promote": "operator",
          "rollback": "operator", "canary": "operator", "train": "training",
          "generate-data": "training", "versions": "training", "testenv": "dev"}


def project_version() -> str:
    try:
        return version("batcomputer")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="batcomputer", description=__doc__)
    parser.add_argument("--version", action="version", version=f"batcomputer {project_version()}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    training_cli.register(sub)
    operator_cli.register(sub)
    testenv_cli.register(sub)
    server_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return int(args.func(args))
    except ModuleNotFoundError as exc:
        extra = EXTRAS.get(args.command, "dev")
        print(f"batcomputer {args.command}: error: {exc}; this command needs the '{extra}' "
              f"extra: pip install 'batcomputer[{extra}]'", file=sys.stderr)
        return 2
    except (UserError, ValueError) as exc:
        print(f"batcomputer {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def kubectl_plugin(argv: list[str] | None = None) -> int:
    """`kubectl batmodel status|promote|rollback ...`: the admin commands as a kubectl plugin
    (kubectl runs the kubectl-batmodel command this is installed as)."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] not in ("status", "promote", "rollback", "canary"):
        print("usage: kubectl batmodel {status,promote,rollback,canary} MODEL [-n NAMESPACE] ...",
              file=sys.stderr)
        return 2
    return main(args)


if __name__ == "__main__":
    sys.exit(main())
