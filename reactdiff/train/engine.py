"""One training-step interface over the two distributed strategies: PyTorch DDP and DeepSpeed ZeRO.

This is the only module that knows how DDP and DeepSpeed differ: wrapping, backward/step,
and how their state is saved (DDP: rank 0 writes one file; DeepSpeed: every rank writes its shard).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from reactdiff.atomic_io import atomic_open
from reactdiff.config import TrainConfig

STATE_FILE = "engine_state.pt"


def _optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    # The paper's AdamW (β 0.9/0.999, weight decay 5e-4).
    return torch.optim.AdamW(params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int):
    from transformers import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup

    if cfg.schedule == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, cfg.warmup_steps, max(total_steps, 1))
    return get_constant_schedule_with_warmup(optimizer, cfg.warmup_steps)


class Engine:
    """Wraps `module` for distributed training; only `trainable` parameters are optimised."""

    def __init__(
        self, module: nn.Module, trainable: list[nn.Parameter], cfg: TrainConfig, total_steps: int, micro_batch: int
    ):
        self.cfg = cfg
        self.module = module
        self.deepspeed = cfg.strategy == "deepspeed"
        optimizer = _optimizer(trainable, cfg)
        scheduler = _scheduler(optimizer, cfg, total_steps)
        if self.deepspeed:
            import deepspeed

            ds_config = {
                "train_micro_batch_size_per_gpu": micro_batch,
                "gradient_accumulation_steps": 1,
                "zero_optimization": {"stage": cfg.zero_stage},
                "bf16": {"enabled": cfg.precision == "bf16"},
                "gradient_clipping": cfg.grad_clip,
                "steps_per_print": 10**9,
            }
            # deepspeed.initialize reuses the process group Ray Train already set up.
            self.wrapped, self.optimizer, _, self.scheduler = deepspeed.initialize(
                model=module,
                optimizer=optimizer,
                lr_scheduler=scheduler,
                config=ds_config,
                model_parameters=trainable,
            )
        else:
            import ray.train.torch

            # Each step's gradients end up as views into DDP's all-reduce buckets: no lasting second
            # copy of them (400 MB for the paper's MMT) and no copy back after each all-reduce.
            self.wrapped = ray.train.torch.prepare_model(
                module, parallel_strategy="ddp", parallel_strategy_kwargs={"gradient_as_bucket_view": True}
            )
            self.optimizer, self.scheduler = optimizer, scheduler
        self.trainable = trainable

    @property
    def device(self) -> torch.device:
        return next(self.module.parameters()).device

    def autocast(self):
        """bf16 autocast on GPU for DDP (DeepSpeed's bf16 section handles its own casting)."""
        enabled = self.cfg.precision == "bf16" and not self.deepspeed
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=enabled)

    def forward(self, *args, **kwargs):
        return self.wrapped(*args, **kwargs)

    def step(self, loss: torch.Tensor) -> None:
        if self.deepspeed:
            self.wrapped.backward(loss)
            self.wrapped.step()  # clips, steps the optimiser and the scheduler
            return
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.trainable, self.cfg.grad_clip)
        self.optimizer.step()
        self.scheduler.step()

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    # ---- checkpoints -----------------------------------------------------------------------
    def save(self, directory: Path, rank: int) -> None:
        """DDP: rank 0 writes model+optimiser+scheduler. DeepSpeed: every rank writes its shard."""
        if self.deepspeed:
            self.wrapped.save_checkpoint(str(directory), tag="deepspeed")
        elif rank == 0:
            state = {
                "model": self.module.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
            }
            with atomic_open(directory / STATE_FILE) as file:
                torch.save(state, file)

    def load(self, directory: Path) -> None:
        if self.deepspeed:
            self.wrapped.load_checkpoint(str(directory), tag="deepspeed")
            return
        state = torch.load(directory / STATE_FILE, map_location=self.device, weights_only=True)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
