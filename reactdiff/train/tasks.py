"""What the two training stages do differently, behind one interface (`Task`) the worker loop calls.

The model's `state_dict` carries everything a stage fits besides its weights (stage 1: the latent
statistics; stage 2: the LRS styles), so the Engine's epoch checkpoints and the exported file
save and restore a task's whole state; no task saves anything of its own.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import ray.train
import torch
import torch.distributed as dist
from torch import nn

from reactdiff.config import ExperimentConfig
from reactdiff.data.store import Manifest, Store, to_samples
from reactdiff.evaluate.validation import (
    LRS_LABEL,
    MODEL_LABEL,
    REACTION_DIRECTIONS,
    ReconstructionTotals,
    bf16_sampling_available,
    eval_indices,
    reaction_metrics,
    reconstruct,
    score_reactions,
)
from reactdiff.models.checkpoint import load_checkpoint
from reactdiff.models.mmt import MMT, LatentStats, LatentStatsAccumulator
from reactdiff.models.reactdiff import ReactDiff
from reactdiff.train.batches import Batches, LatentBatches
from reactdiff.train.engine import Engine

VAL_GENERATOR_SEED = 1234  # fixed noise/timesteps: stage-2 val losses comparable across epochs


def all_reduce(values: list[float], op=dist.ReduceOp.SUM) -> list[float]:
    """`values` reduced over every worker (as they are without a process group)."""
    tensor = torch.tensor(values, dtype=torch.float64)
    if dist.is_initialized():
        dist.all_reduce(tensor, op=op)
    return tensor.tolist()


class Task(Protocol):
    """One stage's part of training, in the order the worker loop calls it."""

    model: nn.Module  # everything the stage fits lives in its state_dict
    streams: list[str]  # feature streams the batches carry
    roles: tuple[str, ...]  # sample roles the batches carry ("speaker", "listener")
    score_names: list[str]  # metrics `validate` returns only when asked to `score`

    def trainable(self) -> list[nn.Parameter]:
        """The parameters the optimiser steps."""

    def prepare(self, batches: Batches) -> None:
        """Fit what training needs before the first step, from the train shard."""

    def loss(self, engine: Engine, batch: dict[str, Any], generator: torch.Generator | None = None):
        """(loss, parts) of a batch, through the engine's wrapped model."""

    def after_step(self) -> None:
        """After every optimiser step."""

    def train_batches(self, seed: int, steps: int, samples: int) -> LatentBatches | None:
        """An epoch's batches the task holds itself (stage 2's latent cache), or None: the loop
        reads the epoch from the worker's dataset shard."""

    def validate(self, engine: Engine, batches: Batches, score: bool) -> dict[str, float]:
        """`val_loss` and metrics over every worker's val shard; with `score`, `score_names` too."""

    def finish(self, batches: Batches) -> None:
        """Fit what the exported model needs after the last epoch, from the train shard."""


def task_for(cfg: ExperimentConfig, manifest: Manifest, context: dict[str, Any]) -> Task:
    """The task of stage `cfg.train.stage`; `context` is the loop config (stage 1 checkpoint, store)."""
    return TASKS[cfg.train.stage](cfg, manifest, context)


class Stage1Task:
    """MMT autoencoder: every person of every sample reconstructs their own 3DMM and emotion."""

    def __init__(self, cfg: ExperimentConfig, manifest: Manifest, context: dict[str, Any]):
        self.model = MMT(manifest.model_streams(), cfg.model.mmt)
        norm = manifest.normalisation
        if norm:
            self.model.set_threedmm_normalisation(torch.tensor(norm["3dmm_mean"]), torch.tensor(norm["3dmm_std"]))
        self.streams = sorted(set(manifest.model_streams()) | {"emotion", "3dmm"})
        self.roles = ("listener",)  # every person of the shard appears as a listener
        self.score_names: list[str] = []  # the reconstruction metrics come with every validation pass

    def trainable(self) -> list[torch.nn.Parameter]:
        return list(self.model.parameters())

    def loss(self, engine: Engine, batch: dict[str, Any], generator: torch.Generator | None = None):
        feats = batch["listener"]  # role swap: listeners cover every person of the shard
        return engine.forward(feats, feats["3dmm"], feats["emotion"])

    def prepare(self, batches: Batches) -> None:
        """Nothing to fit before stage 1."""

    def train_batches(self, seed: int, steps: int, samples: int) -> None:
        """Stage 1 trains its encoder: every epoch reads features."""

    def after_step(self) -> None:
        """No averaged weights in stage 1."""

    def validate(self, engine: Engine, batches: Batches, score: bool) -> dict[str, float]:
        """`val_loss` and the weight-free reconstruction metrics over every worker's val shard."""
        loss_sum, count, totals = 0.0, 0, ReconstructionTotals()
        with torch.no_grad():
            for batch in batches:
                loss, _ = self.loss(engine, batch)
                n = len(batch["listener_id"])
                loss_sum, count = loss_sum + float(loss) * n, count + n
                feats = batch["listener"]
                totals.add(*reconstruct(self.model, feats), feats["3dmm"].cpu().numpy(), feats["emotion"].cpu().numpy())
        reduced = all_reduce([loss_sum, count, *totals.as_list()])
        return {
            "val_loss": reduced[0] / reduced[1] if reduced[1] else math.nan,
            **ReconstructionTotals.from_list(reduced[2:]).metrics("val_"),
        }

    def finish(self, batches: Batches) -> None:
        """Latent statistics for stage 2 over this worker's shard, merged across workers, set on
        the model (its state: the exported checkpoint carries them)."""
        acc = LatentStatsAccumulator(self.model.config.latent_dim)
        self.model.eval()
        with torch.no_grad():
            for batch in batches:
                acc.update(self.model.encode(batch["listener"]))
        low, high = acc.low.to(torch.float64), acc.high.to(torch.float64)
        if dist.is_initialized():
            dist.all_reduce(low, op=dist.ReduceOp.MIN)
            dist.all_reduce(high, op=dist.ReduceOp.MAX)
        self.model.set_latent_stats(LatentStats(low.float(), high.float()))


class Stage2Task:
    """Latent DDIM over the frozen MMT of a stage-1 checkpoint, with LRS fitted on train."""

    def __init__(self, cfg: ExperimentConfig, manifest: Manifest, context: dict[str, Any]):
        path = context["stage1_checkpoint"]
        mmt = load_checkpoint(path)  # with the latent statistics stage 1 fitted
        if not isinstance(mmt, MMT):
            raise ValueError(
                f"{path} holds a stage-2 {type(mmt).__name__}; train.stage1_model must point at a stage-1 (MMT) model"
            )
        if not bool(mmt.latent_stats_set):
            raise ValueError(
                f"{path}: the stage-1 model has no latent statistics (a finished stage-1 "
                "training run sets them); train.stage1_model must point at one"
            )
        self.model = ReactDiff.from_stage1(mmt, cfg.model)
        self.streams = sorted(set(manifest.model_streams()) | {"emotion", "3dmm"})
        self.roles = ("speaker", "listener")
        self.use_lrs = cfg.model.lrs.mode != "off"
        labels = [MODEL_LABEL, LRS_LABEL] if self.use_lrs else [MODEL_LABEL]
        self.score_names = [
            *reaction_metrics({label: dict.fromkeys(REACTION_DIRECTIONS) for label in labels}),
            "eval_seconds",
        ]
        self.scorer = ReactionScorer(cfg, context["store_root"], self.streams)
        self.cache_latents = cfg.data.stage2_latents == "cached"
        self.crop_frames = cfg.data.crop_frames

    def trainable(self) -> list[torch.nn.Parameter]:
        return self.model.trainable_parameters()

    def prepare(self, batches: Batches) -> None:
        """Read the train shard once: with `data.stage2_latents=cached`, encode every sample's
        speaker and listener latents (whole clips) for all epochs to crop from; and fit LRS, each
        listener's reference clips gathered from every worker's shard.

        Only the first `reference_clips` clips per listener are kept for LRS (bounded memory at
        any corpus size); the global statistics are estimated over those same clips.
        """
        limit = self.model.lrs.config.reference_clips
        local: dict[str, list[torch.Tensor]] = {}
        cached: list[tuple[torch.Tensor, torch.Tensor]] = []
        ids: list[str] = []
        online = self.model.config.diffusion.train_mode == "online"
        with torch.no_grad():
            for batch in batches:
                if self.cache_latents:
                    cached.append(self.model.training_latents(batch["speaker"], batch["listener"]))
                    ids += batch["listener_id"]
                if self.cache_latents and not online:  # the cached listener latent is LRS's input
                    latents = cached[-1][1].cpu()
                else:
                    latents = self.model.encode_latent(batch["listener"]).cpu()
                self.model.lrs.keep_references(local, latents, batch["listener_id"])
        if self.cache_latents:
            self.cache = (
                torch.cat([s for s, _ in cached]),
                torch.cat([lis for _, lis in cached]),
                ids,
                batches.rows_read,
            )
        gathered = [local]
        if dist.is_initialized():
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, local)
        merged: dict[str, list[torch.Tensor]] = {}
        for part in gathered:
            for listener, clips in sorted(part.items()):
                merged.setdefault(listener, []).extend(clips)
        self.model.lrs.fit({k: v[:limit] for k, v in sorted(merged.items())})

    def train_batches(self, seed: int, steps: int, samples: int) -> LatentBatches | None:
        """With the latent cache, the epoch's batches are crops of it; without, None."""
        if not self.cache_latents:
            return None
        speaker, listener, ids, rows = self.cache
        return LatentBatches(speaker, listener, ids, rows, steps, samples, self.crop_frames, seed)

    def loss(self, engine: Engine, batch: dict[str, Any], generator: torch.Generator | None = None):
        style = self.model.lrs.styles_for(batch["listener_id"]) if self.use_lrs else None
        return engine.forward(batch["speaker"], batch["listener"], style, generator)

    def after_step(self) -> None:
        self.model.update_ema()

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
        reduced = all_reduce([loss_sum, count])
        metrics = {"val_loss": reduced[0] / reduced[1] if reduced[1] else math.nan}
        if score:
            metrics.update(self.scorer.score(self.model))
        return metrics

    def finish(self, batches: Batches) -> None:
        """Nothing to collect after stage 2."""


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
        self.indices = eval_indices(len(self.samples["speaker_clip"]), self.cfg.train.eval_samples, self.cfg.train.seed)

    def score(self, model: ReactDiff) -> dict[str, float]:
        scores: list[dict[str, float] | None] = [None]
        if ray.train.get_context().get_world_rank() == 0:
            if self.samples is None:
                self._load()
            start = time.perf_counter()
            precision = self.cfg.train.eval_precision
            bf16 = precision == "bf16" or (precision == "auto" and bf16_sampling_available(model.latent_center.device))
            result = score_reactions(
                model,
                self.samples,
                self.appropriate,
                self.cfg.train.eval_alpha or 10,
                seed=self.cfg.train.seed,
                indices=self.indices,
                progress=False,
                bf16_sampling=bf16,
            )
            scores[0] = {**reaction_metrics(result.rows), "eval_seconds": time.perf_counter() - start}
        if dist.is_initialized():
            dist.broadcast_object_list(scores, src=0)
        return scores[0]


TASKS: dict[int, type[Task]] = {1: Stage1Task, 2: Stage2Task}
