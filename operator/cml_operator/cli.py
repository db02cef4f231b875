"""The ``cml-operator`` command line."""

from __future__ import annotations

import argparse

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cml-operator", description="Reconcile CMLWorker resources against Amazon EC2.")
    parser.add_argument("--version", action="version", version=f"cml-operator {__version__}")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    build_parser().parse_args(argv)
    return 0
