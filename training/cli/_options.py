"""Options and helpers that several commands share."""

from __future__ import annotations

import argparse
from pathlib import Path


def data_dir(value: str) -> Path:
    """The directory a ``--data`` value names: ``sample`` is the data set bundled with the package."""
    if value == "sample":
        from slotfill.data.sample import sample_data_dir

        return sample_data_dir()
    return Path(value)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--set KEY=VALUE ...``: the training settings (read by :func:`train_config`)."""
    parser.add_argument("--config", type=Path, help="JSON file of training settings (see training/config.py)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", nargs="+",
                        help="override one setting, e.g. --set cell=gru epochs=20 (repeatable)")


def train_config(args: argparse.Namespace):
    """The :class:`~training.config.TrainConfig` that ``--config`` and ``--set`` describe."""
    from ..config import TrainConfig

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    config.apply_overrides([pair for group in args.overrides for pair in group])
    return config
