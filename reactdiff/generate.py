"""`reactdiff generate`: listener reactions in the REACT2024 formats from a model and speaker clips.

Model (`model_uri`): a stage-2 checkpoint file, loaded with `load_checkpoint`, or an MLflow model
URI (`models:/reactdiff@champion`, `runs:/<run id>/model`) on `tracking_uri` (default: the
config's), loaded as a pyfunc (`tracking.load_pyfunc`) so the registered pyfunc is what
generates. A model logged without a params schema would have MLflow drop alpha/mode/seed, so its
logged `predict` is then called directly (with a warning).

Speaker (`speaker`), one of:
    <store dir>:<split>   every speaker sample of a feature-store split (role-swapped, so every
                          person-clip of the split speaks once); any profile; the store may be
                          a pyarrow.fs URI (s3://bucket/store:val)
    <clip file>           one clip of a REACT2024-layout corpus, given by any of its files outside
                          the Emotion tree, e.g. <root>/val/Audio_files/NoXI/001/Expert_video/3.wav;
                          its features are computed like `prepare --profile lite` does (Emotion 25
                          + 3DMM 58 + MFCC 26 from the WAV), so it serves lite-profile models only

Listener style (`listener_ref`, LRS): reference clip files of the target listener (lite
profile, same form as a speaker clip), or one listener identity the model was fitted on
(`<dataset>/<session>/<person>`, as in `model.lrs.styles`). Without it the global style is used.
The served pyfunc has no style input, so with an MLflow URI and a style the ReactDiff inside the
loaded pyfunc generates directly (same artifact, same weights).

Output, per speaker clip `<dataset>/<session>/<person>/<clip>` and reaction k = 0..α-1:

    <out>/reactions/<dataset>/<session>/<person>/<clip>/<k>.csv   Emotion: header + (T, 25)
    <out>/reactions/<dataset>/<session>/<person>/<clip>/<k>.npy   3DMM: (T, 1, 58) float32
    <out>/reactions/<dataset>/<session>/<person>/<clip>/emotion.png   valence/arousal vs speaker
    <out>/emotion.npy    all emotion reactions, (N, α, T, 25) float32, clip i in row i, AUs raw
    <out>/3dmm.npy       all 3DMM reactions, (N, α, T, 58) float32
    <out>/generation.json                                         model, options, clips (row order)

T is the model's frame count (no extra on-disk frame). AUs are written to the CSVs as occurrences
(the generated value thresholded at 0.5), as the REACT2024 Emotion format stores them; the files
parse with the corpus reader's Emotion/3DMM readers. `emotion.npy` keeps the generated AU
probabilities, which is what `evaluate` scores, so `reactdiff score` on this folder reproduces
`evaluate`'s numbers for a store split (same α, mode and seed). Clip i is generated with seed
`seed + i`, in the batches of `reactdiff.predict` like `evaluate`, so the reactions are the
ones `evaluate` scores.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reactdiff import console, predict, tracking
from reactdiff.config import TrackingConfig
from reactdiff.data import corpus, features, layout
from reactdiff.data.store import Location, Store, to_samples
from reactdiff.models.checkpoint import load_checkpoint
from reactdiff.models.lrs import ListenerStyle
from reactdiff.models.reactdiff import ReactDiff
from reactdiff.request_checks import DEFAULT_ALPHA, MODES

log = logging.getLogger(__name__)

LITE_STREAMS = ("emotion", "3dmm", "mfcc")


@dataclass
class Speakers:
    """Speaker clips and their features {stream: (N, T, D) float32}, clip i in row i."""

    clips: list[str]
    feats: dict[str, np.ndarray]


# --------------------------------------------------------------------------------------------
# Speakers and listener references
# --------------------------------------------------------------------------------------------


def lite_features(path: str | Path) -> tuple[str, dict[str, np.ndarray]]:
    """A corpus clip's lite-profile features {stream: (T, D)}, as `prepare --profile lite` computes them."""
    root, split, ref = corpus.locate_clip(path)
    clip = corpus.load_clip(root, split, ref)
    audio, rate = clip.read_audio()
    return ref.path, {"emotion": clip.emotion, "3dmm": clip.face3d, "mfcc": features.mfcc(audio, rate, clip.frames)}


def load_speakers(speaker: str | Path, streams: Sequence[str]) -> Speakers:
    """The speaker clips named by `speaker` (see the module doc) with the `streams` the model reads."""
    text = str(speaker)
    store_dir, _, split = text.rpartition(":")
    if store_dir and Location(store_dir).exists("manifest.json"):
        store = Store(store_dir)
        wanted = sorted(set(streams) | {"emotion"})  # emotion: the speaker trace in the plots
        samples = to_samples(store.read_split(split, wanted), wanted)
        # A person-clip speaks once per split; keep the first sample of any repeated clip.
        first = {clip: i for i, clip in reversed(list(enumerate(samples["speaker_clip"])))}
        rows = sorted(first.values())
        return Speakers(
            [samples["speaker_clip"][i] for i in rows],
            {s: np.asarray(a[rows], dtype=np.float32) for s, a in samples["speaker"].items()},
        )
    missing = sorted(set(streams) - set(LITE_STREAMS))
    if missing:
        raise ValueError(
            f"speaker '{text}' is a corpus clip, from which only the lite streams {LITE_STREAMS} are "
            f"computed, but the model also reads {missing}: prepare a feature store with that "
            "profile and pass <store dir>:<split> instead"
        )
    clip, feats = lite_features(text)
    return Speakers([clip], {name: values[None] for name, values in feats.items()})


def listener_style(model: ReactDiff, listener_ref: Sequence[str | Path]) -> ListenerStyle:
    """LRS style of the target listener: a fitted identity, or estimated from reference clips."""
    if len(listener_ref) == 1 and str(listener_ref[0]) in model.lrs.styles:
        return model.lrs.styles[str(listener_ref[0])]
    latents = []
    for path in listener_ref:
        _, feats = lite_features(path)
        tensors = {name: torch.from_numpy(values)[None] for name, values in feats.items()}
        latents.append(model.encode_latent(tensors)[0])
    return model.lrs.estimate_style(latents)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------


def _stage2(model: Any, source: str) -> ReactDiff:
    if not isinstance(model, ReactDiff):
        raise ValueError(
            f"model '{source}' is a {type(model).__name__} (stage 1); generate needs a "
            "stage-2 ReactDiff checkpoint or its registered model"
        )
    return model


class Generator:
    """Generates through the pyfunc for MLflow URIs and through the ReactDiff for checkpoints."""

    def __init__(self, model_uri: str | Path, tracking_uri: str | None = None):
        text = str(model_uri)
        ref = tracking.parse_model(text)
        self.pyfunc = None
        if ref.is_file:
            self.model = _stage2(load_checkpoint(text), text)
        else:
            self.pyfunc = tracking.load_pyfunc(tracking_uri or TrackingConfig().tracking_uri, ref)
            self.model = _stage2(self.pyfunc.unwrap_python_model().model, text)
            schema = self.pyfunc.metadata.get_params_schema()
            self.declared_params = set() if schema is None else {p.name for p in schema.params}
            if not self.declared_params >= {"alpha", "mode", "seed"}:
                log.warning(
                    "%s declares no params schema for alpha/mode/seed (MLflow would drop "
                    "them); calling its logged predict directly",
                    text,
                )

    def __call__(
        self, feats: dict[str, np.ndarray], alpha: int, mode: str, seed: int | None, style: ListenerStyle | None
    ) -> dict[str, np.ndarray]:
        """{stream: (B, T, D)} → {"3dmm": (B, α, T, 58), "emotion": (B, α, T, 25)} numpy; speaker b
        is seeded `seed + b`."""
        if self.pyfunc is not None and style is None:
            params = {"alpha": alpha, "mode": mode, **({} if seed is None else {"seed": seed})}
            if self.declared_params >= set(params):
                return self.pyfunc.predict(feats, params=params)
            # MLflow drops params a model's signature does not declare; call the logged
            # predict itself so alpha/mode/seed still apply to models logged without them.
            return self.pyfunc.unwrap_python_model().predict(None, feats, params)
        (out,) = predict.reactions(self.model, feats, alpha, mode, seed, [style])
        return out


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_emotion_csv(path: Path, emotion: np.ndarray) -> None:
    """(T, 25) → REACT2024 Emotion CSV; AUs as 0/1 occurrences."""
    values = emotion.astype(np.float64).copy()
    values[:, layout.AU_SLICE] = values[:, layout.AU_SLICE] >= 0.5
    np.savetxt(
        path,
        values,
        delimiter=",",
        comments="",
        header=",".join(layout.EMOTION_COLUMNS),
        fmt=["%d"] * len(layout.AU_NAMES) + ["%.6f"] * (layout.EMOTION_DIM - len(layout.AU_NAMES)),
    )


def plot_emotion(path: Path, clip: str, speaker: np.ndarray, reactions: np.ndarray) -> None:
    """Valence and arousal of the α reactions (thin) against the speaker's (black)."""
    figure = Figure(figsize=(9, 4.5))
    FigureCanvasAgg(figure)  # attaches the Agg canvas: no pyplot, no global state
    seconds = np.arange(speaker.shape[0]) / layout.FPS
    axes = figure.subplots(2, 1, sharex=True)
    columns = range(layout.VA_SLICE.start, layout.VA_SLICE.stop)
    for axis, column, name in zip(axes, columns, ("valence", "arousal"), strict=True):
        for k, reaction in enumerate(reactions):
            axis.plot(seconds, reaction[:, column], lw=0.8, alpha=0.6, label="reactions" if k == 0 else None)
        axis.plot(seconds, speaker[:, column], color="black", lw=1.6, label="speaker")
        axis.set_ylabel(name)
        axis.set_ylim(-1.05, 1.05)
    axes[0].set_title(f"{clip}: {len(reactions)} generated listener reactions")
    axes[0].legend(loc="upper right", fontsize="small")
    axes[1].set_xlabel("seconds")
    figure.tight_layout()
    figure.savefig(path, dpi=80)


def generate_to_dir(
    model_uri: str | Path,
    speaker: str | Path,
    out_dir: str | Path,
    alpha: int = DEFAULT_ALPHA,
    mode: str = MODES[0],
    listener_ref: Sequence[str | Path] | None = None,
    seed: int | None = None,
    tracking_uri: str | None = None,
    max_clips: int = 0,
) -> list[Path]:
    """Generate α reactions per speaker clip (the first `max_clips` of them; 0: all) and write
    them under `out_dir` (module doc); returns the files written."""
    if alpha < 1:
        raise ValueError(f"alpha: expected the number of reactions per speaker clip (>= 1), got {alpha}")
    if max_clips < 0:
        raise ValueError(f"max_clips: expected a number of speaker clips (0 = all), got {max_clips}")
    generator = Generator(model_uri, tracking_uri)
    speakers = load_speakers(speaker, list(generator.model.mmt.streams))
    if max_clips:
        speakers = Speakers(speakers.clips[:max_clips], {k: v[:max_clips] for k, v in speakers.feats.items()})
    style = listener_style(generator.model, listener_ref) if listener_ref else None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    n, frames = len(speakers.clips), int(speakers.feats["emotion"].shape[1])
    # The whole run in the REACT2024 shape, written batch by batch (a test split's 3DMM is ~1 GB).
    arrays = {
        key: np.lib.format.open_memmap(out_dir / name, mode="w+", dtype=np.float32, shape=(n, alpha, frames, dim))
        for key, name, dim in (
            ("emotion", layout.EMOTION_FILE, layout.EMOTION_DIM),
            ("3dmm", layout.FACE3D_FILE, layout.FACE3D_DIM),
        )
    }
    written: list[Path] = [out_dir / layout.EMOTION_FILE, out_dir / layout.FACE3D_FILE]
    # Batch by batch, as predict.reactions batches and seeds, so the pyfunc gets one batch at a time.
    steps = list(predict.batches(n, seed))
    for rows, batch_seed in console.progress(steps, total=len(steps), desc="generate", unit="batch"):
        feats = {name: values[rows] for name, values in speakers.feats.items() if name in generator.model.mmt.streams}
        out = generator(feats, alpha, mode, batch_seed, style)
        for key, array in arrays.items():
            array[rows] = out[key]
        for b, clip in enumerate(speakers.clips[rows]):
            folder = out_dir / layout.REACTIONS_DIR / clip
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(alpha):
                write_emotion_csv(folder / f"{k}.csv", out["emotion"][b, k])
                np.save(folder / f"{k}.npy", out["3dmm"][b, k][:, None, :].astype(np.float32))
                written += [folder / f"{k}.csv", folder / f"{k}.npy"]
            plot_emotion(folder / "emotion.png", clip, speakers.feats["emotion"][rows.start + b], out["emotion"][b])
            written.append(folder / "emotion.png")
    for array in arrays.values():
        array.flush()
    summary = {
        "model": str(model_uri),
        "speaker": str(speaker),
        "alpha": alpha,
        "mode": mode,
        "seed": seed,
        "listener_ref": [str(p) for p in listener_ref or []],
        "frames": frames,
        "clips": speakers.clips,
    }
    (out_dir / layout.SUMMARY_FILE).write_text(json.dumps(summary, indent=2))
    written.append(out_dir / layout.SUMMARY_FILE)
    return written


def serving_request(
    model_uri: str | Path,
    speaker: str | Path,
    max_clips: int = 1,
    alpha: int = DEFAULT_ALPHA,
    mode: str = MODES[0],
    seed: int | None = None,
    tracking_uri: str | None = None,
) -> dict:
    """The JSON body for the served pyfunc (`mlflow models serve`, README "Serving the champion"):
    the model's streams of the first `max_clips` speaker clips of `speaker` (0: all), and the params.

        {"inputs": {<stream>: B x T x D numbers, ...}, "params": {"alpha": α, "mode": ..., "seed": ...}}
    """
    if max_clips < 0:
        raise ValueError(f"max_clips: expected a number of speaker clips (0 = all), got {max_clips}")
    streams = Generator(model_uri, tracking_uri).model.mmt.streams
    speakers = load_speakers(speaker, list(streams))
    clips = max_clips or len(speakers.clips)
    # float32 → Python float is exact, so the server sees the store's values bit for bit.
    return {
        "inputs": {name: speakers.feats[name][:clips].tolist() for name in streams},
        "params": {"alpha": alpha, "mode": mode, **({} if seed is None else {"seed": seed})},
    }


@dataclass
class RealTime:
    """Streaming online generation timed window by window against the clip's own clock."""

    window_seconds: float  # audio/video time one window covers (ws / fps)
    seconds_per_window: list[float]  # generation wall time of each window, in order

    @property
    def factor(self) -> float:
        """Real-time factor: generation time / clip time; below 1 keeps up with a live speaker."""
        return sum(self.seconds_per_window) / (self.window_seconds * len(self.seconds_per_window))

    def summary(self) -> str:
        times = sorted(self.seconds_per_window)
        return (
            f"real-time factor {self.factor:.2f} (one {self.window_seconds:.1f} s window takes "
            f"{times[len(times) // 2]:.2f} s median, {times[-1]:.2f} s worst; below 1 keeps up)"
        )


def measure_real_time(
    model: ReactDiff,
    speaker_feats: dict[str, torch.Tensor],
    alpha: int = DEFAULT_ALPHA,
    fps: int = layout.FPS,
    seed: int | None = 0,
) -> RealTime:
    """Time `model.generate_online` on one speaker clip (a batch of 1), window by window."""
    seconds = []
    start = time.perf_counter()
    for _ in model.generate_online(speaker_feats, alpha=alpha, seed=seed):
        now = time.perf_counter()
        seconds.append(now - start)
        start = now
    return RealTime(model.window_size / fps, seconds)
