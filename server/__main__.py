"""`python -m batcomputer.server`: the same as `batcomputer serve`."""

from __future__ import annotations

import argparse
import logging
import sys

from batcomputer.server import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="batcomputer serve", description=cli.DESCRIPTION)
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    cli.add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    return int(cli.cmd_serve(args))


if __name__ == "__main__":
    sys.exit(main())
