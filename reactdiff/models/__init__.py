"""ReactDiff models in pure PyTorch (no Ray, no MLflow): see docs/architecture.md, "Model API"."""

from reactdiff.models.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from reactdiff.models.denoiser import Denoiser
from reactdiff.models.diffusion import LatentDiffusion
from reactdiff.models.lrs import LRS, ListenerStyle
from reactdiff.models.mmt import MMT, LatentStats, LatentStatsAccumulator
from reactdiff.models.reactdiff import ReactDiff

__all__ = [
    "LRS", "MMT", "Denoiser", "LatentDiffusion", "LatentStats", "LatentStatsAccumulator",
    "ListenerStyle", "ReactDiff", "load_checkpoint", "read_checkpoint", "save_checkpoint",
]
