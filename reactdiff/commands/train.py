"""`reactdiff train stage1|stage2`: one stage with Ray Train; prints the model's URI."""

from __future__ import annotations

import argparse

from reactdiff import console
from reactdiff.commands.recipe import add_config_args, load_recipe

STAGES = {"stage1": 1, "stage2": 2}


def register(add_parser) -> argparse.ArgumentParser:
    parser = add_parser(
        "train",
        help="train stage 1 (MMT) or stage 2 (latent DDIM) with Ray Train",
        description="Run a Ray Train TorchTrainer (DDP or DeepSpeed). Re-running the same "
        "train.name resumes from its latest checkpoint and MLflow run.",
    )
    parser.add_argument(
        "stage",
        choices=list(STAGES),
        help="stage1: the MMT autoencoder; stage2: the latent DDIM over a frozen MMT (train.stage1_model=...)",
    )
    add_config_args(parser)
    return parser


def run(args) -> int:
    from reactdiff.train.inputs import training_inputs

    stage = STAGES[args.stage]
    cfg = load_recipe(args, stage=stage)
    inputs = training_inputs(cfg)  # a user error is refused before the trainer's imports and Ray

    from reactdiff.train.progress import format_metrics
    from reactdiff.train.trainer import run_training

    what = "the MMT autoencoder" if stage == 1 else "the latent conditional DDIM (MMT frozen)"
    console.say(
        f"train stage {stage}: {what}, {cfg.train.epochs} epochs on {cfg.train.num_workers} "
        f"{cfg.train.strategy} worker(s), run name {cfg.train.name}-stage{stage}"
    )
    result = run_training(cfg, inputs)
    console.say(
        f"done: run {result.run_id}, checkpoint {result.checkpoint}  " + "  ".join(format_metrics(result.metrics))
    )
    console.result(result.model_uri)
    return 0
