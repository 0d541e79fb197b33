"""Benchmark the in-training evaluation's share of a demo-size stage-2 sweep trial. Prints; asserts nothing.

    .venv/bin/python bench/bench_sweep_eval.py --workdir /tmp/bench-sweep-eval
    .venv/bin/python bench/bench_sweep_eval.py --workdir demo_out --reuse \
        --stage1 demo_out/runs/demo-stage1/export/model.pt      # after `reactdiff demo`

What `reactdiff demo` sweeps: the demo corpus (configs/demo.yaml sizes, 8 val dyads = 16 val
samples of 750 frames), a stage-2 trial of the demo recipe on 1 worker with α = 3 reactions per
val speaker scored every epoch on the whole val split. The stage-1 MMT is trained for
`--stage1-epochs` only: the evaluation's cost does not depend on how good it is. Reports, from
the trial's MLflow run, the seconds each scoring took (`eval_seconds`: generation + every
REACT2024 metric, global and LRS rows) against the trial's wall time (run start to end).

Measured figures, with those of earlier rounds and the machines they ran on: docs/benchmarks.md.
"""

from __future__ import annotations

from reactdiff import ray_runtime

# An entry point: before anything imports ray, so that a local runtime binds loopback only.
ray_runtime.bind_local_ray_to_loopback()

import argparse
import time
from pathlib import Path

from mlflow import MlflowClient

from reactdiff.config import load_config
from reactdiff.data.prepare import PrepareOptions, prepare
from reactdiff.data.synth import write_recipe_corpus
from reactdiff.demo import RECIPES, ROOT
from reactdiff.mlflow_server import mlflow_server
from reactdiff.train.trainer import run_training
from reactdiff.tune import run_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument(
        "--reuse", action="store_true", help="keep the corpus, store and stage-1 model of a previous run in --workdir"
    )
    parser.add_argument("--alpha", type=int, default=3)
    parser.add_argument("--epochs", type=int, help="epochs of the trial (default: the demo recipe's sweep: block)")
    parser.add_argument("--stage1-epochs", type=int, default=1)
    parser.add_argument("--stage1", type=Path, help="a stage-1 checkpoint to use instead of training one")
    args = parser.parse_args()

    recipe, workdir = RECIPES["full"], args.workdir.resolve()
    corpus, store, runs = workdir / "corpus", workdir / "store", workdir / "runs"
    if not (args.reuse and (store / "manifest.json").is_file()):
        write_recipe_corpus(corpus, load_config(recipe).synth)
        prepare(PrepareOptions(corpus=corpus, out=store, profile="lite"))
    with mlflow_server(workdir / "bench-mlflow") as uri:
        common = [
            f"data.store={store}",
            f"train.storage_path={runs}",
            f"tracking.tracking_uri={uri}",
            "tracking.experiment=bench-sweep-eval",
        ]
        stage1 = args.stage1 or runs / "bench-stage1-stage1" / "export" / "model.pt"
        if not stage1.is_file():
            stage1 = run_training(
                load_config(recipe, common + [f"train.epochs={args.stage1_epochs}", "train.name=bench-stage1"], stage=1)
            ).checkpoint
        name = f"bench-sweep-{int(time.time())}"
        # The demo's sweep trial (its sweep: block), scoring the whole val split every epoch.
        cfg = load_config(
            recipe,
            common
            + [
                f"train.stage1_model={stage1}",
                f"train.name={name}",
                "train.eval_every=1",
                "train.eval_samples=0",
                f"train.eval_alpha={args.alpha}",
            ]
            + ([f"train.epochs={args.epochs}"] if args.epochs else []),
            stage=2,
            sweep=True,
        )
        result = run_sweep(cfg, space=ROOT / cfg.tune.space, stage=2, num_samples=1, scheduler="none")
        client = MlflowClient(uri)
        for row in result.table:
            run = client.get_run(row.run_id)
            wall = (run.info.end_time - run.info.start_time) / 1000
            evals = [m.value for m in client.get_metric_history(row.run_id, "eval_seconds")]
            print(f"\ntrial {row.trial} ({row.params}): {row.epochs} epochs in {wall:.1f} s (MLflow run start to end)")
            print(
                f"  scoring (α = {args.alpha}, {len(evals)} times, whole val split): "
                + ", ".join(f"{s:.1f} s" for s in evals)
            )
            print(f"  share of the trial: {sum(evals) / wall:.1%} (goal <= 15 %)")
            print(
                f"  val_FRDist {row.metrics['val_FRDist']:.3f}  val_FRCorr {row.metrics['val_FRCorr']:.3f}  "
                f"val_FRDiv {row.metrics['val_FRDiv']:.4f}"
            )


if __name__ == "__main__":
    main()
