"""`reactdiff evaluate`: REACT2024 metrics of a model beside the naive baselines and B_Ridge."""

from __future__ import annotations

import argparse
from pathlib import Path

from reactdiff import console
from reactdiff.commands.recipe import add_config_args, load_recipe
from reactdiff.request_checks import DEFAULT_ALPHA, MODES


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser("evaluate", help="REACT2024 metrics for a model, the four naive baselines and B_Ridge")
    parser.add_argument("--model", help="checkpoint path or MLflow URI; omit to evaluate the baselines only")
    parser.add_argument("--split", default="test", help="the split scored (default %(default)s)")
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=MODES[0],
        help="offline: whole clips; online: window by window, as WS /stream serves (default %(default)s)",
    )
    parser.add_argument("--alpha", type=int, default=DEFAULT_ALPHA, help="reactions per speaker (default %(default)s)")
    parser.add_argument("--max-samples", type=int, default=0, help="evaluate the first N samples only (0: all)")
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="the denoiser's precision while sampling; bf16 is ~1.7x faster on CPUs with native bf16 "
        "(AVX-512 BF16/AMX) and moves the metrics slightly; fp32 is the reference",
    )
    parser.add_argument(
        "--videos",
        type=int,
        default=2,
        help="stage-2 models: this many seeded samples as MP4s (speaker video and audio beside "
        "3 reactions and the real listener), logged next to the plots; needs data.corpus=<corpus root>",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/eval"), help="tables and plots (default %(default)s)")
    add_config_args(parser)
    return parser


def run(args) -> int:
    from reactdiff.evaluate.run import evaluate

    evaluation = evaluate(
        load_recipe(args),
        model=args.model,
        split=args.split,
        mode=args.mode,
        alpha=args.alpha,
        out_dir=args.out,
        max_samples=args.max_samples,
        precision=args.precision,
        videos=args.videos,
    )
    console.result(evaluation.summary())
    console.say(f"tables, plots and videos: {evaluation.out_dir} (and in MLflow run {evaluation.run_id})")
    return 0
