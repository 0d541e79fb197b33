"""Self-describing single-file checkpoints for both stages.

One `torch.save` file holding only plain types and tensors, so it loads with
`torch.load(weights_only=True)` (no pickled code runs on load):

    format, version, stage (1 | 2), config (ModelConfig as JSON; stage 1: its `mmt` part is the
    MMT's), streams {name: dim}, weights (the model's state dict: the MMT with its latent
    statistics, and for stage 2 the denoiser, its EMA and the LRS styles), extra.

Writes are atomic (`reactdiff.atomic_io`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from reactdiff.atomic_io import atomic_open
from reactdiff.config import ModelConfig
from reactdiff.models.mmt import MMT
from reactdiff.models.reactdiff import ReactDiff

FORMAT = "reactdiff-checkpoint"
VERSION = 2  # 2: latent statistics and LRS styles inside `weights`


def save_checkpoint(path: str | Path, model: MMT | ReactDiff, extra: dict[str, Any] | None = None) -> Path:
    """Write `model` (a stage-1 MMT or a stage-2 ReactDiff) to `path` atomically. `extra` is
    free metadata of plain types (epochs, store fingerprint...); model state goes in `weights`."""
    path = Path(path)
    if isinstance(model, ReactDiff):
        stage, mmt, config = 2, model.mmt, model.config
    elif isinstance(model, MMT):
        stage, mmt, config = 1, model, ModelConfig(mmt=model.config)
    else:
        raise TypeError(f"save_checkpoint: expected an MMT or a ReactDiff, got {type(model).__name__}")
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "stage": stage,
        "config": config.model_dump_json(),
        "streams": dict(mmt.streams),
        "weights": model.state_dict(),
        "extra": extra or {},
    }
    with atomic_open(path) as file:
        torch.save(payload, file)
    return path


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The raw checkpoint dict (weights_only load), validated to be ours."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    payload = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a reactdiff checkpoint (no 'format': '{FORMAT}' key)")
    if payload.get("version") != VERSION:
        raise ValueError(
            f"{path}: checkpoint version {payload.get('version')} is not supported (this code reads version {VERSION})"
        )
    return payload


def load_checkpoint(path: str | Path) -> MMT | ReactDiff:
    """Rebuild the saved model on the CPU in eval mode: an MMT (stage 1) or a ReactDiff
    (stage 2)."""
    payload = read_checkpoint(path)
    config = ModelConfig.model_validate(json.loads(payload["config"]))
    mmt = MMT(payload["streams"], config.mmt)
    model: MMT | ReactDiff = mmt if payload["stage"] == 1 else ReactDiff(mmt, config)
    model.load_state_dict(payload["weights"])
    return model.eval()
