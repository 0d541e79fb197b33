"""The diffusion process of stage 2, kept apart from the network (as in DiT).

Noise schedule, forward noising and deterministic DDIM stepping come from `diffusers`
(cosine schedule, ε-prediction, x0 clamped to [-1, 1]); only the loss and the loop are ours.

Optional classifier-free guidance (Ho & Salimans 2022; not in the ReactDiff paper): training
replaces the condition by zeros — the "no speaker yet" condition online generation already uses
for its first window — with probability `condition_dropout`, and sampling extrapolates
ε = ε(x, ∅) + w·(ε(x, c) − ε(x, ∅)) with w = `guidance_scale` (1 = plain conditional sampling).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torch import Tensor, nn


class LatentDiffusion:
    """Training loss and DDIM sampling over `steps` timesteps for any ε-network
    `net(x_t, timesteps, condition)`."""

    def __init__(self, steps: int, condition_dropout: float = 0.0, guidance_scale: float = 1.0):
        self.steps = steps
        self.condition_dropout = condition_dropout
        self.guidance_scale = guidance_scale
        self.scheduler = DDIMScheduler(
            num_train_timesteps=steps,
            beta_schedule="squaredcos_cap_v2",
            prediction_type="epsilon",
            clip_sample=True,
            clip_sample_range=1.0,
        )
        self.scheduler.set_timesteps(steps)  # sampling visits every training timestep

    def training_loss(
        self, net: nn.Module, x0: Tensor, condition: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """L1 between the predicted and the true ε at uniformly drawn timesteps. A seeded CPU
        `generator` fixes timesteps and noise (reproducible runs, overfitting checks)."""
        timesteps = torch.randint(0, self.steps, (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        timesteps = timesteps.to(x0.device)
        if self.condition_dropout > 0:
            keep = torch.rand(x0.shape[0], generator=generator) >= self.condition_dropout
            condition = condition * keep.to(condition).view(-1, *([1] * (condition.dim() - 1)))
        noisy = self.scheduler.add_noise(x0, noise, timesteps)
        return F.l1_loss(net(noisy, timesteps, condition), noise)

    @torch.no_grad()
    def sample(
        self, net: nn.Module, condition: Tensor, noise: Tensor, bf16: bool = False, null_condition: Tensor | None = None
    ) -> Tensor:
        """Deterministic DDIM (eta = 0) from the initial noise x_T to x0. With `bf16` the network
        runs under bfloat16 autocast (its convolutions ~2.8x faster on a CPU with native bf16);
        the DDIM steps stay in float32. `null_condition`: guidance's unconditional input where
        `condition` is not a raw one (default: zeros like `condition`)."""
        null_condition = torch.zeros_like(condition) if null_condition is None else null_condition
        x = noise
        for t in self.scheduler.timesteps:
            timesteps = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                if self.guidance_scale == 1.0:
                    eps = net(x, timesteps, condition)
                else:
                    both = net(
                        torch.cat([x, x]), torch.cat([timesteps, timesteps]), torch.cat([condition, null_condition])
                    )
                    conditional, unconditional = both.float().chunk(2)
                    eps = unconditional + self.guidance_scale * (conditional - unconditional)
            x = self.scheduler.step(eps.float(), int(t), x, eta=0.0).prev_sample
        return x
