"""The Ray Train worker loop shared by both stages; read it top to bottom.

Each worker reads only its own shard of the feature store (`ray.train.get_dataset_shard`), turns
dyad rows into role-swapped samples (`Batches`), trains through `Engine` (DDP or DeepSpeed),
validates on its val shard, and reports metrics and a checkpoint every epoch. Rank 0 alone talks
to MLflow. What differs between the stages lives behind `tasks.Task`.

Validation judges each stage by numbers a sweep can rank trials by (`reactdiff.evaluate.validation`):
- stage 1, every epoch: `val_loss` and the weight-free reconstruction metrics (`val_recon_*`), summed
  over every worker's val shard and all-reduced;
- stage 2, every epoch: `val_loss` (the ε-prediction L1); every `train.eval_every` epochs and at the
  last, α = `train.eval_alpha` reactions per val speaker (optionally a fixed, seeded subset of
  `train.eval_samples`), scored with the REACT2024 metrics: `val_FRDist` etc. (global style) and
  `val_LRS_FRDist` etc. (each listener's style). Rank 0 generates and scores them and broadcasts the
  result; MLflow gets them at the epochs they were computed, while Ray reports carry the latest values
  (NaN before the first) with their `eval_epoch`, since Tune needs its metric in every report.

Every epoch also reports `replica_weight_spread`: how far the workers' trainable weights are apart
(max − min over ranks of their sum and sum of squares); data-parallel replicas must hold 0.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import ray.train
import torch
import torch.distributed as dist

from reactdiff import tracking
from reactdiff.config import ExperimentConfig
from reactdiff.data.store import Manifest, Store
from reactdiff.models.checkpoint import save_checkpoint
from reactdiff.train.batches import Batches, LatentBatches
from reactdiff.train.engine import Engine
from reactdiff.train.tasks import all_reduce, task_for

META_FILE = "meta.json"
EXPORT_FILE = "model.pt"
SHARDS_ARTIFACT = "data_shards.json"
# Test hook for fault tolerance: "<marker file>:<epoch>:<rank>" kills that worker once, after the
# epoch's training steps (Ray registers the previous epoch's checkpoint in the meantime).
CRASH_ENV = "REACTDIFF_CRASH_ONCE"


def _maybe_crash(epoch: int, rank: int) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    marker, at_epoch, at_rank = spec.rsplit(":", 2)
    if epoch == int(at_epoch) and rank == int(at_rank) and not Path(marker).exists():
        Path(marker).write_text(f"crashed rank {rank} at epoch {epoch}\n")
        os._exit(1)


def replica_weight_spread(parameters: list[torch.nn.Parameter]) -> float:
    """Largest difference over workers of the parameters' sum and sum of squares (0 when equal)."""
    sums = [0.0, 0.0]
    with torch.no_grad():
        for parameter in parameters:
            values = parameter.to(torch.float64)
            sums[0] += float(values.sum())
            sums[1] += float(values.square().sum())
    highest = all_reduce(sums, op=dist.ReduceOp.MAX)
    lowest = all_reduce(sums, op=dist.ReduceOp.MIN)
    return max(high - low for high, low in zip(highest, lowest, strict=True))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    # `Batches.collate` reads Arrow's read-only buffers through torch.from_numpy and only copies from
    # them. One filter for exactly this message, set in the worker process that trains (not at
    # import): `warnings.catch_warnings` per call would swap the process-wide filters from Ray's
    # collate thread while the training thread runs.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
    cfg = ExperimentConfig.model_validate(loop_config["config"])
    manifest = Manifest.from_json(loop_config["manifest"], "store manifest")
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.manual_seed(cfg.train.seed + rank)
    torch.set_num_threads(max(1, int(cfg.train.cpus_per_worker)))
    device = ray.train.torch.get_device()

    # The stage's model and what it fits before training (stage 2: LRS styles).
    task = task_for(cfg, manifest, loop_config)
    task.model.to(device)
    samples_per_worker = max(1, cfg.train.batch_size // world)
    rows_per_batch = max(1, samples_per_worker // 2)  # each dyad row yields two samples

    def batches(split: str, crop: int, seed: int, shuffle_rows: int = 0) -> Batches:
        return Batches(
            ray.train.get_dataset_shard(split),
            manifest,
            task.streams,
            task.roles,
            rows_per_batch,
            crop,
            seed,
            device,
            shuffle_rows,
        )

    task.prepare(batches("train", 0, cfg.train.seed))
    train_rows = manifest.splits[cfg.data.train_split]["rows"]
    steps_per_epoch = max(1, train_rows // world // rows_per_batch)
    engine = Engine(
        task.model, task.trainable(), cfg.train, steps_per_epoch * cfg.train.epochs, micro_batch=2 * rows_per_batch
    )

    # A restarted or resumed run: the model (all its state), optimiser and schedule of the last epoch.
    start_epoch, run_id = 0, loop_config["mlflow_run_id"]
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            engine.load(Path(directory))
            meta = json.loads((Path(directory) / META_FILE).read_text())
        start_epoch, run_id = meta["epoch"] + 1, meta["mlflow_run_id"]

    client, logged_epoch = None, -1
    if rank == 0:
        client = tracking.client_for(cfg.tracking.tracking_uri)
        client.update_run(run_id, status="RUNNING")
        logged_epoch = tracking.last_logged_epoch(client, run_id)

    latest_scores = dict.fromkeys(task.score_names, math.nan)
    if latest_scores:
        latest_scores["eval_epoch"] = -1

    def train_batches_of(epoch: int) -> Batches | LatentBatches:
        seed = cfg.train.seed * 1000 + epoch * 10 + rank
        held = task.train_batches(seed, steps_per_epoch, 2 * rows_per_batch)
        return held if held is not None else batches("train", cfg.data.crop_frames, seed, cfg.data.shuffle_rows)

    upcoming_train = train_batches_of(start_epoch)
    for epoch in range(start_epoch, cfg.train.epochs):
        # Train.
        task.model.train()
        train_batches = upcoming_train
        loss_sum, count, epoch_start = 0.0, 0, time.perf_counter()
        for batch in train_batches:
            with engine.autocast():
                loss, _ = task.loss(engine, batch)
            engine.step(loss)
            task.after_step()
            n = len(batch["listener_id"])
            loss_sum, count = loss_sum + float(loss.detach()) * n, count + n
        _maybe_crash(epoch, rank)
        elapsed = time.perf_counter() - epoch_start
        if epoch == start_epoch:
            _log_data_shards(client, run_id, epoch, rank, train_batches.rows_read)

        # Validate, while the next epoch's first batch is read.
        if epoch + 1 < cfg.train.epochs:
            upcoming_train = train_batches_of(epoch + 1).start()
        task.model.eval()
        validation = task.validate(
            engine, batches("val", 0, 0), is_eval_epoch(epoch, cfg.train.eval_every, cfg.train.epochs)
        )
        fresh = {k: v for k, v in validation.items() if k in latest_scores}
        if fresh:
            latest_scores.update(fresh, eval_epoch=epoch)
        totals = all_reduce([loss_sum, count, count / max(elapsed, 1e-9)])
        # The wait as the epoch felt it, and its steady part: after the first batch, whose wait is
        # the epoch's start-up (a fixed cost per epoch, which long epochs amortise).
        first_wait = train_batches.first_wait_seconds
        slowest_wait, slowest_steady_wait = all_reduce(
            [
                train_batches.wait_seconds / max(elapsed, 1e-9),
                (train_batches.wait_seconds - first_wait) / max(elapsed - first_wait, 1e-9),
            ],
            op=dist.ReduceOp.MAX,
        )
        metrics = {
            "epoch": epoch,
            "train_loss": totals[0] / max(totals[1], 1),
            **{k: v for k, v in validation.items() if k not in fresh},
            "samples_per_s": totals[2],
            "data_wait_fraction": slowest_wait,
            "data_wait_steady_fraction": slowest_steady_wait,
            "lr": engine.lr(),
            "replica_weight_spread": replica_weight_spread(task.trainable()),
        }
        logged = {**metrics, **fresh}  # MLflow: scores only at the epochs they were computed
        metrics.update(latest_scores)  # Ray/Tune: the latest scores in every report

        # Report, with the epoch's checkpoint.
        with tempfile.TemporaryDirectory() as directory:
            directory = Path(directory)
            engine.save(directory, rank)
            if rank == 0:
                (directory / META_FILE).write_text(json.dumps({"epoch": epoch, "mlflow_run_id": run_id}))
                if epoch > logged_epoch:
                    tracking.log_epoch(client, run_id, logged, epoch)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(directory)))

    # Export: what the stage fits after training (stage 1: latent statistics), then one file.
    task.finish(batches("train", 0, 0))
    if rank == 0:
        export_dir = Path(loop_config["export_dir"])
        path = export_dir / EXPORT_FILE
        task.model.to("cpu")
        save_checkpoint(
            path, task.model, extra={"epochs": cfg.train.epochs, "store_fingerprint": manifest.store_fingerprint}
        )
        meta = {
            "stage": str(cfg.train.stage),
            "store_fingerprint": manifest.store_fingerprint,
            "git_commit": loop_config["git_commit"],
        }
        tracking.log_model(client, run_id, path, metadata=meta)
        tracking.finish_run(client, run_id)


def _log_data_shards(client: tracking.MlflowClient | None, run_id: str, epoch: int, rank: int, rows: list[int]) -> None:
    """Rank 0 logs `data_shards.json` to the run: per rank, its node and the train rows (pair_ids)
    it read in this attempt's first epoch. A distributed run's sanity record: where the workers
    ran, and that their shards cover the split without overlap."""
    record = {"rank": rank, "node_id": ray.get_runtime_context().get_node_id(), "train_rows": sorted(rows)}
    gathered = [record]
    if dist.is_initialized():
        gathered = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, record)
    if rank == 0:
        client.log_dict(run_id, {"epoch": epoch, "ranks": gathered}, SHARDS_ARTIFACT)


def is_eval_epoch(epoch: int, every: int, epochs: int) -> bool:
    """Epochs (0-based) that score generated reactions: every `every`-th, and the last."""
    return (epoch + 1) % every == 0 or epoch == epochs - 1


def loop_config_for(
    cfg: ExperimentConfig, store: Store, run_id: str, export_dir: Path, stage1_checkpoint: str | None
) -> dict[str, Any]:
    return {
        "config": cfg.model_dump(mode="json"),
        "manifest": store.manifest.to_json(),
        "store_root": store.root,  # absolute path or URI
        "mlflow_run_id": run_id,
        "export_dir": str(export_dir),
        "stage1_checkpoint": stage1_checkpoint,
        "git_commit": tracking.git_commit(),
    }
