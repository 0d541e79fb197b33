"""Scoring a model on a split, shared by the Train loop (every `train.eval_every` epochs on val)
and `reactdiff evaluate` (any split, with the baselines beside it).

- Stage 2 is judged on what it generates: α reactions per speaker, scored with the REACT2024
  metrics (`metrics.compute_all`) against the split's appropriateness matrix, for two rows: the
  global listener style (`ReactDiff`) and, when LRS is on, each listener's own style estimated
  from that listener's *other* clips of the split (`ReactDiff-LRS`).
- Stage 1 is judged on reconstructions, in units free of the loss weights `w_3dmm`/`w_emotion`:
  raw 3DMM MSE, emotion L1, AU F1, valence/arousal CCC and `recon_FRDist`, the REACT2024 emotion
  distance (FRDist's weighted DTW) between each reconstruction and its ground truth. They are
  sums over samples (`ReconstructionTotals`), so shards of a split add up across workers.

The direction of every metric lives here, so sweeps and promotion can refuse a mode that
contradicts it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch

from reactdiff.data.layout import AU_SLICE, VA_SLICE
from reactdiff.evaluate import metrics
from reactdiff.models.lrs import ListenerStyle
from reactdiff.models.reactdiff import GENERATION_BATCH
from reactdiff.predict import reactions, tensors

Direction = Literal["min", "max"]

MODEL_LABEL = "ReactDiff"
LRS_LABEL = "ReactDiff-LRS"

REACTION_DIRECTIONS: dict[str, Direction] = metrics.DIRECTIONS
RECONSTRUCTION_DIRECTIONS: dict[str, Direction] = {
    "recon_3dmm_mse": "min",
    "recon_emotion_l1": "min",
    "recon_au_f1": "max",
    "recon_va_ccc": "max",
    "recon_FRDist": "min",
}


def _device(network) -> torch.device:
    return next(network.parameters()).device


# --------------------------------------------------------------------------------------------
# Stage 2: generated reactions
# --------------------------------------------------------------------------------------------


def model_styles(
    network, listener: dict[str, np.ndarray], listener_clips: list[str], indices: np.ndarray
) -> dict[str, ListenerStyle | None]:
    """The model rows to score, {label: style}: the global style, and with LRS on the paper's
    "ReactDiff (LRS)", each sample in its listener's style estimated from that listener's other
    clips of the split (every clip may serve as a reference, also those outside `indices`)."""
    from reactdiff.data.store import person_of

    styles: dict[str, ListenerStyle | None] = {MODEL_LABEL: None}
    if network.lrs.config.mode == "off":
        return styles
    feats = {k: v for k, v in listener.items() if k in network.mmt.streams}
    total = len(listener_clips)
    with torch.no_grad():
        latents = torch.cat(
            [
                network.encode_latent(
                    tensors({k: v[i : i + GENERATION_BATCH] for k, v in feats.items()}, _device(network))
                ).cpu()
                for i in range(0, total, GENERATION_BATCH)
            ]
        )
    loo = network.lrs.leave_one_out_styles(latents, [person_of(clip) for clip in listener_clips])
    index = torch.as_tensor(indices, dtype=torch.long)
    styles[LRS_LABEL] = ListenerStyle(loo.mean[index], loo.scale[index])
    return styles


def eval_indices(n: int, samples: int, seed: int) -> np.ndarray:
    """The samples scored: all `n`, or a fixed, seeded subset of `samples` of them (sorted)."""
    if samples <= 0 or samples >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=samples, replace=False))


@dataclass
class ReactionScores:
    rows: dict[str, dict[str, float]]  # {label: {metric: value}}
    predictions: dict[str, np.ndarray] = field(repr=False)  # {label: (n, α, T, 25)}


def score_reactions(
    network,
    samples: dict[str, Any],
    appropriate: np.ndarray,
    alpha: int,
    mode: str = "offline",
    seed: int = 0,
    indices: np.ndarray | None = None,
    progress: bool = True,
    bf16_sampling: bool = False,
) -> ReactionScores:
    """Generate α reactions for the speakers of `samples` (`store.to_samples` of a split; only
    `indices` of them when given) and score every model row with the REACT2024 metrics.
    `bf16_sampling`: the denoiser under bfloat16 autocast (training-time scoring; see
    `bf16_sampling_available`).

    A subset is scored against the appropriateness matrix restricted to it (every sample's own
    listener is among its appropriate reactions, so no row is left empty)."""
    n = len(samples["speaker_clip"])
    indices = np.arange(n) if indices is None else np.asarray(indices)
    speaker = {k: v[indices] for k, v in samples["speaker"].items() if k in network.mmt.streams}
    styles = model_styles(network, samples["listener"], samples["listener_clip"], indices)
    was_training = network.training
    network.eval()
    try:
        outs = reactions(
            network,
            speaker,
            alpha,
            mode,
            seed,
            list(styles.values()),
            keys=("emotion",),
            bf16_sampling=bf16_sampling,
            progress=f"generate {' + '.join(styles)}" if progress else None,
        )
        predictions = {label: out["emotion"] for label, out in zip(styles, outs, strict=True)}
    finally:
        network.train(was_training)
    subset = np.ix_(indices, indices)
    rows = {
        label: metrics.compute_all(
            predictions[label],
            samples["listener"]["emotion"][indices],
            samples["speaker"]["emotion"][indices],
            appropriate[subset],
        )
        for label in styles
    }
    return ReactionScores(rows, predictions)


def bf16_sampling_available(device: torch.device) -> bool:
    """Whether bfloat16 runs natively here: a CUDA device that supports it, or a CPU whose oneDNN
    has bf16 kernels (AVX-512 BF16 / AMX). Elsewhere bf16 would be emulated, and slower."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return (
        device.type == "cpu" and torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
    )


def reaction_metrics(rows: dict[str, dict[str, float]], prefix: str = "val_") -> dict[str, float]:
    """Flat metric names of the model rows: `val_FRDist` (global style), `val_LRS_FRDist` (LRS)."""
    names = {MODEL_LABEL: prefix, LRS_LABEL: f"{prefix}LRS_"}
    return {f"{names[label]}{name}": value for label, row in rows.items() for name, value in row.items()}


# --------------------------------------------------------------------------------------------
# Stage 1: reconstructions
# --------------------------------------------------------------------------------------------


@dataclass
class ReconstructionTotals:
    """Sums over reconstructed samples; `as_list`/`from_list` carry them through an all-reduce."""

    samples: float = 0.0
    threedmm_sq: float = 0.0  # Σ squared error of raw 3DMM values
    threedmm_values: float = 0.0
    emotion_abs: float = 0.0  # Σ |error| of the 25 emotion channels
    emotion_values: float = 0.0
    au_tp: float = 0.0  # AU occurrences, predictions thresholded at 0.5
    au_fp: float = 0.0
    au_fn: float = 0.0
    va_ccc: float = 0.0  # Σ over samples of the mean CCC of valence and arousal
    distance: float = 0.0  # Σ over samples of FRDist's weighted DTW to the ground truth

    def add(self, threedmm: np.ndarray, emotion: np.ndarray, true_3dmm: np.ndarray, true_emotion: np.ndarray) -> None:
        """A batch of reconstructions (B, T, 58) / (B, T, 25) against ground truth."""
        emotion, true_emotion = emotion.astype(np.float64), true_emotion.astype(np.float64)
        self.samples += len(emotion)
        self.threedmm_sq += float(((threedmm.astype(np.float64) - true_3dmm) ** 2).sum())
        self.threedmm_values += threedmm.size
        self.emotion_abs += float(np.abs(emotion - true_emotion).sum())
        self.emotion_values += emotion.size
        predicted, actual = emotion[..., AU_SLICE] >= 0.5, true_emotion[..., AU_SLICE] >= 0.5
        self.au_tp += float((predicted & actual).sum())
        self.au_fp += float((predicted & ~actual).sum())
        self.au_fn += float((~predicted & actual).sum())
        self.va_ccc += float(metrics.paired_ccc(emotion[..., VA_SLICE], true_emotion[..., VA_SLICE]).mean(1).sum())
        # FRDist with one prediction per sample and only its own ground truth appropriate is the
        # mean distance of each reconstruction to its ground truth.
        self.distance += len(emotion) * metrics.frdist(emotion[:, None], true_emotion, np.eye(len(emotion)), workers=1)

    def as_list(self) -> list[float]:
        return [getattr(self, name) for name in self.__dataclass_fields__]

    @classmethod
    def from_list(cls, values: list[float]) -> "ReconstructionTotals":
        return cls(*values)

    def metrics(self, prefix: str = "val_") -> dict[str, float]:
        n = max(self.samples, 1.0)
        f1_denominator = 2 * self.au_tp + self.au_fp + self.au_fn
        values = {
            "recon_3dmm_mse": self.threedmm_sq / max(self.threedmm_values, 1.0),
            "recon_emotion_l1": self.emotion_abs / max(self.emotion_values, 1.0),
            # Micro-averaged over AUs and frames; no AU present or predicted anywhere is a perfect 1.
            "recon_au_f1": 2 * self.au_tp / f1_denominator if f1_denominator else 1.0,
            "recon_va_ccc": self.va_ccc / n,
            "recon_FRDist": self.distance / n,
        }
        if not self.samples:
            values = {name: float("nan") for name in values}
        return {f"{prefix}{name}": value for name, value in values.items()}


def reconstruct(mmt, feats: dict[str, torch.Tensor]) -> tuple[np.ndarray, np.ndarray]:
    """Raw 3DMM and emotion reconstructions of a batch by a stage-1 MMT (no latent noise)."""
    with torch.no_grad():
        threedmm, emotion = mmt.decode(mmt.encode(feats))
    return threedmm.float().cpu().numpy(), emotion.float().cpu().numpy()
