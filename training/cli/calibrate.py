"""``slotfill calibrate``: fit confidence temperatures on a dev split and store them in an artifact."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._options import data_dir


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("calibrate", help="fit confidence temperatures on a data set's dev split "
                                                     "and store them in an artifact")
    parser.add_argument("--model", required=True, type=Path, help="artifact directory (written in place)")
    parser.add_argument("--data", required=True, help="data directory with a valid (or dev) split, or 'sample'")
    parser.add_argument("--png", type=Path, help="also draw the span reliability diagram here")
    return parser


def run(args: argparse.Namespace) -> int:
    from slotfill.scoring.calibration import calibrate_artifact

    result = calibrate_artifact(args.model, data_dir(args.data))
    print(f"slot temperature {result['slot_temperature']:.4f}, intent temperature {result['intent_temperature']:.4f}")
    for note in result.get("notes", []):
        print(note)
    for warning in result.get("warnings", []):
        print(f"warning: {warning}", file=sys.stderr)
    for kind in ("span", "intent"):
        if f"{kind}_ece_before" in result:
            print(f"{kind} ECE on {result['split']}: {result[f'{kind}_ece_before']:.4f} -> "
                  f"{result[f'{kind}_ece_after']:.4f}")
    if args.png and "span_bins_before" in result:
        from slotfill.scoring.reporting import plot_reliability

        plot_reliability(result["span_bins_before"], result["span_bins_after"], args.png,
                         f"span confidence, temperature {result['slot_temperature']:.3f}")
    return 0
