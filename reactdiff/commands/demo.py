"""`reactdiff demo`: the whole pipeline on a synthetic corpus, locally, end to end."""

from __future__ import annotations

import argparse
from pathlib import Path

LOGS = "logs"  # the demo's log folder, under --workdir


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser(
        "demo",
        help="the whole pipeline on a synthetic corpus, locally, end to end",
        description="synth → prepare → stage 1 → stage 2 → sweep → evaluate → promote → "
        "generate from models:/…@champion, on a local Ray runtime with an MLflow server "
        "on a SQLite file (127.0.0.1). Ends with the metric table against the naive "
        "baselines, the real-time factor of online generation, where the plots, a reaction "
        "video and the MLflow database are, and the command that opens the MLflow UI. The full size "
        "takes about 11 minutes on 2 CPU cores.",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=Path("demo_out"),
        help="folder for the corpus, store, checkpoints, MLflow database, plots and "
        "generated reactions (its demo outputs are replaced)",
    )
    parser.add_argument(
        "--size",
        choices=["full", "small"],
        default="full",
        help="full: the recipe in configs/demo.yaml at learning size; small: a minute-long "
        "smoke run (what the end-to-end test runs)",
    )
    return parser


def log_dir(args) -> Path:
    """The demo keeps its log with its other outputs."""
    return args.workdir / LOGS


def run(args) -> int:
    from reactdiff.demo import run_demo

    return run_demo(workdir=args.workdir, size=args.size)
