"""`reactdiff config`: every effective value of a recipe."""

from __future__ import annotations

import argparse

from reactdiff.commands.recipe import add_config_args, load_recipe

QUICK = True  # starts neither Ray nor MLflow: prints straight to the terminal, no log file


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser("config", help="print the effective configuration (defaults + recipe + overrides)")
    add_config_args(parser)
    return parser


def run(args) -> int:
    from reactdiff.config import flatten

    for key, value in flatten(load_recipe(args)).items():
        print(f"{key} = {value}")
    return 0
