"""One pass at the paper's full dims (AU 25088, d_model 1024, latent 128, ws 50, T 20) on a short
clip, batch 1: catches width mismatches that tiny dims hide. A few seconds on a CPU."""

from __future__ import annotations

import pytest
import torch

from reactdiff.config import ModelConfig
from reactdiff.models import MMT, LatentStatsAccumulator, ReactDiff

pytestmark = pytest.mark.usefixtures("one_torch_thread")

PAPER = {"au": 25088, "fe": 1408, "va": 64, "afr": 1536, "mfcc": 26}


def test_paper_dims_forward_and_generate():
    torch.manual_seed(0)
    config = ModelConfig()  # paper defaults
    mmt = MMT(PAPER, config.mmt).eval()
    feats = {name: torch.randn(1, 50, dim) for name, dim in PAPER.items()}
    with torch.no_grad():
        latent = mmt.encode(feats)
        assert latent.shape == (1, 50, 128)
        loss, _ = mmt.loss(feats, torch.randn(1, 50, 58), torch.rand(1, 50, 25))
        assert torch.isfinite(loss)

    model = ReactDiff.from_stage1(mmt, config).eval()
    accumulator = LatentStatsAccumulator(128)
    accumulator.update(latent)
    model.set_latent_stats(accumulator.finalize())
    out = model.generate(feats, alpha=2, seed=0)
    assert out["3dmm"].shape == (1, 2, 50, 58) and out["emotion"].shape == (1, 2, 50, 25)
    assert torch.isfinite(out["3dmm"]).all()
    loss, _ = model.diffusion_loss(feats, feats)
    assert torch.isfinite(loss)
