"""``slotfill tag``: text lines or JSONL requests in, JSONL predictions out."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("tag", help="tag text lines or JSONL requests, writing JSONL")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--input", type=Path, help="input file (default: standard input)")
    parser.add_argument("--output", type=Path, help="output file (default: standard output)")
    parser.add_argument("--format", choices=("auto", "text", "jsonl"), default="auto",
                        help="input format: one utterance per line, or JSON objects with 'text' or 'tokens' "
                             "(auto: a line starting with '{' is JSON). An empty or whitespace-only text is "
                             "refused (empty_text), as the HTTP API refuses it: in text input that is a blank "
                             "line; JSONL input skips blank lines")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--intent-ranking", type=_positive, metavar="K",
                        help="add the K most confident intents to each line's intent, as 'ranking' (K from 1 to the "
                             "model's number of intents), as the HTTP API's intent_ranking does")
    parser.add_argument("--min-confidence", type=_unit_interval, metavar="X",
                        help="drop slots whose confidence is below X (from 0 to 1), label their tokens O and mark them "
                             "with the label they lost ('dropped_label'), as the HTTP API's min_confidence does")
    parser.add_argument("--alternatives", type=_positive, metavar="K",
                        help="add the K most probable label sequences to each line as 'alternatives' (a model with "
                             "a CRF), or each token's K most probable labels as its 'top_labels' (a model without "
                             "one), as the HTTP API's alternatives does")
    return parser


def _unit_interval(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if not 0.0 <= number <= 1.0:  # NaN too
        raise argparse.ArgumentTypeError(f"must be from 0 to 1: {value}")
    return number


def _positive(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return number


def run(args: argparse.Namespace) -> int:
    from ..tagging import tag_stream

    tag_stream(args.model, args.input, args.output, input_format=args.format, batch_size=args.batch_size,
               intent_ranking=args.intent_ranking or 0, min_confidence=args.min_confidence,
               alternatives=args.alternatives or 0)
    return 0
