"""`reactdiff prepare`: a corpus's per-frame features in a Parquet feature store (Ray Data)."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from reactdiff import console
from reactdiff.data.prepare import PrepareOptions

# The flags' defaults are PrepareOptions' own.
DEFAULTS = {f.name: f.default for f in dataclasses.fields(PrepareOptions)}


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser(
        "prepare",
        help="extract per-frame features into a Parquet feature store (Ray Data)",
        description="Read a REACT2024-layout corpus, skip and report bad clips "
        "(<out>/rejected.json), and write one Parquet row per dyad plus manifest.json "
        "and the appropriate-reaction matrices. Exit status 1 only when nothing usable remains.",
    )
    parser.add_argument("--corpus", type=Path, required=True, help="corpus root holding train.csv/val.csv/test.csv")
    parser.add_argument(
        "--out",
        required=True,
        help="store folder or pyarrow.fs URI (s3://bucket/prefix); a re-run with the same settings resumes it, "
        "skipping finished parts",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="delete --out first (needed when settings or extractors changed since it was written)",
    )
    parser.add_argument(
        "--profile",
        choices=["lite", "paper"],
        default=DEFAULTS["profile"],
        help="lite: the person's Emotion+3DMM and MFCC; paper: adds wav2vec2 and facial predictors "
        "(default %(default)s)",
    )
    parser.add_argument("--wav2vec2", type=Path, help="paper profile: local wav2vec2 folder (save_pretrained)")
    parser.add_argument(
        "--facial",
        nargs="*",
        metavar="NAME=PATH",
        help="paper profile: TorchScript predictors va=<.pt> au=<.pt> fe=<.pt>",
    )
    parser.add_argument(
        "--appropriate",
        type=Path,
        help="folder of given matrices <split>.npy (2R×2R); computed from speaker similarity if omitted",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULTS["threshold"],
        help="similarity threshold of the computed appropriateness matrix (default %(default)s)",
    )
    parser.add_argument(
        "--rows-per-part",
        type=int,
        default=DEFAULTS["rows_per_part"],
        help="dyads per Parquet file (default %(default)s)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=DEFAULTS["workers"],
        help="parallel Ray Data extraction actors (default %(default)s)",
    )
    parser.add_argument(
        "--gpus-per-worker",
        type=float,
        help="paper profile: GPU fraction per extraction actor (0: CPU); default: the "
        "cluster's GPUs shared among the workers, at most one each, or CPU when it has none",
    )
    return parser


def run(args) -> int:
    from reactdiff.data.prepare import prepare
    from reactdiff.data.store import Location

    facial = {}
    for item in args.facial or []:
        name, _, path = item.partition("=")
        facial[name] = Path(path)
    options = PrepareOptions(
        corpus=args.corpus,
        out=args.out,
        profile=args.profile,
        rows_per_part=args.rows_per_part,
        wav2vec2_dir=args.wav2vec2,
        facial_predictors=facial,
        appropriate_dir=args.appropriate,
        threshold=args.threshold,
        workers=args.workers,
        gpus_per_worker=args.gpus_per_worker,
        rebuild=args.rebuild,
    )
    manifest = prepare(options)  # PrepareError (nothing usable) is reported by cli.main, status 1
    splits = ", ".join(f"{s}: {v['rows']} dyads" for s, v in manifest.splits.items())
    location = Location(args.out)
    console.result(
        f"feature store {location.shown} ({manifest.profile} profile, {manifest.frames} frames): "
        f"{splits}; {manifest.rejected_count} rejected (see {location.name('rejected.json')})"
    )
    return 0
