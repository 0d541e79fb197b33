"""`reactdiff demo`: the whole pipeline end to end on the embedded defaults.

synth → prepare (lite) → stage 1 → stage 2 → a small stage-2 sweep → evaluate (test split, with the
naive baselines) → promote → generate from `models:/reactdiff@champion`, on a local Ray runtime and a
local MLflow server over a SQLite file, all under `--workdir`. Sizes come from
`configs/demo.yaml` (`--size full`) or `configs/demo_small.yaml` (`--size small`, used by the
end-to-end test); corpus and sweep sizes from `SIZES`.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from reactdiff.config import load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SPACES = Path(__file__).resolve().parents[1] / "tune_spaces"


@dataclass(frozen=True)
class DemoSize:
    dyads: int  # train rows
    val_dyads: int
    # The test split is scored against the baselines, so it gets several sessions: with few, the
    # verdict hangs on a handful of people's chance resemblances (e.g. speaker and listener styles
    # that happen to match, which favours B_Mime).
    test_dyads: int
    frames: int
    stage1_epochs: int
    stage2_epochs: int
    sweep_trials: int
    sweep_epochs: int
    sweep_space: str
    online_samples: int
    generated_clips: int  # test speakers the final `generate` step writes reactions for
    stage2_crop_frames: int  # random crops: stage-2 windows start at any frame, not only at k·ws
    seed: int = 0


SIZES = {
    "full": DemoSize(dyads=96, val_dyads=8, test_dyads=32, frames=750, stage1_epochs=10, stage2_epochs=20, sweep_trials=2,
                     sweep_epochs=2, sweep_space="demo_stage2.yaml", online_samples=4, generated_clips=4,
                     stage2_crop_frames=700),
    "small": DemoSize(dyads=4, val_dyads=2, test_dyads=2, frames=100, stage1_epochs=2, stage2_epochs=2, sweep_trials=1, sweep_epochs=2,
                      sweep_space="tiny_stage2.yaml", online_samples=2, generated_clips=4,
                      stage2_crop_frames=75),
}


def _banner(step: int, total: int, text: str) -> None:
    print(f"\n{'=' * 100}\n[{step}/{total}] {text}\n{'=' * 100}", flush=True)


def run_demo(workdir: Path, size: str = "full") -> int:
    import torch

    from reactdiff import registry
    from reactdiff.data.prepare import PrepareOptions, prepare
    from reactdiff.data.synth import write_synthetic_corpus
    from reactdiff.evaluate.run import evaluate
    from reactdiff.evaluate.validation import bf16_sampling_available
    from reactdiff.generate import generate_to_dir, load_speakers, measure_real_time
    from reactdiff.mlflow_server import mlflow_server
    from reactdiff.models.checkpoint import load_checkpoint
    from reactdiff.train.trainer import run_training
    from reactdiff.tune import run_sweep

    started = time.perf_counter()
    recipe = CONFIGS / ("demo.yaml" if size == "full" else f"demo_{size}.yaml")
    demo = SIZES[size]
    workdir = Path(workdir).resolve()
    corpus, store, runs = workdir / "corpus", workdir / "store", workdir / "runs"
    for path in (corpus, store, runs, workdir / "eval", workdir / "generated"):
        shutil.rmtree(path, ignore_errors=True)
    workdir.mkdir(parents=True, exist_ok=True)
    total = 8

    _banner(1, total, f"synth: a synthetic REACT2024 corpus ({demo.dyads} train dyads) → {corpus}")
    write_synthetic_corpus(corpus, dyads={"train": demo.dyads, "val": demo.val_dyads,
                                          "test": demo.test_dyads},
                           frames_on_disk=demo.frames + 1, seed=demo.seed, video_size=32)

    _banner(2, total, f"prepare: Ray Data feature extraction (lite profile) → {store}")
    manifest = prepare(PrepareOptions(corpus=corpus, out=store, profile="lite"))
    print({split: info["rows"] for split, info in manifest.splits.items()})

    mlflow_dir = workdir / "mlflow"
    with mlflow_server(mlflow_dir) as tracking_uri:
        common = [f"data.store={store}", f"train.storage_path={runs}", f"tracking.tracking_uri={tracking_uri}"]
        stage1_cfg = load_config(recipe, common + ["train.stage=1", f"train.epochs={demo.stage1_epochs}"])
        _banner(3, total, "train stage 1: the MMT autoencoder (Ray Train, 2 DDP workers)")
        stage1 = run_training(stage1_cfg)
        print(f"stage-1 model: {stage1.model_uri}  final metrics: {stage1.metrics}")

        stage2_overrides = common + ["train.stage=2", f"train.stage1_model={stage1.checkpoint}",
                                     f"data.crop_frames={demo.stage2_crop_frames}"]
        _banner(4, total, "train stage 2: the latent conditional DDIM with LRS (Ray Train, DeepSpeed ZeRO-2)")
        stage2 = run_training(load_config(recipe, stage2_overrides + [
            "train.strategy=deepspeed", f"train.epochs={demo.stage2_epochs}"]))
        print(f"stage-2 model: {stage2.model_uri}  final metrics: {stage2.metrics}")

        _banner(5, total, f"sweep: {demo.sweep_trials} stage-2 trials over {demo.sweep_space} (Ray Tune, ASHA), "
                          "ranked by FRDist of reactions generated for the val speakers")
        sweep_cfg = load_config(recipe, stage2_overrides + [
            f"train.epochs={demo.sweep_epochs}", "train.num_workers=1", "train.name=demo-sweep",
            "train.eval_every=1"])
        sweep = run_sweep(sweep_cfg, space=SPACES / demo.sweep_space, stage=2, num_samples=demo.sweep_trials,
                          search="random", scheduler="asha", metric="val_FRDist", mode="min")

        # bf16 sampling where the CPU runs it natively: ~1.7x faster generation, metrics within ~0.1 %.
        precision = "bf16" if bf16_sampling_available(torch.device("cpu")) else "fp32"
        _banner(6, total, f"evaluate: REACT2024 metrics on the test split against the naive baselines "
                          f"(denoiser in {precision})")
        eval_cfg = load_config(recipe, common)
        evaluation = evaluate(eval_cfg, model=stage2.model_uri, split="test", mode="offline",
                              alpha=10, out_dir=workdir / "eval", precision=precision)

        _banner(7, total, "promote: register the best evaluated run, alias challenger → champion")
        result = registry.promote(tracking_uri, eval_cfg.tracking.experiment, "FRDist", "min",
                                  eval_cfg.tracking.registered_model, split="test")
        print(result.summary())

        _banner(8, total, f"generate: 10 reactions for each of {demo.generated_clips} test speakers from "
                          "models:/reactdiff@champion")
        files = generate_to_dir(f"models:/{eval_cfg.tracking.registered_model}@champion", f"{store}:test",
                                workdir / "generated", alpha=10, mode="offline", seed=0,
                                tracking_uri=tracking_uri, max_clips=demo.generated_clips)
        online = evaluate(eval_cfg, model=stage2.model_uri, split="test", mode="online", alpha=10,
                          out_dir=workdir / "eval_online", max_samples=demo.online_samples, precision=precision)
        model = load_checkpoint(stage2.checkpoint)
        first = load_speakers(f"{store}:test", list(model.mmt.streams))
        clip = {name: torch.from_numpy(values[:1]) for name, values in first.feats.items()
                if name in model.mmt.streams}
        real_time = measure_real_time(model, clip, alpha=10)

    minutes = (time.perf_counter() - started) / 60
    print(f"\n{'=' * 100}\nreactdiff demo finished in {minutes:.1f} min\n")
    print(f"REACT2024 metrics on the synthetic test split (offline, α = 10, denoiser in {precision}):\n")
    print(evaluation.table_markdown)
    print(evaluation.verdict)
    print("(ReactDiff-LRS: each reaction in its listener's style, estimated from that listener's other "
          "test clips; ReactDiff: the global style)\n")
    print(f"the sweep's trials (val split, α = 3):\n\n{sweep.summary}")
    print("online mode (first samples):\n")
    print(online.table_markdown)
    print(f"streaming online generation, α = 10, one speaker, {torch.get_num_threads()} torch threads: "
          f"{real_time.summary()}\n")
    print(f"plots:            {workdir / 'eval'}/*.png (also in MLflow under evaluation/)")
    print(f"generated files:  {workdir / 'generated'} ({len(files)} files)")
    print(f"MLflow database:  {mlflow_dir / 'mlflow.db'}  (artifacts in {mlflow_dir / 'artifacts'})")
    print("open the MLflow UI on 127.0.0.1 with:\n"
          f"  mlflow ui --backend-store-uri sqlite:///{mlflow_dir / 'mlflow.db'} "
          f"--default-artifact-root {mlflow_dir / 'artifacts'} --host 127.0.0.1 --port 5000")
    return 0

