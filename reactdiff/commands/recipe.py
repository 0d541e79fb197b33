"""What the commands that read a recipe share: the --config flag, the key=value overrides and the
loading of the two into an `ExperimentConfig`."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", type=Path, help="YAML recipe (see configs/); defaults if omitted")
    # Overrides are the leftover key=value words (see cli.main), so they may come before or after flags.
    parser.set_defaults(accepts_overrides=True)
    parser.epilog = "overrides: any number of key=value words, e.g. train.epochs=3 train.num_workers=2"


def load_recipe(args: argparse.Namespace, stage: int | None = None, sweep: bool = False):
    """The recipe of --config with the overrides applied (`config.load_config`)."""
    from reactdiff.config import load_config

    return load_config(args.config, args.overrides, stage=stage, sweep=sweep)
