"""ReactDiff models in pure PyTorch (no Ray, no MLflow): see docs/architecture.md, "Model API"."""

from reactdiff.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from reactdiff.models.denoiser import Denoiser
from reactdiff.models.diffusion import LatentDiffusion
from reactdiff.models.lrs import LRS, ListenerStyle
from reactdiff.models.mmt import MMT, CausalCache, LatentStats, LatentStatsAccumulator
from reactdiff.models.reactdiff import OnlineStream, ReactDiff

__all__ = [
    "LRS",
    "MMT",
    "CausalCache",
    "Denoiser",
    "LatentDiffusion",
    "LatentStats",
    "LatentStatsAccumulator",
    "ListenerStyle",
    "OnlineStream",
    "ReactDiff",
    "load_checkpoint",
    "read_checkpoint",
    "save_checkpoint",
]
