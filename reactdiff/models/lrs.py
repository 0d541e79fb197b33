"""Listener Reaction Shifts (LRS): per-listener standardisation of the diffusion target.

The paper names LRS without code; our definition. All statistics live in the
normalised latent space (after `LatentStats`, about [-1, 1]), per latent dimension.

- A style is a mean (and a scale, the std over frames) of a listener's latent over reference
  clips, shrunk toward the global statistics with pseudo-count k = `shrinkage`:
  style = (n·listener + k·global) / (n + k), n = number of reference clips used.
- Training diffuses the listener-standardised latent: the listener's style is replaced by the
  global one, `z_std = global.mean + (z − style.mean)·global.scale / style.scale` ('mean+scale')
  or `z − style.mean + global.mean` ('mean'). Mapping onto the global statistics (rather than
  onto zero mean / unit scale) keeps the target in the [-1, 1] box DDIM clamps to.
- Generation inverts the map with the target listener's style; no style means the global one,
  for which both maps are the identity. Mode 'off' is always the identity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from reactdiff.config import LRSConfig


@dataclass
class ListenerStyle:
    """A listener's latent style: `mean` and `scale`, each (D,) or batched (B, D)."""

    mean: Tensor
    scale: Tensor

    def to_dict(self) -> dict[str, Tensor]:
        return {"mean": self.mean, "scale": self.scale}

    @classmethod
    def from_dict(cls, state: dict[str, Tensor]) -> "ListenerStyle":
        return cls(mean=state["mean"], scale=state["scale"])

    @classmethod
    def stack(cls, styles: list["ListenerStyle"]) -> "ListenerStyle":
        """Batch single styles into a (B, D) style, one row per sample."""
        return cls(torch.stack([s.mean for s in styles]), torch.stack([s.scale for s in styles]))

    def rows(self, start: int, stop: int) -> "ListenerStyle":
        """Rows start:stop of a batched style (a batch of its samples)."""
        return ListenerStyle(self.mean[start:stop], self.scale[start:stop])


def _broadcast(stat: Tensor, like: Tensor) -> Tensor:
    """(D,) broadcasts as is; a batched (B, D) style applies to dim 0 of `like` (B, ..., D)."""
    stat = stat.to(like)
    if stat.dim() == 2:
        stat = stat.view(stat.shape[0], *([1] * (like.dim() - 2)), stat.shape[1])
    return stat


class LRS(nn.Module):
    """Global and per-listener styles, and the standardising map between them.

    A module without parameters: the styles are its extra state, so the owning model's
    `state_dict` carries them (`lrs._extra_state`) into training checkpoints and exported files."""

    def __init__(self, config: LRSConfig):
        super().__init__()
        self.config = config
        self.global_style: ListenerStyle | None = None
        self.styles: dict[str, ListenerStyle] = {}

    @staticmethod
    def _moments(latents: list[Tensor]) -> ListenerStyle:
        frames = torch.cat([z.detach().reshape(-1, z.shape[-1]).float().cpu() for z in latents])
        return ListenerStyle(frames.mean(dim=0), frames.std(dim=0, unbiased=False).clamp_min(1e-4))

    def fit(self, latents_by_listener: dict[str, list[Tensor]]) -> None:
        """Global statistics over every clip, then each listener's style from their clips.
        Keys are listener identities (dataset/session/person); clips are (T, D) normalised
        latents."""
        clips = [z for latents in latents_by_listener.values() for z in latents]
        if not clips:
            raise ValueError("LRS.fit: no latents given (expected {listener: [(T, D) tensors]})")
        self.global_style = self._moments(clips)
        self.styles = {key: self.estimate_style(z) for key, z in latents_by_listener.items()}

    def keep_references(self, references: dict[str, list[Tensor]], latents: Tensor, listener_ids: list[str]) -> None:
        """Add each (T, D) latent of `latents` to its listener's list in `references`, up to
        `reference_clips` per listener (the first ones seen): what `fit` takes, with bounded memory
        at any corpus size."""
        for listener, latent in zip(listener_ids, latents, strict=True):
            clips = references.setdefault(listener, [])
            if len(clips) < self.config.reference_clips:
                clips.append(latent)

    def _global(self) -> ListenerStyle:
        if self.global_style is None:
            raise RuntimeError(
                "LRS has no global statistics: call LRS.fit(latents_by_listener) on the training "
                "latents (or load a stage-2 checkpoint) before using listener styles"
            )
        return self.global_style

    def estimate_style(self, reference_latents: list[Tensor]) -> ListenerStyle:
        """Style from up to `reference_clips` (T, D) latents, shrunk toward the global one."""
        global_style = self._global()
        references = reference_latents[: self.config.reference_clips]
        if not references:
            return global_style
        own = self._moments(references)
        n, k = len(references), self.config.shrinkage
        weight = n / (n + k)
        return ListenerStyle(
            mean=weight * own.mean + (1 - weight) * global_style.mean,
            scale=weight * own.scale + (1 - weight) * global_style.scale,
        )

    def leave_one_out_styles(self, latents: Tensor, listener_ids: list[str]) -> ListenerStyle:
        """Batched (B, D) styles for scoring: sample b's style is estimated from the other clips of
        its listener in `latents` (B, T, D), never from the clip being scored (global if none)."""
        styles = []
        for b, listener in enumerate(listener_ids):
            others = [latents[j] for j, other in enumerate(listener_ids) if other == listener and j != b]
            styles.append(self.estimate_style(others))
        return ListenerStyle.stack(styles)

    def styles_for(self, listener_ids: list[str]) -> ListenerStyle:
        """Batched (B, D) styles for training; a listener never fitted gets the global style."""
        global_style = self._global()
        return ListenerStyle.stack([self.styles.get(key, global_style) for key in listener_ids])

    def standardise(self, latent: Tensor, style: ListenerStyle | None) -> Tensor:
        """Listener latent (B, ..., D) → the diffusion target (the listener's style removed)."""
        if self.config.mode == "off" or style is None:
            return latent
        g = self._global()
        centred = latent - _broadcast(style.mean, latent)
        if self.config.mode == "mean+scale":
            centred = centred * _broadcast(g.scale, latent) / _broadcast(style.scale, latent)
        return centred + _broadcast(g.mean, latent)

    def unstandardise(self, latent: Tensor, style: ListenerStyle | None) -> Tensor:
        """Generated target (B, ..., D) → the listener latent with `style` put back."""
        if self.config.mode == "off" or style is None:
            return latent
        g = self._global()
        centred = latent - _broadcast(g.mean, latent)
        if self.config.mode == "mean+scale":
            centred = centred * _broadcast(style.scale, latent) / _broadcast(g.scale, latent)
        return centred + _broadcast(style.mean, latent)

    def get_extra_state(self) -> dict:
        """Plain dict of tensors keyed by strings (loads with torch.load(weights_only=True))."""
        state: dict = {"listeners": {key: s.to_dict() for key, s in self.styles.items()}}
        if self.global_style is not None:
            state["global"] = self.global_style.to_dict()
        return state

    def set_extra_state(self, state: dict) -> None:
        self.global_style = ListenerStyle.from_dict(state["global"]) if "global" in state else None
        self.styles = {key: ListenerStyle.from_dict(s) for key, s in state["listeners"].items()}
