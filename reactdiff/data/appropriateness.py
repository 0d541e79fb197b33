"""The (N, N) appropriate-reaction matrix over the role-swapped samples of a split.

`M[k, j] = 1` means the real listener reaction of sample j is an appropriate reaction to the
speaker of sample k. The organisers' matrices can be loaded; `compute_matrix` builds one from
speaker-behaviour similarity when none is given.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reactdiff.data import layout

DEFAULT_THRESHOLD = 0.6


def load_matrix(path: str | Path, n: int) -> np.ndarray:
    """Load a 0/1 matrix of shape (n, n) from .npy or headerless .csv; return it as uint8."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: appropriateness matrix not found; expected a .npy or .csv of shape ({n}, {n})")
    try:
        if path.suffix == ".npy":
            matrix = np.load(path, allow_pickle=False)
        elif path.suffix == ".csv":
            matrix = np.loadtxt(path, delimiter=",", ndmin=2)
        else:
            raise ValueError(f"unsupported suffix '{path.suffix}'")
    except (OSError, ValueError, EOFError) as exc:
        raise ValueError(f"{path}: field 'file': expected a readable .npy or numeric .csv matrix ({exc})") from None
    if matrix.shape != (n, n):
        raise ValueError(
            f"{path}: field 'shape': expected ({n}, {n}) = 2 × rows of the split CSV (role-swapped "
            f"samples), got {matrix.shape}; use the matrix made for this split"
        )
    bad = (matrix != 0) & (matrix != 1)
    if bad.any():
        k, j = np.argwhere(bad)[0]
        raise ValueError(f"{path}: field 'value [{k}, {j}]': expected 0 or 1, got {matrix[k, j]}")
    empty = np.flatnonzero(matrix.sum(axis=1) == 0)
    if len(empty):
        raise ValueError(
            f"{path}: field 'row {empty[0]}': expected at least one appropriate reaction per sample "
            f"(FRCorr/FRDist take a max/min over them), got none in {len(empty)} rows"
        )
    return matrix.astype(np.uint8)


def behaviour_summary(speaker_emotion: np.ndarray) -> np.ndarray:
    """(N, 50): per-clip mean and standard deviation over time of each of the 25 emotion channels."""
    return np.concatenate([speaker_emotion.mean(axis=1), speaker_emotion.std(axis=1)], axis=1)


def compute_matrix(speaker_emotion: np.ndarray, threshold: float = DEFAULT_THRESHOLD) -> np.ndarray:
    """Appropriateness from speaker-behaviour similarity.

    speaker_emotion: (N, T, 25), the speaker of each role-swapped sample. Formula:
      1. s_k = behaviour_summary(speaker k): per-channel mean and std over time (50 values);
      2. each of the 50 summary dimensions is standardised across the N samples (z-score; a
         dimension constant over the samples becomes 0), so every channel statistic counts equally;
      3. sim[k, j] = Pearson correlation between s_k and s_j (0 when either is constant);
      4. M[k, j] = 1 when sim[k, j] >= threshold (speakers k and j behave alike, so the real
         reaction to j is appropriate for k); the diagonal is always 1.
    The matrix is symmetric; a higher threshold gives a subset of the ones of a lower threshold.
    Default threshold: DEFAULT_THRESHOLD (0.6).
    """
    if speaker_emotion.ndim != 3 or speaker_emotion.shape[2] != layout.EMOTION_DIM:
        raise ValueError(f"speaker_emotion: expected shape (N, T, {layout.EMOTION_DIM}), got {speaker_emotion.shape}")
    summary = behaviour_summary(speaker_emotion.astype(np.float64))
    spread = summary.std(axis=0)
    z = np.divide(summary - summary.mean(axis=0), spread, out=np.zeros_like(summary), where=spread > 0)
    z -= z.mean(axis=1, keepdims=True)  # Pearson = cosine of row-centred vectors
    norm = np.linalg.norm(z, axis=1)
    unit = np.divide(z, norm[:, None], out=np.zeros_like(z), where=norm[:, None] > 0)
    matrix = (unit @ unit.T >= threshold).astype(np.uint8)
    np.fill_diagonal(matrix, 1)
    return matrix
