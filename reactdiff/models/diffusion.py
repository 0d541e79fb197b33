"""The diffusion process of stage 2, kept apart from the network (as in DiT).

Noise schedule, forward noising and deterministic DDIM stepping come from `diffusers`
(cosine schedule, x0 clamped to [-1, 1]); only the loss and the loop are ours. What the network
predicts is `prediction`: the paper's ε ("epsilon"), x0 itself ("sample", as most motion diffusion
models do: MDM, EDGE) or the velocity ("v_prediction"). With the cosine schedule at T = 20, an ε
error at the first sampling step reaches x0 multiplied by sqrt(1 − ᾱ)/sqrt(ᾱ) ≈ 400, so the early
steps, which decide the reaction's slow course, are where an ε-network is least precise.

Optional classifier-free guidance (Ho & Salimans 2022; not in the ReactDiff paper): training
replaces the condition by zeros — the "no speaker yet" condition online generation already uses
for its first window — with probability `condition_dropout`, and sampling extrapolates
ε = ε(x, ∅) + w·(ε(x, c) − ε(x, ∅)) with w = `guidance_scale` (1 = plain conditional sampling).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from torch import Tensor, nn

Prediction = Literal["epsilon", "sample", "v_prediction"]


class LatentDiffusion:
    """Training loss and DDIM sampling over `steps` timesteps for any network
    `net(x_t, timesteps, condition)` that predicts `prediction`."""

    def __init__(
        self,
        steps: int,
        condition_dropout: float = 0.0,
        guidance_scale: float = 1.0,
        prediction: Prediction = "epsilon",
    ):
        self.steps = steps
        self.prediction = prediction
        self.condition_dropout = condition_dropout
        self.guidance_scale = guidance_scale
        self.scheduler = DDIMScheduler(
            num_train_timesteps=steps,
            beta_schedule="squaredcos_cap_v2",
            prediction_type=prediction,
            clip_sample=True,
            clip_sample_range=1.0,
        )
        self.scheduler.set_timesteps(steps)  # sampling visits every training timestep

    def training_loss(
        self, net: nn.Module, x0: Tensor, condition: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """L1 between the network's output and its `prediction` target (ε, x0 or velocity) at
        uniformly drawn timesteps. A seeded CPU
        `generator` fixes timesteps and noise (reproducible runs, overfitting checks)."""
        timesteps = torch.randint(0, self.steps, (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator).to(x0)
        timesteps = timesteps.to(x0.device)
        if self.condition_dropout > 0:
            keep = torch.rand(x0.shape[0], generator=generator) >= self.condition_dropout
            condition = condition * keep.to(condition).view(-1, *([1] * (condition.dim() - 1)))
        noisy = self.scheduler.add_noise(x0, noise, timesteps)
        if self.prediction == "epsilon":
            target = noise
        elif self.prediction == "sample":
            target = x0
        else:
            target = self.scheduler.get_velocity(x0, noise, timesteps)
        return F.l1_loss(net(noisy, timesteps, condition), target)

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
                    output = net(x, timesteps, condition)
                else:
                    both = net(
                        torch.cat([x, x]), torch.cat([timesteps, timesteps]), torch.cat([condition, null_condition])
                    )
                    conditional, unconditional = both.float().chunk(2)
                    output = unconditional + self.guidance_scale * (conditional - unconditional)
            x = self.scheduler.step(output.float(), int(t), x, eta=0.0).prev_sample
        return x


class DirectRegression:
    """The paper's "w/o DDIM" ablation (its Table 4), with `LatentDiffusion`'s interface: the same
    network maps the condition straight to x0 (its noisy input all zeros, timestep 0), trained
    with L1. Deterministic: every one of the α reactions is the same. It is the ceiling of what
    the conditioning path carries on its own, before diffusion adds (or washes out) anything."""

    steps = 1
    guidance_scale = 1.0

    def training_loss(
        self, net: nn.Module, x0: Tensor, condition: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        timesteps = torch.zeros(x0.shape[0], dtype=torch.long, device=x0.device)
        return F.l1_loss(net(torch.zeros_like(x0), timesteps, condition), x0)

    @torch.no_grad()
    def sample(
        self, net: nn.Module, condition: Tensor, noise: Tensor, bf16: bool = False, null_condition: Tensor | None = None
    ) -> Tensor:
        timesteps = torch.zeros(noise.shape[0], dtype=torch.long, device=noise.device)
        with torch.autocast(noise.device.type, dtype=torch.bfloat16, enabled=bf16):
            return net(torch.zeros_like(noise), timesteps, condition).float().clamp(-1.0, 1.0)
