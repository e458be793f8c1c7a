"""``slotfill evaluate``: score an artifact on a data split; print the report, optionally write it (with
errors.jsonl and report.html, the error analysis)."""

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
    parser.add_argument("--out", type=Path, help="write report.json, report.txt, errors.jsonl (every sentence that is not an "
                        "exact match, its span errors classed) and report.html (scores, confusion, worst sentences, "
                        "the model's plots; self-contained) here")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="inference backend (auto: onnx when the artifact has a graph)")
    return parser


def run(args: argparse.Namespace) -> int:
    from slotfill.scoring.evaluation import evaluate_artifact_with_errors
    from slotfill.scoring.reporting import format_report, write_report

    report, errors = evaluate_artifact_with_errors(args.model, data_dir(args.data), split_name(args.split),
                                                   backend=args.backend)
    title = f"{args.model} on {args.data} ({args.split})"
    print(format_report(report, title=title))
    if args.out:
        try:
            # Plots already in --out win over the model's (training's) own.
            write_report(report, args.out, title=title, errors=errors, figures_from=(args.out, args.model))
        except OSError as exc:
            raise SlotfillError(f"--out {args.out}: cannot write the report ({exc.strerror})") from None
    return 0
