"""`reactdiff generate`: listener reactions to a split's speakers or one clip, in REACT2024 formats."""

from __future__ import annotations

import argparse
from pathlib import Path

from reactdiff import console
from reactdiff.request_checks import DEFAULT_ALPHA, MODES

SPEAKER_HELP = (
    "<store dir>:<split> for every speaker of a split, or a corpus clip file "
    "(e.g. <root>/test/Audio_files/NoXI/<session>/Expert_video/3.wav; lite-profile models)"
)


def add_generation_args(parser) -> None:
    """The flags of how reactions are drawn, shared with `serve-request`."""
    parser.add_argument(
        "--alpha", type=int, default=DEFAULT_ALPHA, help="reactions per speaker clip (default %(default)s)"
    )
    parser.add_argument(
        "--mode",
        choices=MODES,
        default=MODES[0],
        help="offline: whole clips; online: window by window, as WS /stream serves (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, help="the generation seed (default: unseeded)")
    parser.add_argument(
        "--tracking-uri",
        help="with an MLflow model URI: the tracking server (default: tracking.tracking_uri, see `reactdiff config`)",
    )


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser("generate", help="generate listener reactions in REACT2024 formats")
    parser.add_argument("--model", required=True, help="checkpoint or MLflow URI, e.g. models:/reactdiff@champion")
    parser.add_argument("--speaker", required=True, help=SPEAKER_HELP)
    add_generation_args(parser)
    parser.add_argument("--listener-ref", nargs="*", help="reference clips of the target listener (LRS)")
    parser.add_argument(
        "--max-clips", type=int, default=0, help="generate for the first N speaker clips of a split only (0: all)"
    )
    parser.add_argument("--out", type=Path, required=True, help="the folder the reactions are written to")
    return parser


def run(args) -> int:
    from reactdiff.generate import generate_to_dir

    files = generate_to_dir(
        args.model,
        args.speaker,
        args.out,
        alpha=args.alpha,
        mode=args.mode,
        listener_ref=args.listener_ref,
        seed=args.seed,
        tracking_uri=args.tracking_uri,
        max_clips=args.max_clips,
    )
    console.result(f"wrote {len(files)} files under {args.out}")
    return 0
