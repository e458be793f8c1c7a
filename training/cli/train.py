"""``slotfill train``: train a tagger and export its artifact."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from ._options import add_config_options, data_dir, train_config


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "train", help="train a tagger and export its artifact",
        epilog="Early stopping: with --set patience=P (default 9), training stops once P epochs in a row have "
               "not beaten the best dev selection score (dev slot F1 + 0.001 x dev intent accuracy); "
               "patience=0 trains all the epochs (--set epochs=N, "
               "default 40). The best epoch's weights are kept.")
    parser.add_argument("--data", default="sample",
                        help="data directory (folder, CoNLL or JSONL format), or 'sample' for the bundled data")
    parser.add_argument("--out", required=True, type=Path, help="output directory for the model artifact")
    parser.add_argument("--seed", type=int, help="random seed (default: the config's, 0)")
    add_config_options(parser)
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing run in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..pipeline import Trainer

    config = train_config(args)
    if args.seed is not None:
        config.seed = args.seed
    log = (lambda message: None) if args.quiet else None
    result = Trainer(data_dir(args.data), args.out, config, resume=args.resume, overwrite=args.overwrite,
                     progress=None if not args.quiet else False, log=log).run()
    if os.environ.get("RANK", "0") != "0":  # under torchrun, rank 0 speaks for the run
        return 0
    report = result.report
    intent = "" if report["intent_accuracy"] is None else f", intent accuracy {100 * report['intent_accuracy']:.2f}"
    print(f"{report['split']} slot F1 {100 * report['slot_f1']:.2f}{intent}; model written to {result.out_dir}")
    return 0
