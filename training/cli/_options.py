"""Options and helpers that several commands share."""

from __future__ import annotations

import argparse
from pathlib import Path


def data_dir(value: str) -> Path:
    """The data a ``--data`` value names: ``sample`` is the data set bundled with the package; otherwise a
    data folder, or a single file (or split folder) read as the training data."""
    if value == "sample":
        from slotfill.data.sample import sample_data_dir

        return sample_data_dir()
    return Path(value)


# --split values: the readers find the valid split on disk as valid/ or dev/ (valid.jsonl, dev.jsonl, ...),
# so either name means it here too.
SPLIT_CHOICES = ("train", "valid", "dev", "test")


def add_split_option(parser: argparse.ArgumentParser, help: str) -> None:
    """``--split``: train, valid (or its other name, dev) or test; :func:`split_name` reads it."""
    parser.add_argument("--split", default="test", choices=SPLIT_CHOICES, help=help)


def split_name(value: str) -> str:
    """The :class:`~slotfill.data.Corpus` field a ``--split`` value names (``dev`` is ``valid``)."""
    return "valid" if value == "dev" else value


def config_file(value: str) -> Path:
    """The file a ``--config`` value names: ``sample`` is the recipe shipped with the sample data."""
    if value == "sample":
        from slotfill.data.sample import sample_recipe

        return sample_recipe()
    return Path(value)


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and ``--set KEY=VALUE ...``: the training settings (read by :func:`train_config`)."""
    parser.add_argument("--config", type=config_file,
                        help="JSON file of training settings (see training/config.py); 'sample' is the recipe "
                             "suited to the bundled sample data (slotfill/resources/sample/recipe.json)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", nargs="+",
                        help="override one setting, e.g. --set cell=gru epochs=20 (repeatable)")


def train_config(args: argparse.Namespace):
    """The :class:`~training.config.TrainConfig` that ``--config`` and ``--set`` describe."""
    from ..config import TrainConfig

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    config.apply_overrides([pair for group in args.overrides for pair in group])
    return config
