"""`reactdiff train stage1|stage2`: builds and fits a Ray Train `TorchTrainer` from a typed config.

Re-running with the same `train.name` and `train.storage_path` resumes from the latest
checkpoint and keeps logging into the same MLflow run; `FailureConfig` restarts failed workers
from it. The finished model is exported as one self-describing checkpoint and logged to MLflow.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from reactdiff import console, tracking
from reactdiff.config import ExperimentConfig, flatten
from reactdiff.data.store import Store
from reactdiff.ray_runtime import ray_init
from reactdiff.tags import GIT_COMMIT_TAG, STAGE1_MODEL_TAG, STAGE_TAG, STORE_FINGERPRINT_TAG
from reactdiff.train.inputs import TrainingInputs, training_inputs
from reactdiff.train.loop import CRASH_ENV, EXPORT_FILE, loop_config_for, train_loop_per_worker


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    checkpoint: Path
    metrics: dict


# A build of DeepSpeed's op takes ~30 s; a lock file this much older is a killed build's.
STALE_BUILD_LOCK_SECONDS = 600


def _torch_extensions_env() -> dict[str, str]:
    """DeepSpeed compiles a small op on first use; cache it across runs and workers."""
    cache = os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "reactdiff-torch-extensions"))
    remove_stale_build_locks(Path(cache))
    return {"TORCH_EXTENSIONS_DIR": cache}


def remove_stale_build_locks(cache: Path, max_age_s: float = STALE_BUILD_LOCK_SECONDS) -> list[Path]:
    """Remove op-build lock files left by a build that was killed (e.g. Ctrl-C during a first
    DeepSpeed run). torch's builder waits on such a lock forever, so every later DeepSpeed run on
    this machine would hang silently in `deepspeed.initialize`. Only this node's cache is cleaned."""
    removed = []
    for lock in cache.glob("*/lock"):
        try:
            if time.time() - lock.stat().st_mtime > max_age_s:
                lock.unlink()
                removed.append(lock)
        except FileNotFoundError:  # another process finished or removed it meanwhile
            continue
    for lock in removed:
        console.say(f"removed a stale op-build lock left by a killed build: {lock}")
    return removed


# `data.cache: auto` keeps a split in the object store when it fills at most this share of it.
# Re-decoding the Parquet files every epoch dominated the epochs of the demo and the paper-profile
# benchmark; a quarter leaves room for the blocks in flight and for the other split.
CACHE_OBJECT_STORE_SHARE = 0.25


def _dataset(store: Store, split: str, cache: str):
    import ray

    dataset = store.ray_dataset(split)
    capacity = ray.cluster_resources().get("object_store_memory", 0)
    if cache == "always" or (cache == "auto" and store.split_bytes(split) <= CACHE_OBJECT_STORE_SHARE * capacity):
        dataset = dataset.materialize()
    return dataset


def _ingest_options():
    """Ray Train's default ingest options, with each worker's rows in a fixed order.

    Ray Data's default lets blocks overtake each other as read tasks finish; the seeded
    shuffle (`Batches`) then starts from a different order in every run, and a seeded demo would not repeat.
    """
    import ray.train

    options = ray.train.DataConfig.default_ingest_options()
    options.preserve_order = True
    return options


def build_trainer(
    cfg: ExperimentConfig,
    tags: dict[str, str] | None = None,
    callbacks: list | None = None,
    inputs: TrainingInputs | None = None,
):
    """The TorchTrainer for `cfg`, its MLflow run (created or resumed) and its export folder.

    `tags` are added to a new MLflow run (sweeps pass `mlflow.parentRunId`); `callbacks` go to the
    Train RunConfig (sweeps pass Tune's TuneReportCallback); `inputs` are `training_inputs(cfg)`
    where the caller checked them already.
    """
    import ray.data
    import ray.train
    from ray.train.torch import TorchTrainer

    from reactdiff.train.rendezvous import NodeAddressTorchConfig

    inputs = inputs or training_inputs(cfg)
    store, stage1_checkpoint = inputs.store, inputs.stage1_checkpoint
    ray_init()
    ray.data.DataContext.get_current().enable_progress_bars = False  # per-epoch lines instead
    storage = Path(cfg.train.storage_path).resolve()
    run_name = f"{cfg.train.name}-stage{cfg.train.stage}"
    run_id = tracking.start_or_resume_run(
        tracking.client_for(cfg.tracking.tracking_uri),
        cfg.tracking.experiment,
        run_name,
        tags={
            STAGE_TAG: str(cfg.train.stage),
            STORE_FINGERPRINT_TAG: store.manifest.store_fingerprint,
            GIT_COMMIT_TAG: tracking.git_commit(),
            STAGE1_MODEL_TAG: cfg.train.stage1_model,
            **(tags or {}),
        },
        params=flatten(cfg),
    )
    export_dir = storage / run_name / "export"
    loop_config = loop_config_for(cfg, store, run_id, export_dir, stage1_checkpoint)

    env = {"OMP_NUM_THREADS": str(max(1, int(cfg.train.cpus_per_worker))), **_torch_extensions_env()}
    if CRASH_ENV in os.environ:  # fault-injection hook of the tests, passed on to the workers
        env[CRASH_ENV] = os.environ[CRASH_ENV]
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config=loop_config,
        scaling_config=ray.train.ScalingConfig(
            num_workers=cfg.train.num_workers,
            use_gpu=cfg.train.use_gpu,
            resources_per_worker={"CPU": cfg.train.cpus_per_worker},
            placement_strategy=cfg.train.placement_strategy,
        ),
        run_config=ray.train.RunConfig(
            name=run_name,
            storage_path=str(storage),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep),
            failure_config=ray.train.FailureConfig(max_failures=cfg.train.max_failures),
            worker_runtime_env={"env_vars": env},
            callbacks=callbacks or None,
        ),
        datasets={
            split: _dataset(store, name, cfg.data.cache)
            for split, name in (("train", cfg.data.train_split), ("val", cfg.data.val_split))
        },
        dataset_config=ray.train.DataConfig(execution_options=_ingest_options()),
        torch_config=NodeAddressTorchConfig(),
    )
    return trainer, run_id, export_dir


def run_training(cfg: ExperimentConfig, inputs: TrainingInputs | None = None) -> TrainResult:
    """Fit stage `cfg.train.stage`, printing one line per epoch to the terminal; `inputs` are
    `training_inputs(cfg)` where the caller checked them already."""
    from reactdiff.train.progress import EpochLines

    inputs = inputs or training_inputs(cfg)  # before Ray starts: a user error is refused in seconds
    ray_init()
    lines = EpochLines(f"stage {cfg.train.stage}", cfg.train.epochs)
    trainer, run_id, export_dir = build_trainer(cfg, callbacks=[lines.callback], inputs=inputs)
    try:
        with lines:
            result = trainer.fit()
    except Exception:
        tracking.finish_run(tracking.client_for(cfg.tracking.tracking_uri), run_id, status="FAILED")
        raise
    return TrainResult(
        run_id=run_id,
        model_uri=f"runs:/{run_id}/{tracking.MODEL_ARTIFACT}",
        checkpoint=export_dir / EXPORT_FILE,
        metrics=dict(result.metrics or {}),
    )
