"""``slotfill compare``: train several configurations over seeds and write a Markdown table (and the same as HTML)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._options import add_config_options, data_dir, train_config


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("compare", help="train several configurations over seeds; write a Markdown "
                                   "table (compare.md, and compare.html)")
    parser.add_argument("--data", default="sample")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--configs", nargs="+", default=None,
                        help="configurations to compare: default lstm gru bilstm bigru bilstm-crf bigru-crf "
                             "(default: all but 'default')")
    parser.add_argument("--seeds", type=int, default=3, help="number of seeds per configuration")
    add_config_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from ..compare import run_comparison

    table = run_comparison(data_dir(args.data), args.out, train_config(args), configs=args.configs,
                           seeds=args.seeds)
    print(table)
    return 0
