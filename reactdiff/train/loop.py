"""The Ray Train worker loop shared by both stages.

Each worker reads only its own shard of the feature store (`ray.train.get_dataset_shard`), turns
dyad rows into role-swapped samples, trains through `Engine` (DDP or DeepSpeed), validates on its
val shard, and reports metrics and a checkpoint every epoch. Rank 0 alone talks to MLflow.
What differs between the stages lives in `Stage1Task` / `Stage2Task`.

Validation judges each stage by numbers a sweep can rank trials by (`reactdiff.evaluate.validation`):
- stage 1, every epoch: `val_loss` and the weight-free reconstruction metrics (`val_recon_*`), summed
  over every worker's val shard and all-reduced;
- stage 2, every epoch: `val_loss` (the ε-prediction L1); every `train.eval_every` epochs and at the
  last, α = `train.eval_alpha` reactions per val speaker (optionally a fixed, seeded subset of
  `train.eval_samples`), scored with the REACT2024 metrics: `val_FRDist` etc. (global style) and
  `val_LRS_FRDist` etc. (each listener's style). Rank 0 generates and scores them and broadcasts the
  result; MLflow gets them at the epochs they were computed, while Ray reports carry the latest values
  (NaN before the first) with their `eval_epoch`, since Tune needs its metric in every report.
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

import numpy as np
import ray.train
import torch
import torch.distributed as dist
from ray.data.collate_fn import ArrowBatchCollateFn

from reactdiff.config import ExperimentConfig
from reactdiff.data.store import (
    PERSONS, Manifest, Store, column, feature_chunks, person_of, role_parts, sample_clips, to_samples,
)
from reactdiff.evaluate.validation import (
    LRS_LABEL, MODEL_LABEL, REACTION_DIRECTIONS, ReconstructionTotals, bf16_sampling_available, eval_indices,
    reaction_metrics, reconstruct, score_reactions,
)
from reactdiff.models.checkpoint import read_checkpoint, save_checkpoint, load_checkpoint
from reactdiff.models.mmt import MMT, LatentStats, LatentStatsAccumulator
from reactdiff.models.reactdiff import ReactDiff
from reactdiff import tracking
from reactdiff.train.engine import Engine

META_FILE = "meta.json"
EXPORT_FILE = "model.pt"
# Test hook for fault tolerance: "<marker file>:<epoch>:<rank>" kills that worker once, after the
# epoch's training steps (Ray registers the previous epoch's checkpoint in the meantime).
CRASH_ENV = "REACTDIFF_CRASH_ONCE"
VAL_GENERATOR_SEED = 1234  # fixed noise/timesteps: stage-2 val losses comparable across epochs


def _maybe_crash(epoch: int, rank: int) -> None:
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    marker, at_epoch, at_rank = spec.rsplit(":", 2)
    if epoch == int(at_epoch) and rank == int(at_rank) and not Path(marker).exists():
        Path(marker).write_text(f"crashed rank {rank} at epoch {epoch}\n")
        os._exit(1)


def _all_reduce(values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(tensor, op=op)
    return tensor.tolist()


class Batches:
    """Iterates a worker's dataset shard as role-swapped sample tensors, timing the data wait."""

    def __init__(self, shard, manifest: Manifest, streams: list[str], roles: tuple[str, ...],
                 rows_per_batch: int, crop_frames: int, seed: int, device: torch.device,
                 shuffle_rows: int = 0):
        self.shard, self.manifest, self.streams, self.roles = shard, manifest, streams, roles
        self.rows_per_batch, self.crop_frames, self.device = rows_per_batch, crop_frames, device
        self.seed, self.shuffle_rows = seed, shuffle_rows
        self.rng = np.random.default_rng(seed)
        self.wait_seconds = 0.0

    def __iter__(self):
        # The store is in corpus order (a session's clips together); a seeded local shuffle
        # buffer mixes sessions within each batch and differs every epoch.
        shuffle = ({"local_shuffle_buffer_size": self.shuffle_rows, "local_shuffle_seed": self.seed}
                   if self.shuffle_rows > 0 else {})
        # Ray converts the next batch to tensors in a background thread while this one trains.
        # One batch ahead means one conversion thread, so the crops are drawn in batch order and
        # a seeded run repeats.
        iterator = iter(self.shard.iter_torch_batches(batch_size=self.rows_per_batch, prefetch_batches=1,
                                                      collate_fn=_ArrowCollate(self.collate), **shuffle))
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            batch = {key: {k: v.to(self.device) for k, v in value.items()} if isinstance(value, dict) else value
                     for key, value in batch.items()}
            self.wait_seconds += time.perf_counter() - start
            yield batch

    def collate(self, table) -> dict[str, Any]:
        """Role-swapped float32 sample tensors, cropped, straight from zero-copy views of the batch.

        One copy per stream: torch crops and widens float16 to float32 while it copies each Arrow
        chunk into the batch tensor. Combining chunks, concatenating the role-swapped halves,
        then `astype` in numpy took half of a paper-profile worker's step.
        """
        frames = self.manifest.frames
        lo, hi = 0, frames
        if 0 < self.crop_frames < frames:  # one random crop per batch
            lo = int(self.rng.integers(0, frames - self.crop_frames + 1))
            hi = lo + self.crop_frames
        views = {column(person, stream): feature_chunks(table[column(person, stream)], frames,
                                                        self.manifest.streams[stream].dim)
                 for person in PERSONS for stream in self.streams}

        def convert(role: str, stream: str) -> torch.Tensor:
            chunks = [chunk for part in role_parts(views, role, stream) for chunk in part]
            out = torch.empty((sum(len(c) for c in chunks), hi - lo, chunks[0].shape[2]), dtype=torch.float32)
            offset = 0
            for chunk in chunks:
                out[offset:offset + len(chunk)].copy_(torch.from_numpy(chunk[:, lo:hi]))
                offset += len(chunk)
            return out

        clips = {name: table[name].to_pylist() for name in ("clip_a", "clip_b")}
        return {
            **{role: {stream: convert(role, stream) for stream in self.streams} for role in self.roles},
            "listener_id": [person_of(c) for c in sample_clips(clips)[1]],
        }


class _ArrowCollate(ArrowBatchCollateFn):
    """A collate function that receives Arrow tables: Ray picks the batch format from the class."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, table) -> dict[str, Any]:
        return self.collate(table)


# --------------------------------------------------------------------------------------------
# Stage-specific parts
# --------------------------------------------------------------------------------------------


class Stage1Task:
    """MMT autoencoder: every person of every sample reconstructs their own 3DMM and emotion."""

    def __init__(self, cfg: ExperimentConfig, manifest: Manifest, context: dict[str, Any]):
        self.model = MMT(manifest.model_streams(), cfg.model.mmt)
        norm = manifest.normalisation
        if norm:
            self.model.set_threedmm_normalisation(torch.tensor(norm["3dmm_mean"]), torch.tensor(norm["3dmm_std"]))
        self.streams = sorted(set(manifest.model_streams()) | {"emotion", "3dmm"})
        self.roles = ("listener",)  # every person of the shard appears as a listener
        self.latent_stats: LatentStats | None = None

    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def loss(self, engine: Engine, batch: dict[str, Any]):
        feats = batch["listener"]  # role swap: listeners cover every person of the shard
        return engine.forward(feats, feats["3dmm"], feats["emotion"])

    def prepare(self, batches: Batches) -> None:
        """Nothing to fit before stage 1."""

    def after_step(self) -> None:
        """No averaged weights in stage 1."""

    def score_names(self) -> list[str]:
        return []  # the reconstruction metrics come with every validation pass

    def validate(self, engine: Engine, batches: Batches, score: bool) -> dict[str, float]:
        """`val_loss` and the weight-free reconstruction metrics over every worker's val shard."""
        loss_sum, count, totals = 0.0, 0, ReconstructionTotals()
        with torch.no_grad():
            for batch in batches:
                loss, _ = self.loss(engine, batch)
                n = len(batch["listener_id"])
                loss_sum, count = loss_sum + float(loss) * n, count + n
                feats = batch["listener"]
                totals.add(*reconstruct(self.model, feats), feats["3dmm"].cpu().numpy(),
                           feats["emotion"].cpu().numpy())
        reduced = _all_reduce([loss_sum, count, *totals.as_list()])
        return {"val_loss": reduced[0] / reduced[1] if reduced[1] else math.nan,
                **ReconstructionTotals.from_list(reduced[2:]).metrics("val_")}

    def finish(self, batches: Batches) -> None:
        """Latent statistics for stage 2 over this worker's shard, merged across workers."""
        acc = LatentStatsAccumulator(self.model.config.latent_dim)
        self.model.eval()
        with torch.no_grad():
            for batch in batches:
                acc.update(self.model.encode(batch["listener"]))
        low, high = acc.low.to(torch.float64), acc.high.to(torch.float64)
        if dist.is_initialized():
            dist.all_reduce(low, op=dist.ReduceOp.MIN)
            dist.all_reduce(high, op=dist.ReduceOp.MAX)
        self.latent_stats = LatentStats(low.float(), high.float())

    def export(self, path: Path, extra: dict[str, Any]) -> None:
        stats = {"latent_low": self.latent_stats.low, "latent_high": self.latent_stats.high}
        save_checkpoint(path, self.model, extra={**extra, **stats})


class Stage2Task:
    """Latent DDIM over the frozen MMT of a stage-1 checkpoint, with LRS fitted on train."""

    def __init__(self, cfg: ExperimentConfig, manifest: Manifest, context: dict[str, Any]):
        payload = read_checkpoint(context["stage1_checkpoint"])
        mmt = load_checkpoint(context["stage1_checkpoint"])
        if not isinstance(mmt, MMT):
            raise ValueError(f"{context['stage1_checkpoint']} is a stage-{payload['stage']} checkpoint; "
                             "train.stage1_model must point at a stage-1 (MMT) model")
        self.model = ReactDiff.from_stage1(mmt, cfg.model)
        self.model.set_latent_stats(LatentStats(payload["extra"]["latent_low"], payload["extra"]["latent_high"]))
        self.streams = sorted(set(manifest.model_streams()) | {"emotion", "3dmm"})
        self.roles = ("speaker", "listener")
        self.use_lrs = cfg.model.lrs.mode != "off"
        self.scorer = ReactionScorer(cfg, context["store_root"], self.streams)

    def trainable(self) -> list[torch.nn.Parameter]:
        return self.model.trainable_parameters()

    def prepare(self, batches: Batches) -> None:
        """Fit LRS: each listener's reference clips gathered from every worker's shard.

        Only the first `reference_clips` clips per listener are kept (bounded memory at any corpus
        size); the global statistics are estimated over those same clips.
        """
        limit = self.model.lrs.config.reference_clips
        local: dict[str, list[torch.Tensor]] = {}
        with torch.no_grad():
            for batch in batches:
                latents = self.model.encode_latent(batch["listener"]).cpu()
                for listener, latent in zip(batch["listener_id"], latents):
                    clips = local.setdefault(listener, [])
                    if len(clips) < limit:
                        clips.append(latent)
        gathered = [local]
        if dist.is_initialized():
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
        merged: dict[str, list[torch.Tensor]] = {}
        for part in gathered:
            for listener, clips in sorted(part.items()):
                merged.setdefault(listener, []).extend(clips)
        self.model.lrs.fit({k: v[:limit] for k, v in sorted(merged.items())})

    def loss(self, engine: Engine, batch: dict[str, Any], generator=None):
        style = self.model.lrs.styles_for(batch["listener_id"]) if self.use_lrs else None
        return engine.forward(batch["speaker"], batch["listener"], style, generator)

    def after_step(self) -> None:
        self.model.update_ema()

    def score_names(self) -> list[str]:
        labels = [MODEL_LABEL, LRS_LABEL] if self.use_lrs else [MODEL_LABEL]
        return [*reaction_metrics({label: dict.fromkeys(REACTION_DIRECTIONS) for label in labels}), "eval_seconds"]

    def validate(self, engine: Engine, batches: Batches, score: bool) -> dict[str, float]:
        """`val_loss` over every worker's val shard (fixed noise and timesteps, so epochs compare);
        with `score`, the REACT2024 metrics of reactions generated for the val speakers."""
        generator = torch.Generator().manual_seed(VAL_GENERATOR_SEED + ray.train.get_context().get_world_rank())
        loss_sum, count = 0.0, 0
        with torch.no_grad():
            for batch in batches:
                loss, _ = self.loss(engine, batch, generator)
                n = len(batch["listener_id"])
                loss_sum, count = loss_sum + float(loss) * n, count + n
        reduced = _all_reduce([loss_sum, count])
        metrics = {"val_loss": reduced[0] / reduced[1] if reduced[1] else math.nan}
        if score:
            metrics.update(self.scorer.score(self.model))
        return metrics

    def finish(self, batches: Batches) -> None:
        """Nothing to collect after stage 2."""

    def export(self, path: Path, extra: dict[str, Any]) -> None:
        save_checkpoint(path, self.model, extra=extra)


class ReactionScorer:
    """Stage 2's in-training evaluation: rank 0 reads the val split from the store once, generates
    α reactions per (subset) speaker and scores them; every rank returns rank 0's numbers."""

    def __init__(self, cfg: ExperimentConfig, store_root: str, streams: list[str]):
        self.cfg, self.store_root, self.streams = cfg, store_root, streams
        self.samples: dict[str, Any] | None = None

    def _load(self) -> None:
        store = Store(self.store_root)
        split = self.cfg.data.val_split
        self.samples = to_samples(store.read_split(split, streams=self.streams), self.streams)
        self.appropriate = store.appropriate(split)
        self.indices = eval_indices(len(self.samples["speaker_clip"]), self.cfg.train.eval_samples,
                                    self.cfg.train.seed)

    def score(self, model: ReactDiff) -> dict[str, float]:
        scores: list[dict[str, float] | None] = [None]
        if ray.train.get_context().get_world_rank() == 0:
            if self.samples is None:
                self._load()
            start = time.perf_counter()
            precision = self.cfg.train.eval_precision
            bf16 = precision == "bf16" or (precision == "auto" and bf16_sampling_available(model.latent_center.device))
            result = score_reactions(model, self.samples, self.appropriate, self.cfg.train.eval_alpha or 10,
                                     seed=self.cfg.train.seed, indices=self.indices, progress=False,
                                     bf16_sampling=bf16)
            scores[0] = {**reaction_metrics(result.rows), "eval_seconds": time.perf_counter() - start}
        if dist.is_initialized():
            dist.broadcast_object_list(scores, src=0)
        return scores[0]


# --------------------------------------------------------------------------------------------
# The worker loop
# --------------------------------------------------------------------------------------------


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

    task = (Stage1Task if cfg.train.stage == 1 else Stage2Task)(cfg, manifest, loop_config)
    task.model.to(device)
    samples_per_worker = max(1, cfg.train.batch_size // world)
    rows_per_batch = max(1, samples_per_worker // 2)  # each dyad row yields two samples

    def batches(split: str, crop: int, seed: int, shuffle_rows: int = 0) -> Batches:
        return Batches(ray.train.get_dataset_shard(split), manifest, task.streams, task.roles, rows_per_batch,
                       crop, seed, device, shuffle_rows)

    train_rows = manifest.splits[cfg.data.train_split]["rows"]
    steps_per_epoch = max(1, train_rows // world // rows_per_batch)
    task.prepare(batches("train", 0, cfg.train.seed))
    engine = Engine(task.model, task.trainable(), cfg.train, steps_per_epoch * cfg.train.epochs,
                    micro_batch=2 * rows_per_batch)

    start_epoch, run_id = 0, loop_config.get("mlflow_run_id")
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as directory:
            meta = json.loads((Path(directory) / META_FILE).read_text())
            engine.load(Path(directory))
            if cfg.train.stage == 2:
                task.model.lrs.load_state_dict(torch.load(Path(directory) / "lrs.pt", weights_only=True))
        start_epoch, run_id = meta["epoch"] + 1, meta["mlflow_run_id"]

    logged_epoch = -1
    if rank == 0:
        import mlflow

        mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
        mlflow.MlflowClient().update_run(run_id, status="RUNNING")
        logged_epoch = tracking.last_logged_epoch(run_id)

    latest_scores = dict.fromkeys(task.score_names(), math.nan)
    if latest_scores:
        latest_scores["eval_epoch"] = -1
    for epoch in range(start_epoch, cfg.train.epochs):
        task.model.train()
        train_batches = batches("train", cfg.data.crop_frames, cfg.train.seed * 1000 + epoch * 10 + rank,
                                cfg.data.shuffle_rows)
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
        wait = train_batches.wait_seconds

        task.model.eval()
        score = is_eval_epoch(epoch, cfg.train.eval_every, cfg.train.epochs)
        validation = task.validate(engine, batches("val", 0, 0), score)
        fresh = {k: v for k, v in validation.items() if k in latest_scores}
        if fresh:
            latest_scores.update(fresh, eval_epoch=epoch)
        totals = _all_reduce([loss_sum, count, count / max(elapsed, 1e-9)])
        slowest = _all_reduce([wait / max(elapsed, 1e-9)], op=dist.ReduceOp.MAX)[0]
        metrics = {
            "epoch": epoch,
            "train_loss": totals[0] / max(totals[1], 1),
            **{k: v for k, v in validation.items() if k not in fresh},
            "samples_per_s": totals[2],
            "data_wait_fraction": slowest,
            "lr": engine.lr(),
        }
        logged = {**metrics, **fresh}  # MLflow: scores only at the epochs they were computed
        metrics.update(latest_scores)  # Ray/Tune: the latest scores in every report

        with tempfile.TemporaryDirectory() as directory:
            directory = Path(directory)
            engine.save(directory, rank)
            if rank == 0:
                (directory / META_FILE).write_text(json.dumps({"epoch": epoch, "mlflow_run_id": run_id}))
                if cfg.train.stage == 2:
                    torch.save(task.model.lrs.state_dict(), directory / "lrs.pt")
                if epoch > logged_epoch:
                    tracking.log_epoch(run_id, logged, epoch)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(directory)))

    task.finish(batches("train", 0, 0))
    if rank == 0:
        export_dir = Path(loop_config["export_dir"])
        export_dir.mkdir(parents=True, exist_ok=True)
        path = export_dir / EXPORT_FILE
        task.model.to("cpu")
        task.export(path, extra={"epochs": cfg.train.epochs, "store_fingerprint": manifest.store_fingerprint})
        meta = {"stage": str(cfg.train.stage), "store_fingerprint": manifest.store_fingerprint,
                "git_commit": loop_config["git_commit"]}
        tracking.log_model(run_id, path, metadata=meta)
        tracking.finish_run(run_id)


def is_eval_epoch(epoch: int, every: int, epochs: int) -> bool:
    """Epochs (0-based) that score generated reactions: every `every`-th, and the last."""
    return (epoch + 1) % every == 0 or epoch == epochs - 1


def loop_config_for(cfg: ExperimentConfig, store: Store, run_id: str, export_dir: Path,
                    stage1_checkpoint: str | None) -> dict[str, Any]:
    return {
        "config": cfg.model_dump(mode="json"),
        "manifest": store.manifest.to_json(),
        "store_root": store.root,  # absolute path or URI
        "mlflow_run_id": run_id,
        "export_dir": str(export_dir),
        "stage1_checkpoint": stage1_checkpoint,
        "git_commit": tracking.git_commit(),
    }
