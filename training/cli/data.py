"""``slotfill data fetch``: download a standard data set (sha256-checked) into a cache; ``slotfill data convert``:
bring data from Rasa, snips-nlu, doccano or Hugging Face token classification into a slotfill format."""

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
    convert = actions.add_parser("convert", help="convert data from Rasa, snips-nlu, doccano or token-classification "
                                 "JSON into JSONL, CoNLL or a split folder")
    convert.add_argument("input", type=Path)
    convert.add_argument("--from", dest="source", required=True, choices=("rasa", "snips", "doccano", "tokens"))
    convert.add_argument("--out", type=Path, required=True, help="the file or split folder to write")
    convert.add_argument("--format", choices=("jsonl", "conll", "folder"),
                         help="default: from --out (.jsonl, .conll/.txt/.bio/.iob, else a folder)")
    convert.add_argument("--labels", type=Path, help="tag names, one per line in index order (--from tokens)")
    convert.add_argument("--keep-roles", action="store_true", help="Rasa roles as label suffixes (entity.role)")
    return parser


def run(args: argparse.Namespace) -> int:
    if args.data_command == "convert":
        import sys

        from slotfill.data.importers import convert

        examples, fmt = convert(args.source, args.input, args.out, args.format, labels=args.labels,
                                keep_roles=args.keep_roles,
                                note=lambda line: print(f"slotfill data: note: {line}", file=sys.stderr))
        print(f"wrote {len(examples)} examples to {args.out} ({fmt})")
        return 0
    from ..fetch import fetch

    print(fetch(args.name, args.cache, mirror=args.mirror))
    return 0
