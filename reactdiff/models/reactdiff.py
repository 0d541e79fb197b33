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
`OnlineStream` generates those windows one at a time as the speaker speaks, with the encoder's
and decoder's key/value caches (`CausalCache`), so every window costs the same.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from reactdiff.config import ModelConfig
from reactdiff.data.layout import AU_SLICE
from reactdiff.models.denoiser import Denoiser
from reactdiff.models.diffusion import LatentDiffusion
from reactdiff.models.lrs import LRS, ListenerStyle
from reactdiff.models.mmt import MMT, CausalCache, LatentStats

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
        for average, value in zip(averaged, current, strict=True):
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
            self.denoiser,
            multi_avg_fn=ema_with_warmup(config.diffusion.ema_decay),
            use_buffers=True,
        ).requires_grad_(False)
        self.diffusion = LatentDiffusion(
            config.diffusion.steps,
            config.diffusion.condition_dropout,
            config.diffusion.guidance_scale,
            config.diffusion.prediction,
        )
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
    def encode_latent(
        self, feats: dict[str, Tensor], causal_block: int | None = None, cache: CausalCache | None = None
    ) -> Tensor:
        """Features → normalised latent (B, T, D), about [-1, 1] (what LRS.fit takes). `cache`:
        see `MMT.encode`."""
        if not bool(self.latent_stats_set):
            raise RuntimeError(
                "ReactDiff latent statistics are not set: accumulate MMT.encode outputs over the "
                "training split with LatentStatsAccumulator and call "
                "set_latent_stats(acc.finalize())"
            )
        return (self.mmt.encode(feats, causal_block, cache) - self.latent_center) / self.latent_half_range

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
        return self._condition_windows(self.encode_latent(speaker_feats, self.window_size if online else None), mode)

    def _condition_windows(self, speaker_latent: Tensor, mode: Mode) -> Tensor:
        """Speaker latent (B, T, D) → its condition per listener window (B, n, context + ws, D):
        offline, listener window t sees speaker frames [t·ws − context, (t + 1)·ws); online, one
        window earlier, [t·ws − ws − context, t·ws). Frames before the clip are zeros (the
        first online window sees only zeros)."""
        windows = self._windows(speaker_latent)
        batch, count, ws, dim = windows.shape
        before = self.config.diffusion.condition_context + (ws if mode == "online" else 0)
        padded = torch.cat([windows.new_zeros(batch, before, dim), windows.flatten(1, 2)], dim=1)
        span = ws + self.config.diffusion.condition_context
        return padded.unfold(1, span, ws)[:, :count].transpose(2, 3)

    def _decode(
        self,
        latent: Tensor,
        frames: int,
        causal_block: int | None,
        cache: CausalCache | None = None,
        bf16: bool = False,
    ) -> dict[str, Tensor]:
        """Normalised latent (B, α, T', D) → float32 outputs trimmed to `frames`; `bf16` decodes
        under bfloat16 autocast."""
        batch, alpha = latent.shape[:2]
        raw = latent.flatten(0, 1) * self.latent_half_range + self.latent_center
        with torch.autocast(raw.device.type, dtype=torch.bfloat16, enabled=bf16):
            threedmm, emotion = (x.float() for x in self.mmt.decode(raw, causal_block, cache))
        if self.config.binarise_au:
            emotion[..., AU_SLICE] = (emotion[..., AU_SLICE] >= 0.5).to(emotion)
        out = {"3dmm": threedmm, "emotion": emotion, "latent": latent.flatten(0, 1)}
        return {key: value[:, :frames].unflatten(0, (batch, alpha)) for key, value in out.items()}

    # ---------------------------------------------------------------- training

    def diffusion_loss(
        self,
        speaker_feats: dict[str, Tensor],
        listener_feats: dict[str, Tensor],
        listener_style: ListenerStyle | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The denoiser's L1 (see `LatentDiffusion.training_loss`) over all windows of the batch.
        `listener_style` is a batched style (e.g. `model.lrs.styles_for(listener_ids)`); None
        trains on the plain latent. A seeded CPU `generator` fixes timesteps and noise."""
        speaker, listener = self.training_latents(speaker_feats, listener_feats)
        return self.latent_loss(speaker, listener, listener_style, generator)

    @torch.no_grad()
    def training_latents(
        self, speaker_feats: dict[str, Tensor], listener_feats: dict[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        """What the frozen MMT makes of a training pair: the speaker's and the listener's
        normalised latents (B, T, D), encoded as `train_mode` needs them (window-causally online).
        They depend on the stage-1 model only, so a run may encode them once and crop them later."""
        block = self.window_size if self.config.diffusion.train_mode == "online" else None
        return self.encode_latent(speaker_feats, block), self.encode_latent(listener_feats, block)

    def latent_loss(
        self,
        speaker_latent: Tensor,
        listener_latent: Tensor,
        listener_style: ListenerStyle | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """`diffusion_loss` from `training_latents` (B, T, D) (encoded now, or cached)."""
        conditions = self._condition_windows(speaker_latent, self.config.diffusion.train_mode)
        target = self.lrs.standardise(self._windows(listener_latent), listener_style)
        loss = self.diffusion.training_loss(self.denoiser, target.flatten(0, 1), conditions.flatten(0, 1), generator)
        return loss, {"diffusion_l1": loss.detach()}

    def forward(
        self,
        speaker: dict[str, Tensor] | Tensor,
        listener: dict[str, Tensor] | Tensor,
        listener_style: ListenerStyle | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The training loss through the distributed wrapper (DDP and DeepSpeed hook `forward`):
        `latent_loss` of latents (B, T, D), or `diffusion_loss` of feature dicts."""
        if isinstance(speaker, Tensor):
            return self.latent_loss(speaker, listener, listener_style, generator)
        return self.diffusion_loss(speaker, listener, listener_style, generator)

    # ---------------------------------------------------------------- generation

    @staticmethod
    def _noise(shape: tuple[int, ...], windows: int, generators: list[torch.Generator | None]) -> list[Tensor]:
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
        self,
        speaker_feats: dict[str, Tensor],
        alpha: int = 10,
        mode: Mode = "offline",
        listener_style: ListenerStyle | None = None,
        seed: int | None = None,
    ) -> dict[str, Tensor]:
        """α reactions per speaker clip in one batched DDIM pass (EMA weights).

        Returns {"3dmm": (B, α, T, 58) raw, "emotion": (B, α, T, 25), "latent": (B, α, T, D)
        normalised listener latent}. `listener_style`: one style (D,) or a batched (B, D) one.
        """
        (out,) = self.generate_in_styles(speaker_feats, [listener_style], alpha, mode, seed)
        return out

    @torch.no_grad()
    def generate_in_styles(
        self,
        speaker_feats: dict[str, Tensor],
        listener_styles: list[ListenerStyle | None],
        alpha: int = 10,
        mode: Mode = "offline",
        seed: int | None = None,
        bf16_sampling: bool = False,
        bf16_decoding: bool = False,
    ) -> list[dict[str, Tensor]]:
        """`generate` once per listener style, from one DDIM pass: LRS shifts the sampled latent
        after sampling, so the styles share the samples (evaluation scores the global and the
        per-listener styles at the cost of one). `bf16_sampling` runs the denoiser under
        bfloat16 autocast (see `LatentDiffusion.sample`), `bf16_decoding` the MMT decoder (its
        linear layers ~1.8x faster at paper dims on a CPU with native bf16); encoding, the DDIM
        steps and the returned outputs stay float32."""
        frames = next(iter(speaker_feats.values())).shape[1]
        conditions = self._conditions(speaker_feats, mode)  # (B, n, ws, D)
        batch, windows, _, dim = conditions.shape
        noise = self._noise((alpha, self.window_size, dim), windows, self._generators(seed, batch))
        x0 = self._sample(conditions, noise, bf16_sampling)
        block = self.window_size if mode == "online" else None
        return [
            self._decode(self.lrs.unstandardise(x0, style), frames, block, bf16=bf16_decoding)
            for style in listener_styles
        ]

    def _sample(self, conditions: Tensor, noise: list[Tensor], bf16: bool = False) -> Tensor:
        """One DDIM pass over every (speaker, α copy, window): conditions (B, n, context + ws, D)
        and the n windows of `_noise` (B, α, ws, D) → normalised target latent x0 (B, α, n·ws, D).
        Each window's condition is embedded once, not per step and α copy."""
        batch, windows, _, dim = conditions.shape
        ws = self.window_size
        noise = torch.stack(noise, dim=2)  # (B, α, n, ws, D)
        alpha = noise.shape[1]
        denoiser = self.ema.module
        z_bc = denoiser.embed_condition(conditions.flatten(0, 1)).unflatten(0, (batch, windows))
        null = denoiser.embed_condition(torch.zeros_like(conditions[:1, 0]))  # for guidance
        z_bc = z_bc.unsqueeze(1).expand(batch, alpha, windows, -1).reshape(batch * alpha * windows, -1)
        return self.diffusion.sample(
            denoiser,
            z_bc,
            noise.reshape(-1, ws, dim).to(conditions),
            bf16=bf16,
            null_condition=null.expand_as(z_bc),
        ).reshape(batch, alpha, windows * ws, dim)

    def open_stream(
        self, batch: int = 1, alpha: int = 10, seed: int | None = None, listener_style: ListenerStyle | None = None
    ) -> "OnlineStream":
        """Start online generation for `batch` speakers fed window by window (see `OnlineStream`);
        speaker b draws its noise from seed `seed + b`, as in `generate`."""
        return OnlineStream(self, batch, alpha, seed, listener_style)

    @torch.no_grad()
    def generate_online(
        self,
        speaker_feats: dict[str, Tensor],
        alpha: int = 10,
        listener_style: ListenerStyle | None = None,
        seed: int | None = None,
    ) -> Iterator[dict[str, Tensor]]:
        """`OnlineStream` over a whole clip: yields window by window {"3dmm": (B, α, ws, 58),
        ...} (the last window trimmed to the clip). Window t reads only speaker frames before
        t·ws; the values equal `generate(mode="online")` with the same seed."""
        frames = next(iter(speaker_feats.values())).shape[1]
        self.check_frames(frames)
        ws = self.window_size
        stream = self.open_stream(next(iter(speaker_feats.values())).shape[0], alpha, seed, listener_style)
        spoken = None  # the speaker window before the listener window being generated
        for start in range(0, frames, ws):
            yield stream.step(spoken, frames=min(ws, frames - start))
            spoken = {name: x[:, start : start + ws] for name, x in speaker_feats.items()}


class OnlineStream:
    """Per-connection incremental state of online generation (`ReactDiff.open_stream`).

    Convention: listener window t (frames t·ws … t·ws + ws − 1) is conditioned on speaker window
    t − 1, and on zeros for t = 0. So `step(None)` first returns listener window 0 — before the
    speaker has said anything — and then each `step(speaker window t − 1)` returns listener
    window t, at once. For a clip of n windows the speaker's last window conditions nothing
    (it would condition window n, past the clip); `generate(mode="online")` ignores it too.

    `speaker_window`: {stream: (batch, ws, dim)} with exactly the MMT's streams, full windows
    only. A clip whose length is not a multiple of ws ends on a short listener window: pass
    `frames=` (its length) to that last `step` to get it trimmed, as `generate` trims.

    Every step costs the same: the speaker encoder and the listener decoder keep the keys and
    values of earlier windows (`CausalCache`) and only run the new window; the denoiser samples
    the α copies of the window in one batch. Bad input raises ValueError naming what was
    expected. Values equal `generate(mode="online")` with the same seed (to float rounding).
    """

    def __init__(
        self, model: ReactDiff, batch: int, alpha: int, seed: int | None, listener_style: ListenerStyle | None
    ):
        if batch < 1 or alpha < 1:
            raise ValueError(f"OnlineStream needs batch >= 1 and alpha >= 1, got batch={batch}, alpha={alpha}")
        self.model = model
        self.batch, self.alpha = batch, alpha
        self.window_size: int = model.window_size
        self.windows_done = 0
        self.listener_style = listener_style
        self._generators = model._generators(seed, batch)
        self._speaker_cache = CausalCache()  # speaker encoder, batch B
        self._listener_cache = CausalCache()  # listener decoder, batch B·α
        # The speaker latent the next condition starts with: `condition_context` frames, zeros before any.
        self._history = torch.zeros(
            batch,
            model.config.diffusion.condition_context,
            model.mmt.config.latent_dim,
            device=model.latent_center.device,
        )

    @torch.no_grad()
    def step(self, speaker_window: Mapping[str, Tensor] | None, frames: int | None = None) -> dict[str, Tensor]:
        """Speaker window t − 1 (None for t = 0) → listener window t: {"3dmm": (B, α, ws, 58) raw,
        "emotion": (B, α, ws, 25), "latent": (B, α, ws, D) normalised listener latent}, trimmed
        to `frames` (1 … ws) for a clip's short last window."""
        model, ws = self.model, self.window_size
        if frames is not None and not 1 <= frames <= ws:
            raise ValueError(f"frames: expected 1 … window_size={ws} listener frames, got {frames}")
        if self.windows_done == 0:
            if speaker_window is not None:
                raise ValueError(
                    "listener window 0 is conditioned on no speaker frames: call step(None) first, "
                    "then step(speaker window t-1) for listener window t"
                )
            latest = torch.zeros(self.batch, ws, model.mmt.config.latent_dim, device=model.latent_center.device)
        else:
            if speaker_window is None:
                raise ValueError(
                    f"listener window {self.windows_done} needs speaker window {self.windows_done - 1}; got None"
                )
            latest = model.encode_latent(self._checked(speaker_window), cache=self._speaker_cache)
        condition = torch.cat([self._history, latest], dim=1)
        self._history = condition[:, condition.shape[1] - self._history.shape[1] :]
        noise = model._noise((self.alpha, ws, condition.shape[-1]), 1, self._generators)
        x0 = model._sample(condition.unsqueeze(1), noise)
        out = model._decode(model.lrs.unstandardise(x0, self.listener_style), frames or ws, None, self._listener_cache)
        self.windows_done += 1
        return out

    def _checked(self, speaker_window: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The window's streams as float tensors on the model's device, or ValueError."""
        streams = self.model.mmt.streams
        if not isinstance(speaker_window, Mapping):
            raise ValueError(
                f"speaker window: expected a {{stream: tensor}} mapping of streams "
                f"{sorted(streams)}, got {type(speaker_window).__name__}"
            )
        unknown, missing = sorted(set(speaker_window) - set(streams)), sorted(set(streams) - set(speaker_window))
        if unknown or missing:
            raise ValueError(
                f"speaker window: expected streams {sorted(streams)}, got unknown {unknown} and missing {missing}"
            )
        checked = {}
        for name, value in speaker_window.items():
            x = torch.as_tensor(value).float()
            expected = (self.batch, self.window_size, streams[name])
            if tuple(x.shape) != expected:
                short = x.dim() == 3 and x.shape[1] < self.window_size
                raise ValueError(
                    f"speaker stream '{name}': expected shape {expected} (batch, window_size, dim), "
                    f"got {tuple(x.shape)}"
                    + (
                        "; a clip's short last speaker window conditions no listener window, so it is "
                        "not sent (trim the last listener window with step(..., frames=))"
                        if short
                        else ""
                    )
                )
            if not torch.isfinite(x).all():
                raise ValueError(f"speaker stream '{name}': NaN or infinite values")
            checked[name] = x.to(self.model.latent_center.device)
        return checked
