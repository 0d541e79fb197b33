"""The denoising network of stage 2: a 1-D UNet conditioned on the speaker window (paper §3.4).

In the paper's layout a window of ws frames × latent_dim is read as ws channels over a length of
latent_dim (see `Denoiser` for the "time" layout, which convolves along frames). The
speaker's window becomes z_bc = SiLU(GroupNorm(Linear(flatten(window)))) of width cond_dim
(`condition_norm` "none" leaves the GroupNorm out); the
sinusoidal time embedding (through an MLP) is concatenated with z_bc and enters every residual
block, projected to a per-channel scale and shift (DiffAE-style conditioning).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.embeddings import get_timestep_embedding
from torch import Tensor, nn

from reactdiff.config import DiffusionConfig


def _groups(channels: int, min_per_group: int = 1) -> int:
    """GroupNorm groups: 32 where the width allows it (the usual choice), fewer for small widths.
    `min_per_group` matters for a plain vector (no length): a group of one channel would
    normalise that channel to a constant."""
    return max(g for g in range(1, 33) if channels % g == 0 and channels // g >= min_per_group)


class ResBlock(nn.Module):
    """Residual conv block; the time+condition embedding enters as a per-channel scale and shift
    after the second GroupNorm (DiffAE's AdaGN). Added before a GroupNorm instead, a per-channel
    shift would be partly (with one channel per group, wholly) normalised away."""

    def __init__(self, in_channels: int, out_channels: int, emb_dim: int):
        super().__init__()
        self.in_layers = nn.Sequential(
            nn.GroupNorm(_groups(in_channels), in_channels),
            nn.SiLU(),
            nn.Conv1d(in_channels, out_channels, 3, padding=1),
        )
        self.emb = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, 2 * out_channels))
        self.out_norm = nn.GroupNorm(_groups(out_channels), out_channels)
        self.out_layers = nn.Sequential(nn.SiLU(), nn.Conv1d(out_channels, out_channels, 3, padding=1))
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        scale, shift = self.emb(emb)[:, :, None].chunk(2, dim=1)
        h = self.out_norm(self.in_layers(x)) * (1 + scale) + shift
        return self.skip(x) + self.out_layers(h)


class Denoiser(nn.Module):
    """net(x_t, t, speaker window): (N, ws, latent_dim) → the prediction (ε, x0 or velocity, see
    `LatentDiffusion`) of the same shape. The speaker window is (N, ws + condition_context,
    latent_dim): the listener window's own span of the speaker, after `condition_context` earlier
    frames.

    Two layouts of the same residual 1-D UNet (`DiffusionConfig.layout`):
    - "frames" (the paper's): the ws frames are the channels and the latent dims the length; the
      speaker enters only as z_bc;
    - "time": the latent dims are the channels and the frames the length, so convolutions run
      along time; the speaker's frames enter frame by frame as extra input channels (the listener's
      context frames as zeros) besides z_bc, and the output keeps the last ws frames. A lagged
      response is then a filter over time that the convolutions can learn.
    """

    def __init__(self, latent_dim: int, config: DiffusionConfig):
        super().__init__()
        ws, channels = config.window_size, config.unet_channels
        self.layout, self.context, self.latent_dim = config.layout, config.condition_context, latent_dim
        self.condition_frames = ws + config.condition_context
        self.cond_dim = config.cond_dim
        self.time_embed_dim = config.time_embed_dim
        self.time_mlp = nn.Sequential(
            nn.Linear(config.time_embed_dim, config.time_embed_dim),
            nn.SiLU(),
            nn.Linear(config.time_embed_dim, config.time_embed_dim),
        )
        norm = (
            nn.GroupNorm(_groups(config.cond_dim, min_per_group=16), config.cond_dim)
            if config.condition_norm == "group"
            else nn.Identity()
        )
        self.condition = nn.Sequential(  # z_bc
            nn.Flatten(1), nn.Linear(self.condition_frames * latent_dim, config.cond_dim), norm, nn.SiLU()
        )
        emb_dim = config.time_embed_dim + config.cond_dim
        in_channels, out_channels = (ws, ws) if self.layout == "frames" else (2 * latent_dim, latent_dim)

        self.input = nn.Conv1d(in_channels, channels[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        previous = channels[0]
        for level, width in enumerate(channels):
            self.down_blocks.append(ResBlock(previous, width, emb_dim))
            last = level == len(channels) - 1
            self.downsamples.append(nn.Identity() if last else nn.Conv1d(width, width, 3, stride=2, padding=1))
            previous = width
        self.middle = ResBlock(previous, previous, emb_dim)
        self.up_blocks = nn.ModuleList()
        for width in reversed(channels):
            self.up_blocks.append(ResBlock(previous + width, width, emb_dim))
            previous = width
        self.output = nn.Sequential(
            nn.GroupNorm(_groups(previous), previous),
            nn.SiLU(),
            nn.Conv1d(previous, out_channels, 3, padding=1),
        )

    def embed_condition(self, speaker_window: Tensor) -> Tensor:
        """Speaker window (N, ws + context, latent_dim) → what every denoising step reads of it:
        z_bc (N, cond_dim), and in the "time" layout the window's frames after it. Sampling embeds
        each window once and passes this to every step (it depends on neither the step nor the α copy)."""
        z_bc = self.condition(speaker_window)
        return z_bc if self.layout == "frames" else torch.cat([z_bc, speaker_window.flatten(1)], dim=-1)

    def forward(self, x: Tensor, timesteps: Tensor, condition: Tensor) -> Tensor:
        """`condition`: the speaker window (N, ws + context, latent_dim) or its `embed_condition`."""
        time = self.time_mlp(get_timestep_embedding(timesteps, self.time_embed_dim))
        embedded = self.embed_condition(condition) if condition.dim() == 3 else condition
        z_bc = embedded[:, : self.cond_dim]
        emb = torch.cat([time, z_bc.to(time.dtype)], dim=-1)
        if self.layout == "frames":
            h = self.input(x)
        else:
            frames = embedded[:, self.cond_dim :].view(-1, self.condition_frames, self.latent_dim).to(x.dtype)
            listener = F.pad(x, (0, 0, self.context, 0))  # zeros over the context frames
            h = self.input(torch.cat([listener, frames], dim=-1).transpose(1, 2))
        skips = []
        for block, down in zip(self.down_blocks, self.downsamples, strict=True):
            h = block(h, emb)
            skips.append(h)
            h = down(h)
        h = self.middle(h, emb)
        for block in self.up_blocks:
            skip = skips.pop()
            # Nearest upsampling to the skip's exact length, so any length works (odd too).
            h = F.interpolate(h, size=skip.shape[-1], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        out = self.output(h)
        return out if self.layout == "frames" else out[..., self.context :].transpose(1, 2)
