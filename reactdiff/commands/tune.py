"""`reactdiff tune`: a Ray Tune sweep over a YAML search space, ranked by reaction quality."""

from __future__ import annotations

import argparse
from pathlib import Path

from reactdiff import console
from reactdiff.commands.recipe import add_config_args, load_recipe

DESCRIPTION = """\
Every trial is a Ray Train run scored on val in units that mean the same in every trial:
  stage 1: reconstructions (val_recon_FRDist, val_recon_3dmm_mse, val_recon_emotion_l1,
           val_recon_au_f1, val_recon_va_ccc); default objective val_recon_FRDist:min
  stage 2: REACT2024 metrics of generated reactions, global style (val_FRDist, val_FRCorr,
           val_FRDiv, val_FRDvs, val_FRVar, val_FRSyn, val_FRSyn_all, val_FRRea) and LRS style
           (val_LRS_FRDist, ...); default objective val_FRCorr:max (a flat output that ignores
           the speaker wins FRDist, not FRCorr)
val_loss is reported too, but its scale moves with loss weights, T, window and LRS.

examples:
  reactdiff tune --space tune_spaces/stage2.yaml --stage 2 --num-samples 8 train.stage1_model=<ckpt>
  reactdiff tune --space tune_spaces/stage2.yaml --stage 2 --objectives val_FRDist:min,val_FRDiv:max
  ... --promote                  evaluate the best trial on val (α = 10) and promote it
  ... --objectives ... --promote --pick <trial>   promote a Pareto-front member"""


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser(
        "tune",
        help="Ray Tune sweep over a YAML search space (tune_spaces/), ranked by reaction quality",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
    )
    parser.add_argument("--space", type=Path, help="search space YAML (default: the recipe's tune.space)")
    parser.add_argument(
        "--stage",
        type=int,
        choices=[1, 2],
        required=True,
        help="the stage trained; the recipe's stage<k>: and sweep: blocks apply",
    )
    parser.add_argument("--num-samples", type=int, help="trials (default: the recipe's tune.num_samples)")
    parser.add_argument(
        "--search",
        choices=["random", "optuna"],
        default="random",
        help="how trials are drawn (default %(default)s); several objectives always use Optuna's NSGA-II",
    )
    parser.add_argument(
        "--scheduler",
        choices=["asha", "none"],
        help="default: asha for one objective (rungs at train.eval_every·2^k epochs); "
        "none for several (ASHA does not apply to a Pareto search)",
    )
    parser.add_argument(
        "--metric", help="the metric to rank by (default: the space's sweep: entry, else the stage default above)"
    )
    parser.add_argument("--mode", choices=["min", "max"], help="whether lower or higher --metric is better")
    parser.add_argument("--objectives", help="several metrics, name:min|max separated by commas: a Pareto search")
    parser.add_argument(
        "--promote",
        action="store_true",
        help="after the sweep, evaluate the winner on val with α = 10 and register it as challenger "
        "(champion if it beats the current one)",
    )
    parser.add_argument(
        "--pick",
        help="multi-objective sweeps: the Pareto-front trial to promote: its name, its id, "
        "or its row in the printed front table (1 = first)",
    )
    add_config_args(parser)
    return parser


def run(args) -> int:
    from reactdiff.config import ConfigError
    from reactdiff.tune import load_space, plan_sweep, run_sweep

    cfg = load_recipe(args, stage=args.stage, sweep=True)
    space_path = args.space or cfg.tune.space
    if space_path is None:
        raise ConfigError("no search space: give --space tune_spaces/<file>.yaml or set tune.space in the recipe")
    num_samples = args.num_samples or cfg.tune.num_samples
    choices = dict(
        metric=args.metric,
        mode=args.mode,
        objectives=args.objectives,
        search=args.search,
        scheduler=args.scheduler,
        promote=args.promote,
        pick=args.pick,
    )
    # The space and the objectives are checked here, before Ray or MLflow start (run_sweep checks
    # them again, the window sizes also against the store's frame count).
    space = load_space(space_path, cfg, args.stage)
    plan_sweep(args.stage, space.objective, **choices)
    console.say(
        f"tune: {num_samples} stage-{args.stage} trials over {space_path}, {cfg.train.epochs} epochs each, "
        f"sweep name {cfg.train.name}"
    )
    sweep = run_sweep(cfg, space=space_path, stage=args.stage, num_samples=num_samples, **choices)
    console.result(sweep.summary)
    if sweep.promotion is not None:
        console.result(sweep.promotion.summary())
    return 0
