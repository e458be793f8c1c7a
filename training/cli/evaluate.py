"""``slotfill evaluate``: score an artifact on a data split; print the report, optionally write it."""

from __future__ import annotations

import argparse
from pathlib import Path

from slotfill.engines import BACKENDS

from ._options import data_dir


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("evaluate", help="evaluate an artifact on a data split")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--data", required=True, help="data directory, or 'sample'")
    parser.add_argument("--split", default="test", choices=("train", "valid", "test"))
    parser.add_argument("--out", type=Path, help="write report.json and report.txt here")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="inference backend (auto: onnx when the artifact has a graph)")
    return parser


def run(args: argparse.Namespace) -> int:
    from slotfill.artifact import atomic_write_json, atomic_write_text
    from slotfill.evaluation import evaluate_artifact
    from slotfill.reporting import format_report

    report = evaluate_artifact(args.model, data_dir(args.data), args.split, backend=args.backend)
    text = format_report(report, title=f"{args.model} on {args.data} ({args.split})")
    print(text)
    if args.out:
        atomic_write_json(args.out / "report.json", report)
        atomic_write_text(args.out / "report.txt", text)
    return 0
