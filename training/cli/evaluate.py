"""``slotfill evaluate``: score an artifact on a data split; print the report, optionally write it."""

from __future__ import annotations

import argparse
from pathlib import Path

from slotfill.errors import SlotfillError
from slotfill.inference.engines import BACKENDS

from ._options import add_split_option, data_dir, split_name


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("evaluate", help="evaluate an artifact on a data split")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", required=True, help="data directory, or 'sample'")
    add_split_option(parser, "split to evaluate: train, valid (or dev: the same split) or test (default)")
    parser.add_argument("--out", type=Path, help="write report.json and report.txt here")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="inference backend (auto: onnx when the artifact has a graph)")
    return parser


def run(args: argparse.Namespace) -> int:
    from slotfill.scoring.evaluation import evaluate_artifact
    from slotfill.scoring.reporting import format_report, write_report

    report = evaluate_artifact(args.model, data_dir(args.data), split_name(args.split), backend=args.backend)
    title = f"{args.model} on {args.data} ({args.split})"
    print(format_report(report, title=title))
    if args.out:
        try:
            write_report(report, args.out, title=title)
        except OSError as exc:
            raise SlotfillError(f"--out {args.out}: cannot write the report ({exc.strerror})") from None
    return 0
