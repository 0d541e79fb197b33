"""The composed ReactDiff: frozen MMT + latent conditional DDIM + LRS + latent statistics.

Data path (per clip of T frames, latent width D, window ws, n = ceil(T / ws) windows):

    speaker:  feats ─MMT.encode─▶ (T, D) ─LatentStats─▶ [-1, 1] ─pad, window─▶ (n, ws, D)
              = the conditions
    listener: the same ─LRS.standardise─▶ x0, the diffusion target (training)
    sampling: noise (α, n, ws, D) ─DDIM(ε_θ, conditions)─▶ x0 ─LRS.unstandardise─▶
              denormalise ─MMT.decode─▶ trim to T

Online mode: listener window t is conditioned on speaker window t−1 (zeros for t = 0), and the
MMT encoder and decoder run window-causally (`causal_block = ws`), so every listener frame of
window t depends on speaker frames before window t only — no frame sees a future speaker frame.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from reactdiff.config import ModelConfig
from reactdiff.data.layout import AU_SLICE
from reactdiff.models.denoiser import Denoiser
from reactdiff.models.diffusion import LatentDiffusion
from reactdiff.models.lrs import LRS, ListenerStyle
from reactdiff.models.mmt import MMT, LatentStats

# Speakers per batched generate() call, in evaluation and in `reactdiff generate` alike: batched
# matrix products round differently from one-speaker ones (~1e-7), so both batch the same way
# for their reactions to be identical.
GENERATION_BATCH = 8

Mode = Literal["offline", "online"]


def ema_with_warmup(decay: float):
    """EMA update for `AveragedModel` whose decay ramps up as min(decay, (1 + n) / (10 + n)) over
    the n updates so far (diffusers' `EMAModel` default). A fixed 0.999 would leave a run of a few
    hundred steps sampling from weights that are still mostly the random initialisation."""

    def update(averaged: list[Tensor], current: list[Tensor], num_averaged: Tensor | int) -> None:
        n = float(num_averaged)
        weight = 1.0 - min(decay, (1.0 + n) / (10.0 + n))
        for average, value in zip(averaged, current):
            average.lerp_(value, weight)

    return update


class ReactDiff(nn.Module):
    """Stage 2 model. Only `denoiser` trains (`trainable_parameters()`); the MMT is frozen and
    `ema` holds the EMA of the denoiser used for generation. `forward` is `diffusion_loss`."""

    def __init__(self, mmt: MMT, config: ModelConfig):
        super().__init__()
        # The MMT carries its own config; keep the composed config consistent with it.
        self.config = config.model_copy(update={"mmt": mmt.config})
        self.mmt = mmt.requires_grad_(False).eval()
        self.window_size = config.diffusion.window_size
        latent_dim = mmt.config.latent_dim
        self.denoiser = Denoiser(latent_dim, config.diffusion)
        self.ema = AveragedModel(
            self.denoiser, multi_avg_fn=ema_with_warmup(config.diffusion.ema_decay), use_buffers=True,
        ).requires_grad_(False)
        self.diffusion = LatentDiffusion(config.diffusion.steps, config.diffusion.condition_dropout,
                                         config.diffusion.guidance_scale)
        self.lrs = LRS(config.lrs)

    @classmethod
    def from_stage1(cls, mmt: MMT, config: ModelConfig) -> "ReactDiff":
        """Stage 2 over a trained MMT (e.g. `load_checkpoint(stage-1 file)`), frozen in place."""
        return cls(mmt, config)

    def train(self, mode: bool = True) -> "ReactDiff":
        super().train(mode)
        self.mmt.eval()  # frozen: no dropout in stage 2, in training or not
        return self

    def trainable_parameters(self) -> list[nn.Parameter]:
        return list(self.denoiser.parameters())

    def update_ema(self) -> None:
        """Call after every optimiser step."""
        self.ema.update_parameters(self.denoiser)

    # The latent statistics are the MMT's buffers (a stage-1 checkpoint carries them).
    @property
    def latent_center(self) -> Tensor:
        return self.mmt.latent_center

    @property
    def latent_half_range(self) -> Tensor:
        return self.mmt.latent_half_range

    @property
    def latent_stats_set(self) -> Tensor:
        return self.mmt.latent_stats_set

    def set_latent_stats(self, stats: LatentStats) -> None:
        self.mmt.set_latent_stats(stats)

    # ---------------------------------------------------------------- latents and windows

    @torch.no_grad()
    def encode_latent(self, feats: dict[str, Tensor], causal_block: int | None = None) -> Tensor:
        """Features → normalised latent (B, T, D), about [-1, 1] (what LRS.fit takes)."""
        if not bool(self.latent_stats_set):
            raise RuntimeError(
                "ReactDiff latent statistics are not set: accumulate MMT.encode outputs over the "
                "training split with LatentStatsAccumulator and call "
                "set_latent_stats(acc.finalize())"
            )
        return (self.mmt.encode(feats, causal_block) - self.latent_center) / self.latent_half_range

    def check_frames(self, frames: int) -> None:
        """Raises ValueError if clips of `frames` frames cannot be windowed (see `pad_mode`)."""
        ws = self.window_size
        if frames % ws and self.config.diffusion.pad_mode == "drop":
            raise ValueError(
                f"clip length {frames} frames is not a multiple of "
                f"model.diffusion.window_size={ws} and model.diffusion.pad_mode='drop': crop "
                f"clips to a multiple of {ws} frames or set model.diffusion.pad_mode=replicate"
            )

    def _windows(self, latent: Tensor) -> Tensor:
        """(B, T, D) → (B, n, ws, D), padding the last window per `pad_mode`."""
        batch, frames, dim = latent.shape
        self.check_frames(frames)
        missing = -frames % self.window_size
        if missing:
            latent = torch.cat([latent, latent[:, -1:].expand(batch, missing, dim)], dim=1)
        return latent.view(batch, -1, self.window_size, dim)

    def _conditions(self, speaker_feats: dict[str, Tensor], mode: Mode) -> Tensor:
        """Speaker condition per listener window (B, n, ws, D)."""
        if mode not in ("offline", "online"):
            raise ValueError(f"mode must be 'offline' or 'online', got {mode!r}")
        online = mode == "online"
        latent = self.encode_latent(speaker_feats, self.window_size if online else None)
        windows = self._windows(latent)
        if online:  # window t sees speaker window t-1; the first sees zeros
            windows = torch.cat([torch.zeros_like(windows[:, :1]), windows[:, :-1]], dim=1)
        return windows

    def _decode(self, latent: Tensor, frames: int, causal_block: int | None) -> dict[str, Tensor]:
        """Normalised latent (B, α, T', D) → outputs trimmed to `frames`."""
        batch, alpha = latent.shape[:2]
        raw = latent.flatten(0, 1) * self.latent_half_range + self.latent_center
        threedmm, emotion = self.mmt.decode(raw, causal_block)
        if self.config.binarise_au:
            emotion[..., AU_SLICE] = (emotion[..., AU_SLICE] >= 0.5).to(emotion)
        out = {"3dmm": threedmm, "emotion": emotion, "latent": latent.flatten(0, 1)}
        return {key: value[:, :frames].unflatten(0, (batch, alpha)) for key, value in out.items()}

    # ---------------------------------------------------------------- training

    def diffusion_loss(
        self, speaker_feats: dict[str, Tensor], listener_feats: dict[str, Tensor],
        listener_style: ListenerStyle | None = None, generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """ε-prediction L1 over all windows of the batch. `listener_style` is a batched style
        (e.g. `model.lrs.styles_for(listener_ids)`); None trains on the plain latent. A seeded
        CPU `generator` fixes timesteps and noise."""
        mode = self.config.diffusion.train_mode
        conditions = self._conditions(speaker_feats, mode)
        block = self.window_size if mode == "online" else None
        target = self.lrs.standardise(self._windows(self.encode_latent(listener_feats, block)),
                                      listener_style)
        loss = self.diffusion.training_loss(
            self.denoiser, target.flatten(0, 1), conditions.flatten(0, 1), generator
        )
        return loss, {"eps_l1": loss.detach()}

    forward = diffusion_loss

    # ---------------------------------------------------------------- generation

    @staticmethod
    def _noise(
        shape: tuple[int, ...], windows: int, generators: list[torch.Generator | None]
    ) -> list[Tensor]:
        """(B, *shape) per window, in window order (the streaming API draws the same numbers),
        speaker b's part from generators[b]."""
        return [torch.stack([torch.randn(shape, generator=g) for g in generators]) for _ in range(windows)]

    @staticmethod
    def _generators(seed: int | None, batch: int) -> list[torch.Generator | None]:
        """One generator per speaker of the batch, seeded `seed + b`: a speaker's reactions depend
        on its own seed only, not on which speakers share its batch (evaluate generates in
        batches, generate clip by clip, and both give speaker i the seed `seed + i`)."""
        if seed is None:
            return [None] * batch
        return [torch.Generator().manual_seed(seed + b) for b in range(batch)]

    @torch.no_grad()
    def generate(
        self, speaker_feats: dict[str, Tensor], alpha: int = 10, mode: Mode = "offline",
        listener_style: ListenerStyle | None = None, seed: int | None = None,
    ) -> dict[str, Tensor]:
        """α reactions per speaker clip in one batched DDIM pass (EMA weights).

        Returns {"3dmm": (B, α, T, 58) raw, "emotion": (B, α, T, 25), "latent": (B, α, T, D)
        normalised listener latent}. `listener_style`: one style (D,) or a batched (B, D) one.
        """
        (out,) = self.generate_in_styles(speaker_feats, [listener_style], alpha, mode, seed)
        return out

    @torch.no_grad()
    def generate_in_styles(
        self, speaker_feats: dict[str, Tensor], listener_styles: list[ListenerStyle | None],
        alpha: int = 10, mode: Mode = "offline", seed: int | None = None, bf16_sampling: bool = False,
    ) -> list[dict[str, Tensor]]:
        """`generate` once per listener style, from one DDIM pass: LRS shifts the sampled latent
        after sampling, so the styles share the samples (evaluation scores the global and the
        per-listener styles at the cost of one). `bf16_sampling` runs the denoiser under
        bfloat16 autocast (see `LatentDiffusion.sample`); encoding and decoding stay float32."""
        frames = next(iter(speaker_feats.values())).shape[1]
        conditions = self._conditions(speaker_feats, mode)  # (B, n, ws, D)
        batch, windows, ws, dim = conditions.shape
        noise = torch.stack(self._noise((alpha, ws, dim), windows, self._generators(seed, batch)), dim=2)
        conditions = conditions.unsqueeze(1).expand(batch, alpha, windows, ws, dim)
        x0 = self.diffusion.sample(
            self.ema.module,
            conditions.reshape(-1, ws, dim),
            noise.reshape(-1, ws, dim).to(conditions),
            bf16=bf16_sampling,
        ).view(batch, alpha, windows * ws, dim)
        block = self.window_size if mode == "online" else None
        return [self._decode(self.lrs.unstandardise(x0, style), frames, block) for style in listener_styles]

    @torch.no_grad()
    def generate_online(self, speaker_feats: dict[str, Tensor], alpha: int = 10,
                        listener_style: ListenerStyle | None = None,
                        seed: int | None = None) -> Iterator[dict[str, Tensor]]:
        """Streaming online generation: yields window by window {"3dmm": (B, α, ws, 58), ...}
        (the last window trimmed to the clip). Window t reads only speaker frames before
        t·ws, so a caller may feed a growing prefix; the values equal
        `generate(mode="online")` with the same seed."""
        frames = next(iter(speaker_feats.values())).shape[1]
        ws = self.window_size
        generators = self._generators(seed, next(iter(speaker_feats.values())).shape[0])
        listener: list[Tensor] = []  # generated normalised latent windows (B, α, ws, D)
        for t in range(-(-frames // ws)):
            if t == 0:
                batch = next(iter(speaker_feats.values())).shape[0]
                condition = torch.zeros(batch, ws, self.mmt.config.latent_dim,
                                        device=self.latent_center.device)
            else:
                prefix = {name: x[:, : t * ws] for name, x in speaker_feats.items()}
                condition = self.encode_latent(prefix, ws)[:, (t - 1) * ws:]
            batch, _, dim = condition.shape
            (noise,) = self._noise((alpha, ws, dim), 1, generators)
            x0 = self.diffusion.sample(
                self.ema.module,
                condition.unsqueeze(1).expand(batch, alpha, ws, dim).reshape(-1, ws, dim),
                noise.reshape(-1, ws, dim).to(condition),
            ).view(batch, alpha, ws, dim)
            listener.append(self.lrs.unstandardise(x0, listener_style))
            # Window-causal decoding of the prefix equals decoding the whole clip causally.
            out = self._decode(torch.cat(listener, dim=2), frames, ws)
            yield {key: value[:, :, t * ws:] for key, value in out.items()}

