"""The ``slotfill`` command line.

One module per command (``training/cli/train.py`` is ``slotfill train``), each with
``add_parser(subparsers)`` and ``run(args) -> int``; :data:`COMMANDS` lists them, and it alone
builds the parser and picks the command to run. A :class:`~slotfill.errors.SlotfillError` is
printed as one line (``slotfill CMD: error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from types import ModuleType

from slotfill import __version__
from slotfill.errors import SlotfillError

from . import calibrate, compare, data, encoders, evaluate, export, serve, tag, train

# In the order ``slotfill --help`` lists them.
COMMANDS: tuple[ModuleType, ...] = (train, evaluate, tag, compare, export, calibrate, serve, data, encoders)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="slotfill", description="Train, evaluate and serve recurrent slot taggers.")
    parser.add_argument("--version", action="version", version=f"slotfill {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in COMMANDS:
        module.add_parser(subparsers).set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SlotfillError as exc:
        print(f"slotfill {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"slotfill {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0


__all__ = ["COMMANDS", "build_parser", "main"]
