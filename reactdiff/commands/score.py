"""`reactdiff score`: REACT2024 metrics of predictions made elsewhere, in the official shapes."""

from __future__ import annotations

import argparse
from pathlib import Path

from reactdiff import console
from reactdiff.errors import Refused

DESCRIPTION = """\
Score emotion predictions (N, α, T, 25) against a split's ground truth, with the same
table, JSON and plots as `evaluate`. Sample order: with R rows in <split>.csv, sample s < R is row s
as written (speaker_path speaks), sample R + s is row s role-swapped (listener_path speaks).
Refused, naming the file and field: a wrong shape or sample count, NaN/inf, an AU or expression
probability outside [0, 1], valence/arousal outside [-1, 1], a matrix of the wrong size, clips
that do not match the split. Details: docs/scoring.md."""
EPILOG = """\
examples:
  reactdiff score emotion.npy --corpus /data/REACT2024 --split test \\
      --appropriate /data/REACT2024/neighbour_emotion_test.npy --out score_out/
  reactdiff score preds.pt --threedmm 3dmm.npy --corpus /data/REACT2024 --split val --clips order.txt
  reactdiff score out/ --store data/store --split test          # a folder written by `generate`
  reactdiff score csv_folder/ --corpus data/corpus --split test --baselines \\
      --tracking-uri http://127.0.0.1:5000 --label my-team   # also a run of its own in MLflow"""


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser(
        "score",
        help="REACT2024 metrics for predictions made elsewhere (the official shapes)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
        epilog=EPILOG,
    )
    parser.add_argument(
        "predictions",
        type=Path,
        help="emotion .npy/.pt (N, α, T, 25), a `generate` folder, or a folder of per-clip CSVs",
    )
    parser.add_argument("--corpus", type=Path, help="ground truth: a REACT2024-layout corpus root")
    parser.add_argument("--store", help="ground truth: a feature store, folder or URI (its matrix included)")
    parser.add_argument("--split", default="test", help="the split the predictions are for (default %(default)s)")
    parser.add_argument(
        "--appropriate",
        type=Path,
        help="the (N, N) appropriateness matrix (.npy/.csv), e.g. the official neighbour_emotion_test.npy; "
        "default: the store's, or for a corpus computed from speaker similarity like `prepare`",
    )
    parser.add_argument("--threedmm", type=Path, help="3DMM predictions (N, α, T, 58), checked for shape and values")
    parser.add_argument(
        "--clips",
        type=Path,
        help="the speaker clip of each prediction row, one per line, to match an array to the split",
    )
    parser.add_argument("--label", default="predictions", help="the row name in the table and MLflow")
    parser.add_argument(
        "--baselines",
        action="store_true",
        help="add B_Random, B_Mime and B_Ridge rows (each costs a scoring; "
        "B_Ridge is fitted on the train split of the same --corpus or --store)",
    )
    parser.add_argument("--out", type=Path, default=Path("runs/score"), help="tables and plots (default %(default)s)")
    parser.add_argument("--tracking-uri", help="log the results to this MLflow server as a run of its own")
    parser.add_argument("--experiment", default="reactdiff-score", help="the MLflow experiment of that run")
    return parser


def _truth(args, split: str, appropriate: Path | None = None, with_matrix: bool = True):
    from reactdiff.evaluate.score import truth_from_corpus, truth_from_store

    if args.corpus:
        return truth_from_corpus(args.corpus, split, appropriate, with_matrix=with_matrix)
    return truth_from_store(args.store, split, appropriate, with_matrix=with_matrix)


def run(args) -> int:
    from reactdiff import tags, tracking
    from reactdiff.evaluate.score import load_predictions, score

    if (args.corpus is None) == (args.store is None):
        raise Refused("give the ground truth as exactly one of --corpus ROOT or --store DIR (with --split)")
    try:
        truth = _truth(args, args.split, args.appropriate)
        predictions = load_predictions(args.predictions, truth, args.threedmm, args.clips)
    except ValueError as err:  # ScoreError, and the corpus reader's, store's and matrix loader's refusals
        raise Refused(str(err)) from None
    train = None
    if args.baselines:
        try:  # B_Ridge is fitted on the train split of the same ground truth
            train = _truth(args, "train", with_matrix=False)
        except ValueError as err:
            console.say(f"note: B_Ridge left out, it is fitted on the train split, which could not be read: {err}")
    rows, markdown, files = score(
        predictions, truth, args.out, label=args.label, with_baselines=args.baselines, train=train
    )
    console.result(
        f"REACT2024 metrics of {predictions.source} (α={predictions.emotion.shape[1]}) on {truth.source} "
        f"({len(truth.listener)} samples):\n\n{markdown}"
    )
    console.say(f"tables and plots: {args.out}")
    if args.tracking_uri:
        run_id = tracking.log_scoring(
            args.tracking_uri,
            args.experiment,
            f"score-{args.label}",
            rows,
            args.label,
            files,
            f"evaluation/{args.split}-score",
            {tags.EVAL_SPLIT_TAG: args.split, tags.EVAL_MODE_TAG: "score"},
        )
        console.result(f"logged to MLflow run {run_id} ({args.tracking_uri}, experiment '{args.experiment}')")
    return 0
