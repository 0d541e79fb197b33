"""The four naive REACT2024 baselines and a learned reference (B_Ridge), with the model's
generation interface.

    generate(speaker_feats, alpha=10, mode="offline", listener_style=None, seed=None)
        -> {"3dmm": (B, alpha, T, 58), "emotion": (B, alpha, T, 25)}   numpy float32

`speaker_feats` holds at least "emotion" (B, T, 25) and "3dmm" (B, T, 58), numpy or torch. `mode`
and `listener_style` are accepted for interface parity and change nothing: none of these baselines
looks ahead in time or models a listener, so online equals offline.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from reactdiff.data.layout import EMOTION_DIM, FACE3D_DIM


def _numpy(value) -> np.ndarray:
    """A torch tensor or array-like as a numpy array."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


def _speaker_arrays(speaker_feats: dict) -> tuple[np.ndarray, np.ndarray]:
    arrays = []
    for key, dim in (("emotion", EMOTION_DIM), ("3dmm", FACE3D_DIM)):
        if key not in speaker_feats:
            raise ValueError(f"speaker_feats: missing stream '{key}' (have {sorted(speaker_feats)})")
        value = speaker_feats[key]
        value = _numpy(value)
        if value.ndim != 3 or value.shape[-1] != dim:
            raise ValueError(f"speaker_feats['{key}']: expected (B, T, {dim}), got {value.shape}")
        arrays.append(value.astype(np.float32))
    emotion, face = arrays
    if emotion.shape[:2] != face.shape[:2]:
        raise ValueError(f"speaker_feats: 'emotion' {emotion.shape} and '3dmm' {face.shape} differ in (B, T)")
    return emotion, face


def _check_mode(mode: str) -> None:
    if mode not in ("offline", "online"):
        raise ValueError(f"mode: expected 'offline' or 'online', got {mode!r}")


def _repeat(per_sample: np.ndarray, alpha: int) -> np.ndarray:
    """(B, T, D) -> (B, alpha, T, D) as a copy: callers may write into the result."""
    return np.repeat(per_sample[:, None], alpha, axis=1)


class RandomBaseline:
    """B_Random: every emotion channel i.i.d. uniform on [0, 1]; 3DMM is the training mean face."""

    name = "B_Random"

    def __init__(self, mean_face: np.ndarray):
        self.mean_face = np.asarray(mean_face, dtype=np.float32).reshape(FACE3D_DIM)

    def generate(
        self,
        speaker_feats: dict,
        alpha: int = 10,
        mode: Literal["offline", "online"] = "offline",
        listener_style: object = None,
        seed: int | None = None,
    ) -> dict[str, np.ndarray]:
        _check_mode(mode)
        emotion, _ = _speaker_arrays(speaker_feats)
        batch, frames, _ = emotion.shape
        rng = np.random.default_rng(seed)
        return {
            "3dmm": np.broadcast_to(self.mean_face, (batch, alpha, frames, FACE3D_DIM)).copy(),
            "emotion": rng.random((batch, alpha, frames, EMOTION_DIM), dtype=np.float32),
        }


class MimeBaseline:
    """B_Mime: the listener copies the speaker's emotion and 3DMM, frame by frame."""

    name = "B_Mime"

    def generate(
        self,
        speaker_feats: dict,
        alpha: int = 10,
        mode: Literal["offline", "online"] = "offline",
        listener_style: object = None,
        seed: int | None = None,
    ) -> dict[str, np.ndarray]:
        _check_mode(mode)
        emotion, face = _speaker_arrays(speaker_feats)
        return {"3dmm": _repeat(face, alpha), "emotion": _repeat(emotion, alpha)}


class MeanSeqBaseline:
    """B_MeanSeq: the per-frame mean over the training listener sequences, for every speaker."""

    name = "B_MeanSeq"

    def __init__(self, mean_emotion: np.ndarray, mean_3dmm: np.ndarray):
        """mean_emotion (T, 25) and mean_3dmm (T, 58): per-frame means over training listeners."""
        self.mean_emotion = np.asarray(mean_emotion, dtype=np.float32)
        self.mean_3dmm = np.asarray(mean_3dmm, dtype=np.float32)
        if self.mean_emotion.ndim != 2 or self.mean_emotion.shape[1] != EMOTION_DIM:
            raise ValueError(f"mean_emotion: expected (T, {EMOTION_DIM}), got {self.mean_emotion.shape}")
        if self.mean_3dmm.shape != (len(self.mean_emotion), FACE3D_DIM):
            raise ValueError(
                f"mean_3dmm: expected ({len(self.mean_emotion)}, {FACE3D_DIM}), got {self.mean_3dmm.shape}"
            )

    @classmethod
    def fit(cls, listener_emotion: np.ndarray, listener_3dmm: np.ndarray) -> MeanSeqBaseline:
        """From training listeners: emotion (N, T, 25) and 3DMM (N, T, 58)."""
        listener_emotion, listener_3dmm = np.asarray(listener_emotion), np.asarray(listener_3dmm)
        if listener_emotion.ndim != 3 or listener_3dmm.ndim != 3:
            raise ValueError(
                f"fit: expected listener_emotion (N, T, {EMOTION_DIM}) and listener_3dmm "
                f"(N, T, {FACE3D_DIM}), got {listener_emotion.shape} and {listener_3dmm.shape}"
            )
        return cls(listener_emotion.mean(axis=0, dtype=np.float64), listener_3dmm.mean(axis=0, dtype=np.float64))

    def generate(
        self,
        speaker_feats: dict,
        alpha: int = 10,
        mode: Literal["offline", "online"] = "offline",
        listener_style: object = None,
        seed: int | None = None,
    ) -> dict[str, np.ndarray]:
        _check_mode(mode)
        emotion, _ = _speaker_arrays(speaker_feats)
        batch, frames, _ = emotion.shape
        if frames > len(self.mean_emotion):
            raise ValueError(
                f"speaker_feats: {frames} frames, but the mean sequence was fitted on {len(self.mean_emotion)}"
            )
        return {
            "3dmm": np.broadcast_to(self.mean_3dmm[:frames], (batch, alpha, frames, FACE3D_DIM)).copy(),
            "emotion": np.broadcast_to(self.mean_emotion[:frames], (batch, alpha, frames, EMOTION_DIM)).copy(),
        }


class MeanFrameBaseline(MeanSeqBaseline):
    """B_MeanFr: the B_MeanSeq mean sequence averaged over frames, held constant in time."""

    name = "B_MeanFr"

    def __init__(self, mean_emotion: np.ndarray, mean_3dmm: np.ndarray):
        """Per-frame means (T, 25) and (T, 58), as for B_MeanSeq; they are averaged over frames."""
        super().__init__(mean_emotion, mean_3dmm)
        frames = len(self.mean_emotion)
        self.mean_emotion = np.broadcast_to(self.mean_emotion.mean(axis=0), (frames, EMOTION_DIM)).copy()
        self.mean_3dmm = np.broadcast_to(self.mean_3dmm.mean(axis=0), (frames, FACE3D_DIM)).copy()


class RidgeBaseline:
    """B_Ridge, a learned reference beyond REACT2024's four naive baselines: a lagged ridge
    regression from the speaker's recent past to the listener's emotion and 3DMM, fitted on the
    train split in closed form.

    Inputs per frame t: the speaker's `streams` at frames t − lag for each of `lags` (the first
    frame repeated before the clip starts, the last after it ends) and a constant. Ridge penalty `penalty` on the raw
    values, constant unpenalised. Two steps make it a fair stand-in for a generative model:
    - each output channel's deviations from its training mean are rescaled to the training
      listeners' spread (a plain regression shrinks toward the mean, which the concordance in
      FRCorr penalises), and
    - predictions are clipped to each channel's range over the training listeners.
    It is deterministic: the same reaction α times (FRDiv 0). With the default lags it only looks
    back in time, so online equals offline; a negative lag reads ahead (offline only). On the
    demo's corpus, lags −20 … 20 do not beat 0 … 20 (FRCorr 2.29 against 2.31): the gain left is
    not linear.
    """

    name = "B_Ridge"

    def __init__(
        self,
        weights: np.ndarray,
        lags: tuple[int, ...],
        streams: tuple[str, ...],
        center: np.ndarray,
        gain: np.ndarray,
        low: np.ndarray,
        high: np.ndarray,
    ):
        self.weights = np.asarray(weights, dtype=np.float64)  # (inputs·lags + 1, 25 + 58)
        self.lags, self.streams = tuple(lags), tuple(streams)
        self.center, self.gain = np.asarray(center), np.asarray(gain)  # (83,): mean and spread ratio
        self.low, self.high = np.asarray(low), np.asarray(high)  # (83,): training listeners' range

    @staticmethod
    def design(speaker_feats: dict, lags: tuple[int, ...], streams: tuple[str, ...]) -> np.ndarray:
        """(B, T, Σdims·len(lags) + 1) lagged inputs, float64."""
        missing = [s for s in streams if s not in speaker_feats]
        if missing:
            raise ValueError(f"speaker_feats: B_Ridge needs streams {missing} (have {sorted(speaker_feats)})")
        values = [np.asarray(_numpy(speaker_feats[s]), dtype=np.float64) for s in streams]
        x = np.concatenate(values, axis=-1)
        if x.ndim != 3:
            raise ValueError(f"speaker_feats: expected (B, T, D) streams, got {x.shape}")
        frames = x.shape[1]
        columns = []
        for lag in lags:
            index = np.clip(np.arange(frames) - lag, 0, frames - 1)
            columns.append(x[:, index])
        columns.append(np.ones(x.shape[:2] + (1,)))
        return np.concatenate(columns, axis=-1)

    @classmethod
    def fit(
        cls,
        speaker_feats: dict,
        listener_emotion: np.ndarray,
        listener_3dmm: np.ndarray,
        lags: tuple[int, ...] = (0, 5, 10, 15, 20),
        penalty: float = 10.0,
        streams: tuple[str, ...] = ("emotion",),
    ) -> RidgeBaseline:
        """From the train split's samples: speaker streams (N, T, D) and listeners (N, T, 25/58)."""
        target = np.concatenate([listener_emotion, listener_3dmm], axis=-1).astype(np.float64)
        x = cls.design(speaker_feats, lags, streams)
        if x.shape[:2] != target.shape[:2]:
            raise ValueError(f"B_Ridge.fit: speakers {x.shape[:2]} and listeners {target.shape[:2]} differ in (N, T)")
        x, target = x.reshape(-1, x.shape[-1]), target.reshape(-1, target.shape[-1])
        regulariser = penalty * np.eye(x.shape[1])
        regulariser[-1, -1] = 0.0  # the constant is not shrunk
        weights = np.linalg.solve(x.T @ x + regulariser, x.T @ target)
        fitted = x @ weights
        center = target.mean(axis=0)
        spread = fitted.std(axis=0)
        gain = np.where(spread > 1e-8, target.std(axis=0) / np.maximum(spread, 1e-8), 1.0)
        return cls(weights, lags, streams, center, gain, target.min(axis=0), target.max(axis=0))

    def predict(self, speaker_feats: dict) -> np.ndarray:
        """(B, T, 83): emotion then 3DMM, rescaled and clipped."""
        raw = self.design(speaker_feats, self.lags, self.streams) @ self.weights
        return np.clip(self.center + (raw - self.center) * self.gain, self.low, self.high).astype(np.float32)

    def generate(
        self,
        speaker_feats: dict,
        alpha: int = 10,
        mode: Literal["offline", "online"] = "offline",
        listener_style: object = None,
        seed: int | None = None,
    ) -> dict[str, np.ndarray]:
        _check_mode(mode)
        out = self.predict(speaker_feats)
        return {"emotion": _repeat(out[..., :EMOTION_DIM], alpha), "3dmm": _repeat(out[..., EMOTION_DIM:], alpha)}
