"""`reactdiff synth`: a seeded synthetic corpus in the exact REACT2024 layout.

Generative story, chosen so that a model can learn it:

- A *session* is a dyad of two persons (NoXI Expert/Novice or a RECOLA pair) with several clips;
  each clip is one row of the split CSV. Persons are new in every session, and every person appears
  in all clips of their session, so per-listener style (what LRS models) is estimable.
- Each person has a persistent *style*: valence/arousal offset, AU base rates, expression bias,
  mean 3DMM face, voice pitch, colours.
- Within a clip the two persons take turns (2–7 s). Each has a smooth *intent* affect process
  (valence, arousal: sums of slow random sinusoids). While speaking, a person expresses their
  intent; while listening, they react to the other's intent `lag` frames earlier (5–15, per
  person-clip) through a *reaction mode* drawn per person-clip: mirror, damped (weaker, smoother)
  or contrasting (valence inverted). So listener(t) is a noisy, mode-dependent function of
  speaker(t − lag), and several different reactions to similar speakers occur.
- Outputs follow the affect deterministically plus noise: AU occurrences threshold a smooth latent
  (VA loadings + style bias + noise; AU25/26 also open with speech syllables), expressions are a
  softmax of VA-driven logits, 3DMM is a fixed linear map of VA and the AU latent plus the style
  face, audio is a voiced tone whose f0 and energy follow arousal while the person speaks, and the
  video draws a face whose brows, mouth opening and smile follow the AUs.

Everything is drawn from `np.random.default_rng([seed, split, session])`, so a session does not
depend on the others and the same seed gives byte-identical files (the MP4 bytes also depend on
the local PyAV/x264 build). `generate_corpus` regenerates the arrays without writing anything.
"""

from __future__ import annotations

import csv
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from reactdiff.config import SynthConfig
from reactdiff.data import layout
from reactdiff.data.corpus import ClipRef, corpus_fingerprint

SAMPLES_PER_FRAME = layout.AUDIO_RATE // layout.FPS  # 1764: audio and video frames align exactly
NOXI_PERSONS = ("Expert_video", "Novice_video")
RECOLA_PAIRS = (("P25", "P26"), ("P41", "P42"), ("P45", "P46"))

# Reaction modes: (valence gain, arousal gain, smoothing width in frames).
MODES: dict[str, tuple[float, float, int]] = {
    "mirror": (0.9, 0.9, 1),
    "damped": (0.45, 0.45, 15),
    "contrasting": (-0.6, 0.6, 1),
}
LAG_FRAMES = (5, 15)
TURN_FRAMES = (50, 175)
INTENT_SCALE = 0.5

# AU latent loadings on (valence, arousal), in layout.AU_NAMES order.
AU_LOADINGS = np.array(
    [
        [0.0, 1.2],
        [0.0, 1.0],
        [-1.2, 0.3],
        [1.3, 0.0],
        [-0.5, 0.5],
        [-0.9, 0.0],
        [-0.6, 0.3],
        [1.5, 0.0],
        [0.5, 0.0],
        [-1.0, 0.0],
        [-0.6, -0.3],
        [-0.5, 0.4],
        [-0.4, -0.4],
        [0.0, 0.4],
        [0.0, 0.3],
    ]
)
AU_MOUTH = np.zeros(len(layout.AU_NAMES))
AU_MOUTH[[13, 14]] = (2.0, 1.6)  # AU25 lips part, AU26 jaw drop open with speech syllables
AU_BIAS = -0.7
AU_NOISE = 0.25
# Expression logits on (valence, arousal), in layout.EXPRESSION_NAMES order.
EXPR_LOADINGS = np.array(
    [
        [0.0, -1.0],
        [3.0, 0.5],
        [-2.0, -1.0],
        [0.5, 2.0],
        [-1.0, 1.5],
        [-1.5, 0.0],
        [-1.5, 1.5],
        [-1.0, -0.5],
    ]
)
EXPR_BIAS = np.array([1.0, 0.0, 0.0, -0.5, -0.5, -0.5, -0.5, -0.5])


@dataclass(frozen=True)
class PersonStyle:
    va: np.ndarray  # (2,) offset of valence/arousal
    au_bias: np.ndarray  # (15,) AU latent offsets
    expr_bias: np.ndarray  # (8,) expression logit offsets
    face_mean: np.ndarray  # (58,) mean 3DMM
    pitch_hz: float
    palette: np.ndarray  # (3, 3) uint8: background, skin, facial features


@dataclass(frozen=True)
class SessionPlan:
    split: str
    index: int  # within the split
    dataset: str
    session: str
    persons: tuple[str, str]  # (CSV speaker, CSV listener)
    clips: tuple[str, ...]


@dataclass
class SynthClip:
    """One person-clip exactly as written (emotion/3DMM/audio) plus the latent facts behind it."""

    split: str
    ref: ClipRef
    emotion: np.ndarray  # (frames_on_disk, 25) float32
    face3d: np.ndarray  # (frames_on_disk, 1, 58) float32
    audio: np.ndarray  # (frames_on_disk * 1764,) int16 at 44.1 kHz
    speaking: np.ndarray  # (frames_on_disk,) bool
    mode: str  # how this person reacts while listening
    lag: int  # frames between the partner's intent and this person's reaction
    palette: np.ndarray


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    rows: dict[str, int]
    person_clips: int
    seconds: float
    fingerprint: str

    @property
    def clips_per_second(self) -> float:
        return self.person_clips / self.seconds

    def __str__(self) -> str:
        dyads = ", ".join(f"{n} {split}" for split, n in self.rows.items())
        return (
            f"{self.person_clips} person-clips ({dyads} dyads) in {self.seconds:.1f} s, "
            f"corpus fingerprint {self.fingerprint[:12]}"
        )


# --------------------------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------------------------


def _sinusoids(rng: np.random.Generator, n: int, dims: int, freq_hz: tuple[float, float], count: int = 4) -> np.ndarray:
    """(n, dims) smooth random process with unit variance: a sum of `count` random sinusoids."""
    t = np.arange(n) / layout.FPS
    freqs = rng.uniform(*freq_hz, (count, dims))
    phases = rng.uniform(0, 2 * np.pi, (count, dims))
    return np.sin(2 * np.pi * freqs * t[:, None, None] + phases).sum(axis=1) / math.sqrt(count / 2)


def _moving_average(x: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0 with edge padding (same length)."""
    if width <= 1:
        return x
    pad = [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (x.ndim - 1)
    c = np.cumsum(np.pad(x, pad, mode="edge"), axis=0)
    c = np.concatenate([np.zeros_like(c[:1]), c])
    return (c[width:] - c[:-width]) / width


@lru_cache(maxsize=1)
def _face_basis() -> np.ndarray:
    """Fixed (17, 52) map from (valence, arousal, 15 AU latents) to 3DMM expression coefficients."""
    return np.random.default_rng(20240).normal(0.0, 0.15, (17, 52))


def _person_style(rng: np.random.Generator) -> PersonStyle:
    face_mean = np.concatenate([rng.normal(0, 0.1, 52), rng.normal(0, 0.05, 3), rng.normal(0, 0.02, 3)])
    palette = np.array([rng.integers(0, 256, 3), rng.integers(150, 256, 3), rng.integers(0, 60, 3)], np.uint8)
    return PersonStyle(
        va=rng.normal(0, 0.2, 2),
        au_bias=rng.normal(0, 0.4, 15),
        expr_bias=rng.normal(0, 0.4, 8),
        face_mean=face_mean,
        pitch_hz=float(rng.uniform(100, 220)),
        palette=palette,
    )


def _voice(rng: np.random.Generator, pitch_hz: float, arousal: np.ndarray, loudness: np.ndarray) -> np.ndarray:
    """Voiced tone (3 harmonics) whose f0 and energy follow arousal; int16 at 44.1 kHz."""
    n = len(arousal)
    frame_t = np.arange(n) / layout.FPS
    sample_t = np.arange(n * SAMPLES_PER_FRAME) / layout.AUDIO_RATE
    f0 = np.interp(sample_t, frame_t, pitch_hz * (1 + 0.3 * arousal))
    amp = np.interp(sample_t, frame_t, loudness * (0.08 + 0.05 * (arousal + 1)))
    # The phase accumulates in float64, wrapped to [0, 2π) so float32 is exact enough from here on.
    phase = np.mod(2 * np.pi * np.cumsum(f0) / layout.AUDIO_RATE, 2 * np.pi).astype(np.float32)
    s, c = np.sin(phase), np.cos(phase)
    harmonics = s + 0.5 * (2 * s * c) + 0.25 * s * (3 - 4 * s * s)  # sin φ + ½ sin 2φ + ¼ sin 3φ
    wave = amp.astype(np.float32) * harmonics + 0.002 * rng.standard_normal(len(s), dtype=np.float32)
    return np.round(np.clip(wave, -1, 1) * 32767).astype(np.int16)


def _person_outputs(rng: np.random.Generator, style: PersonStyle, va: np.ndarray, speaking: np.ndarray):
    """Emotion (n, 25), 3DMM (n, 1, 58) and audio of one person-clip from its affect."""
    n = len(va)
    t = np.arange(n) / layout.FPS
    syllable = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t + rng.uniform(0, 2 * np.pi))
    mouth = speaking * syllable
    au_latent = (
        AU_BIAS
        + style.au_bias
        + va @ AU_LOADINGS.T
        + np.outer(mouth, AU_MOUTH)
        + AU_NOISE * _sinusoids(rng, n, 15, (0.2, 1.5))
    )
    logits = EXPR_BIAS + style.expr_bias + va @ EXPR_LOADINGS.T
    expr = np.exp(logits - logits.max(axis=1, keepdims=True))
    expr /= expr.sum(axis=1, keepdims=True)
    # 4 decimals: the CSV holds exactly these values, so readers get back what synth returns.
    emotion = np.round(np.concatenate([au_latent > 0, va, expr], axis=1), 4).astype(np.float32)

    drive = np.concatenate([va, np.tanh(au_latent)], axis=1)
    expression = drive @ _face_basis() + style.face_mean[:52] + 0.01 * rng.standard_normal((n, 52))
    rotation = style.face_mean[52:55] + np.stack(
        [0.06 * va[:, 1] + 0.04 * mouth, 0.05 * va[:, 0], 0.02 * _sinusoids(rng, n, 1, (0.05, 0.2))[:, 0]], axis=1
    )
    translation = style.face_mean[55:58] + 0.005 * rng.standard_normal((n, 3))
    face3d = np.concatenate([expression, rotation, translation], axis=1).astype(np.float32)[:, None, :]

    audio = _voice(rng, style.pitch_hz, va[:, 1], speaking * (0.3 + 0.7 * syllable))
    return emotion, face3d, audio


# --------------------------------------------------------------------------------------------
# Sessions and clips
# --------------------------------------------------------------------------------------------


def plan_sessions(dyads: Mapping[str, int], clips_per_session: int) -> list[SessionPlan]:
    """Sessions of each split, alternating NoXI and RECOLA, `clips_per_session` rows each."""
    plans = []
    for split in layout.SPLITS:
        remaining = dyads.get(split, 0)
        index = 0
        while remaining > 0:
            count = min(clips_per_session, remaining)
            if index % 2 == 0:
                dataset, session, persons = "NoXI", f"{index + 1:03d}_{split}", NOXI_PERSONS
            else:
                dataset, session = "RECOLA", f"group-{index + 1}_{split}"
                persons = RECOLA_PAIRS[(index // 2) % len(RECOLA_PAIRS)]
            plans.append(SessionPlan(split, index, dataset, session, persons, tuple(str(k + 1) for k in range(count))))
            remaining -= count
            index += 1
    return plans


def generate_session(plan: SessionPlan, frames_on_disk: int, seed: int) -> list[tuple[SynthClip, SynthClip]]:
    """All clips of one session, as (CSV speaker, CSV listener) person-clips per row."""
    rng = np.random.default_rng([seed, layout.SPLITS.index(plan.split), plan.index])
    styles = (_person_style(rng), _person_style(rng))
    n = frames_on_disk
    rows = []
    for clip in plan.clips:
        turn_lengths = rng.integers(TURN_FRAMES[0], TURN_FRAMES[1] + 1, n // TURN_FRAMES[0] + 1)
        turn = np.searchsorted(np.cumsum(turn_lengths), np.arange(n), side="right")
        a_speaks = turn % 2 == rng.integers(2)
        speaking = np.stack([a_speaks, ~a_speaks])
        soft = _moving_average(speaking.T.astype(np.float64), 9).T  # (2, n): smooth turn hand-over
        intent = INTENT_SCALE * np.stack([_sinusoids(rng, n, 2, (0.03, 0.25)) for _ in range(2)])
        people = []
        for p in range(2):
            mode = str(rng.choice(list(MODES)))
            gain_v, gain_a, width = MODES[mode]
            lag = int(rng.integers(LAG_FRAMES[0], LAG_FRAMES[1] + 1))
            partner_past = intent[1 - p][np.maximum(np.arange(n) - lag, 0)]
            reaction = _moving_average(partner_past, width) * (gain_v, gain_a)
            w = soft[p][:, None]
            va = styles[p].va + w * intent[p] + (1 - w) * reaction + 0.03 * rng.standard_normal((n, 2))
            va = np.clip(va, -1, 1)
            emotion, face3d, audio = _person_outputs(rng, styles[p], va, soft[p])
            ref = ClipRef(plan.dataset, plan.session, plan.persons[p], clip)
            people.append(SynthClip(plan.split, ref, emotion, face3d, audio, speaking[p], mode, lag, styles[p].palette))
        rows.append((people[0], people[1]))
    return rows


def _dyad_counts(dyads: int | Mapping[str, int]) -> dict[str, int]:
    counts = {s: dyads for s in layout.SPLITS} if isinstance(dyads, int) else dict(dyads)
    unknown = set(counts) - set(layout.SPLITS)
    if unknown or any(v < 0 for v in counts.values()):
        raise ValueError(
            f"dyads: expected an int or {{split: count >= 0}} with splits in {layout.SPLITS}, got {dict(counts)}"
        )
    return counts


def generate_corpus(
    dyads: int | Mapping[str, int],
    frames_on_disk: int = layout.FRAMES_ON_DISK,
    seed: int = 0,
    clips_per_session: int = 4,
) -> Iterator[tuple[SynthClip, SynthClip]]:
    """Every row of every split, in split-CSV order, without writing anything."""
    for plan in plan_sessions(_dyad_counts(dyads), clips_per_session):
        yield from generate_session(plan, frames_on_disk, seed)


# --------------------------------------------------------------------------------------------
# Rendering and writing
# --------------------------------------------------------------------------------------------

_AU = {name: i for i, name in enumerate(layout.AU_NAMES)}


def render_face_video(emotion: np.ndarray, face3d: np.ndarray, palette: np.ndarray, size: int) -> np.ndarray:
    """(n, size, size, 3) uint8 cartoon face: brows rise with AU1/2 and lower with AU4, the mouth
    opens with AU25/26 and curves up with AU12 (down with AU15); head position follows the 3DMM
    rotation."""
    au = emotion[:, layout.AU_SLICE][:, :, None, None]
    rotation = face3d.reshape(len(face3d), -1)[:, layout.FACE3D_ROT]
    y, x = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size
    cx = 0.5 + np.clip(rotation[:, 1], -0.08, 0.08)[:, None, None]
    cy = 0.5 + np.clip(rotation[:, 0], -0.08, 0.08)[:, None, None]
    dx, dy = x - cx, y - cy
    face = (dx / 0.36) ** 2 + (dy / 0.44) ** 2 < 1
    eyes = (np.abs(dx) - 0.15) ** 2 + (dy + 0.08) ** 2 < 0.045**2
    brow_y = -0.2 - 0.06 * (au[:, _AU["AU1"]] + au[:, _AU["AU2"]]) / 2 + 0.03 * au[:, _AU["AU4"]]
    brows = (np.abs(dy - brow_y) < 0.025) & (np.abs(np.abs(dx) - 0.15) < 0.08)
    half_width = 0.12 * (1 + 0.3 * au[:, _AU["AU12"]])
    curve = 0.05 * (au[:, _AU["AU12"]] - au[:, _AU["AU15"]]) * (1 - (dx / half_width) ** 2)
    half_height = 0.015 + 0.05 * (au[:, _AU["AU25"]] + au[:, _AU["AU26"]]) / 2
    mouth = (np.abs(dx) < half_width) & (np.abs(dy - 0.2 - curve) < half_height)
    labels = face.astype(np.uint8) + (face & (eyes | brows | mouth))  # 0 background, 1 skin, 2 features
    return palette[labels]


def _write_video(path: Path, clip: SynthClip, size: int) -> None:
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=layout.FPS, options={"preset": "ultrafast", "crf": "18"})
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        chunk = 128  # bounds memory for large frame sizes
        for start in range(0, len(clip.emotion), chunk):
            stop = start + chunk
            frames = render_face_video(clip.emotion[start:stop], clip.face3d[start:stop], clip.palette, size)
            for frame in frames:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def _write_person_clip(root: Path, clip: SynthClip, video_size: int) -> None:
    files = {tree: clip.ref.file(root, clip.split, tree) for tree in layout.SUFFIX}
    for f in files.values():
        f.parent.mkdir(parents=True, exist_ok=True)
    np.savetxt(
        files[layout.EMOTION_DIR],
        clip.emotion,
        delimiter=",",
        comments="",
        header=",".join(layout.EMOTION_COLUMNS),
        fmt=["%d"] * 15 + ["%.4f"] * 10,
    )
    np.save(files[layout.FACE3D_DIR], clip.face3d)
    sf.write(files[layout.AUDIO_DIR], clip.audio, layout.AUDIO_RATE, subtype="PCM_16")
    _write_video(files[layout.VIDEO_DIR], clip, video_size)


def write_synthetic_corpus(
    root: str | Path,
    dyads: int | Mapping[str, int] = 4,
    frames_on_disk: int = layout.FRAMES_ON_DISK,
    seed: int = 0,
    video_size: int = 64,
    clips_per_session: int = 4,
) -> SynthSummary:
    """Write a synthetic REACT2024 corpus into the empty (or new) folder `root`.

    `dyads` is the number of split-CSV rows (clip pairs), one int for every split or
    `{split: rows}`; `frames_on_disk` is F+1 (751 like the real clips; readers use the first F).
    Backs `reactdiff synth --out DIR --dyads N --frames F --seed S` (F = frames on disk).
    """
    counts = _dyad_counts(dyads)
    root = Path(root)
    if frames_on_disk < 2:
        raise ValueError(f"frames_on_disk: expected >= 2 (F+1 frames, F used), got {frames_on_disk}")
    if video_size < 16 or video_size % 2:
        raise ValueError(f"video_size: expected an even number >= 16 (H.264 4:2:0), got {video_size}")
    if clips_per_session < 1:
        raise ValueError(f"clips_per_session: expected >= 1, got {clips_per_session}")
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty: synth writes a fresh corpus; choose a new folder or remove it")
    start = time.perf_counter()
    rows: dict[str, list[tuple[str, str]]] = {split: [] for split in counts}
    for speaker, listener in generate_corpus(counts, frames_on_disk, seed, clips_per_session):
        _write_person_clip(root, speaker, video_size)
        _write_person_clip(root, listener, video_size)
        rows[speaker.split].append((speaker.ref.path, listener.ref.path))
    root.mkdir(parents=True, exist_ok=True)
    for split, split_rows in rows.items():
        with (root / f"{split}.csv").open("w", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["", "speaker_path", "listener_path"])
            writer.writerows([i, s, l] for i, (s, l) in enumerate(split_rows))
    seconds = time.perf_counter() - start
    return SynthSummary(
        root, {s: len(r) for s, r in rows.items()}, 2 * sum(map(len, rows.values())), seconds, corpus_fingerprint(root)
    )


def write_recipe_corpus(root: str | Path, sizes: SynthConfig) -> SynthSummary:
    """The corpus a recipe's `synth:` block describes (`reactdiff synth --config`, the demo)."""
    return write_synthetic_corpus(
        root,
        dyads={"train": sizes.dyads, "val": sizes.val_dyads, "test": sizes.test_dyads},
        frames_on_disk=sizes.frames + 1,
        seed=sizes.seed,
        video_size=sizes.video_size,
    )
