"""The one path from speaker features to reactions, for every caller: `generate`, the served
pyfunc, `reactdiff serve`, scoring in training and `evaluate`, and `score`'s baselines.

Speaker features {stream: (N, T, D)} as numpy go in; the REACT2024 layout comes out, per listener
style, {"3dmm": (N, α, T, 58), "emotion": (N, α, T, 25)} float32 numpy. Speakers are generated in
batches of `GENERATION_BATCH`, the batch that starts at speaker i seeded `seed + i`; a ReactDiff
seeds speaker b of a batch `batch seed + b` itself, so speaker i always gets `seed + i`. Every
caller batching and seeding here is what makes `generate` then `score` equal `evaluate`, and the
pyfunc and `serve` equal `generate`, number for number.

A generator is a ReactDiff, whose styles share one DDIM pass per batch, or a baseline
(evaluate/baselines.py), which ignores styles and draws its batch from one seeded NumPy generator.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch

from reactdiff import console
from reactdiff.models.lrs import ListenerStyle
from reactdiff.models.reactdiff import GENERATION_BATCH

KEYS = ("3dmm", "emotion")


def batches(n: int, seed: int | None) -> Iterator[tuple[slice, int | None]]:
    """The speaker batches of `n` speakers and each one's seed (None: unseeded)."""
    for start in range(0, n, GENERATION_BATCH):
        yield slice(start, min(start + GENERATION_BATCH, n)), None if seed is None else seed + start


def tensors(arrays: dict[str, np.ndarray], device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """Feature arrays as the float32 tensors a model reads."""
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).to(device) for k, v in arrays.items()}


def _style_rows(style: ListenerStyle | None, rows: slice) -> ListenerStyle | None:
    """A batch's part of a style: a per-speaker (N, D) style gives its rows; one (D,) style is every speaker's."""
    if style is None or style.mean.dim() == 1:
        return style
    return style.rows(rows.start, rows.stop)


def _batch_reactions(
    generator: Any,
    speaker: dict[str, np.ndarray],
    alpha: int,
    mode: str,
    seed: int | None,
    styles: Sequence[ListenerStyle | None] = (None,),
    bf16_sampling: bool = False,
) -> list[dict[str, np.ndarray]]:
    """One batch (at most `GENERATION_BATCH` speakers, seeded `seed`), per style."""
    if not isinstance(generator, torch.nn.Module):
        out = generator.generate(speaker, alpha=alpha, mode=mode, seed=seed)
        return [{key: np.asarray(out[key], np.float32) for key in KEYS}] * len(styles)
    feats = tensors(
        {k: v for k, v in speaker.items() if k in generator.mmt.streams}, next(generator.parameters()).device
    )
    outs = generator.generate_in_styles(
        feats, list(styles), alpha=alpha, mode=mode, seed=seed, bf16_sampling=bf16_sampling
    )
    return [{key: out[key].cpu().numpy() for key in KEYS} for out in outs]


def reactions(
    generator: Any,
    speaker: dict[str, np.ndarray],
    alpha: int,
    mode: str,
    seed: int | None,
    styles: Sequence[ListenerStyle | None] = (None,),
    keys: Sequence[str] = KEYS,
    bf16_sampling: bool = False,
    progress: str | None = None,
) -> list[dict[str, np.ndarray]]:
    """Per style, {key: (N, α, T, D)} for the `keys` kept (evaluation keeps emotion alone: a test
    split's 3DMM is gigabytes). `progress`: a progress line with this label, one step per batch."""
    n = next(iter(speaker.values())).shape[0]
    chunks: list[dict[str, list[np.ndarray]]] = [{key: [] for key in keys} for _ in styles]
    steps = list(batches(n, seed))
    if progress:
        steps = console.progress(steps, total=len(steps), desc=progress, unit="batch")
    for rows, batch_seed in steps:
        batch = {k: v[rows] for k, v in speaker.items()}
        batch_styles = [_style_rows(style, rows) for style in styles]
        outs = _batch_reactions(generator, batch, alpha, mode, batch_seed, batch_styles, bf16_sampling)
        for chunk, out in zip(chunks, outs, strict=True):
            for key in keys:
                chunk[key].append(out[key])
    return [{key: np.concatenate(parts[key]) for key in keys} for parts in chunks]
