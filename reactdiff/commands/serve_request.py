"""`reactdiff serve-request`: the JSON body of a request to `mlflow models serve` of a model."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reactdiff import console
from reactdiff.commands.generate import add_generation_args


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser(
        "serve-request",
        help="write a JSON request body for `mlflow models serve` of a model",
        description="Speaker features from a store split or a corpus clip, in the JSON body "
        "that the served pyfunc takes: POST it to http://<host>:<port>/invocations "
        "(README, 'Serving the champion').",
    )
    parser.add_argument(
        "--model", required=True, help="the served model (its streams are sent), e.g. models:/reactdiff@champion"
    )
    parser.add_argument("--speaker", required=True, help="<store dir>:<split> or a corpus clip file, as for generate")
    parser.add_argument(
        "--max-clips", type=int, default=1, help="the first N speaker clips (0: all; default %(default)s)"
    )
    add_generation_args(parser)
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    return parser


def run(args) -> int:
    from reactdiff.generate import serving_request

    body = serving_request(
        args.model,
        args.speaker,
        max_clips=args.max_clips,
        alpha=args.alpha,
        mode=args.mode,
        seed=args.seed,
        tracking_uri=args.tracking_uri,
    )
    args.out.write_text(json.dumps(body))
    console.result(f"wrote the request body for {args.model} to {args.out}")
    return 0
