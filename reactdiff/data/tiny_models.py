"""Tiny randomly initialised stand-ins for the pretrained feature networks (tests and demos).

They are saved the way real weights are supplied — a `save_pretrained` folder for wav2vec2 and
TorchScript files for the facial predictors — so `features.py` runs its real loading code without
any download. Their outputs have the right shapes and rates but carry no meaning.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

from reactdiff.data.features import MODEL_RATE, PAPER_FACIAL_DIMS

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def make_tiny_wav2vec2(directory: str | Path, hidden_size: int = 16, seed: int = 0) -> Path:
    """Save a tiny wav2vec2 (one Transformer layer, narrow convs) and its feature extractor.

    The conv stack keeps wav2vec2-base's kernels and strides (total stride 320 at 16 kHz, 50 Hz),
    so the AFR stream has the paper's timing with `dim = 2 * hidden_size`.
    """
    directory = Path(directory)
    config = Wav2Vec2Config(
        conv_dim=(8,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        hidden_size=hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    with torch.random.fork_rng(devices=[]):  # seed the weights without touching the caller's RNG
        torch.manual_seed(seed)
        model = Wav2Vec2Model(config)
    model.save_pretrained(directory)
    Wav2Vec2FeatureExtractor(sampling_rate=MODEL_RATE, do_normalize=True).save_pretrained(directory)
    return directory


class TinyFacialPredictor(nn.Module):
    """(B, 3, input_size, input_size) RGB in [0, 1] → (B, dim), normalising inside like the real ones.

    Like the paper's predictors it accepts only its own input size, so a caller that forgets to
    resize frames fails loudly.
    """

    def __init__(self, dim: int, input_size: int) -> None:
        super().__init__()
        self.input_size = input_size
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.features = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(16, dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-1] != self.input_size or images.shape[-2] != self.input_size:
            raise ValueError(f"expected {self.input_size}x{self.input_size} images, got {images.shape}")
        return self.head(self.features((images - self.mean) / self.std))


def make_tiny_facial_predictors(
    directory: str | Path, dims: Mapping[str, int] = PAPER_FACIAL_DIMS, input_size: int = 224, seed: int = 0
) -> dict[str, Path]:
    """Script one `TinyFacialPredictor` per stream and save `<directory>/<name>.pt`; return the paths.

    `input_size` defaults to the paper's 224, like `FacialFeatures`; tests pass a small size to both.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = {}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for name, dim in dims.items():
            paths[name] = directory / f"{name}.pt"
            torch.jit.save(torch.jit.script(TinyFacialPredictor(dim, input_size).eval()), paths[name])
    return paths
