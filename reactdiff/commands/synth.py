"""`reactdiff synth`: a seeded synthetic corpus in the REACT2024 layout."""

from __future__ import annotations

import argparse
from pathlib import Path

from reactdiff import console
from reactdiff.commands.recipe import add_config_args, load_recipe

QUICK = True  # starts neither Ray nor MLflow: prints straight to the terminal, no log file
# The sizes a flag may set over the recipe's synth: block (`reactdiff config` shows the defaults).
SIZE_FLAGS = ("dyads", "val_dyads", "test_dyads", "frames", "seed", "video_size")


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser(
        "synth",
        help="write a seeded synthetic corpus in the REACT2024 layout",
        description="Write a synthetic corpus (WAV, Emotion CSV, 3DMM NPY, MP4, split CSVs) "
        "whose listeners react to their speakers with a lag, a personal style and "
        "several reaction modes, so models have something real to learn. Sizes come from the "
        "recipe's synth: block; a flag wins over it.",
    )
    parser.add_argument("--out", type=Path, required=True, help="new, empty folder for the corpus")
    parser.add_argument("--dyads", type=int, help="train dyads (split CSV rows)")
    parser.add_argument("--val-dyads", type=int, help="val dyads")
    parser.add_argument("--test-dyads", type=int, help="test dyads")
    parser.add_argument("--frames", type=int, help="frames used per clip (files hold one more, like REACT2024)")
    parser.add_argument("--seed", type=int, help="the corpus seed: the same seed writes the same corpus")
    parser.add_argument("--video-size", type=int, help="pixels of the square MP4s")
    add_config_args(parser)
    return parser


def run(args) -> int:
    from reactdiff.data.synth import write_recipe_corpus

    sizes = load_recipe(args).synth
    for flag in SIZE_FLAGS:
        if getattr(args, flag) is not None:
            setattr(sizes, flag, getattr(args, flag))
    summary = write_recipe_corpus(args.out, sizes)
    console.result(f"wrote a synthetic REACT2024 corpus to {args.out}: {summary}")
    return 0
