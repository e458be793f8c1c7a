"""``slotfill serve``: serve an artifact over HTTP (the options and the start of ``python -m service``)."""

from __future__ import annotations

import argparse

from service.main import add_serve_arguments


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("serve", help="serve an artifact over HTTP")
    add_serve_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from service.main import serve_from_args

    serve_from_args(args)
    return 0
