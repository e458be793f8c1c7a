"""``slotfill data fetch``: download a standard data set (sha256-checked) into a cache."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("data", help="dataset utilities")
    actions = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    fetch = actions.add_parser("fetch", help="download a standard dataset (sha256-checked) into a cache")
    fetch.add_argument("name", choices=("atis", "snips"))
    fetch.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "slotfill" / "datasets")
    fetch.add_argument("--mirror", help="base URL serving {name}/{split}/{file} instead of the public source")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..fetch import fetch  # the one action, "fetch"

    print(fetch(args.name, args.cache, mirror=args.mirror))
    return 0
