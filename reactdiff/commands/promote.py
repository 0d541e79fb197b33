"""`reactdiff promote`: register the best evaluated run, and move `champion` if it is better."""

from __future__ import annotations

import argparse

from reactdiff import console
from reactdiff.commands.recipe import add_config_args, load_recipe


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser(
        "promote",
        help="register the best run and move the champion alias if it is better",
        description="Pick the best finished run on --metric, register its model, alias it "
        "'challenger', and move 'champion' only if it beats the current one (or --force). "
        "Undo with: reactdiff promote --rollback",
    )
    parser.add_argument(
        "--experiment", help="the MLflow experiment of the runs (default: the recipe's tracking.experiment)"
    )
    parser.add_argument(
        "--metric",
        default="FRCorr",
        help="the evaluation metric runs are compared by (default %(default)s: FRDist alone rewards flat outputs "
        "that ignore the speaker); stage-1 MMTs: recon_FRDist",
    )
    parser.add_argument(
        "--mode",
        choices=["min", "max"],
        default="max",
        help="whether lower or higher --metric is better (default %(default)s)",
    )
    parser.add_argument("--split", default="val", help="the split the runs were evaluated on (default %(default)s)")
    parser.add_argument(
        "--store-fingerprint",
        help="compare only runs evaluated on this feature store (the store_fingerprint in its manifest.json); "
        "default: the champion's store",
    )
    parser.add_argument("--model-name", help="the registered model (default: the recipe's tracking.registered_model)")
    parser.add_argument("--tracking-uri", help="the MLflow server (default: the recipe's tracking.tracking_uri)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="make the run champion even if it does not beat the current one, or the champion is not comparable",
    )
    parser.add_argument("--rollback", action="store_true", help="move champion back to the previous champion")
    add_config_args(parser)
    return parser


def run(args) -> int:
    from reactdiff import registry

    cfg = load_recipe(args)
    uri = args.tracking_uri or cfg.tracking.tracking_uri
    name = args.model_name or cfg.tracking.registered_model
    if args.rollback:
        version = registry.rollback(uri, name)
        console.result(f"champion of {name} rolled back to version {version}")
        return 0
    result = registry.promote(
        uri,
        args.experiment or cfg.tracking.experiment,
        args.metric,
        args.mode,
        name,
        split=args.split,
        force=args.force,
        store_fingerprint=args.store_fingerprint,
    )
    console.result(result.summary())
    return 0
