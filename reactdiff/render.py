"""`reactdiff render`: facial reactions as a video, next to the speaker's real video and audio.

The face is drawn with numpy from the 25 emotion values and the 6 pose values of the 3DMM
coefficients (`draw_face`); nothing else reaches it. It is a deterministic, documented
function, not a face model: a mesh needs the FaceVerse basis, which is not redistributable, so
users who have one plug their own renderer in (`load_renderer`, `reactdiff render --renderer
package.module:function`).

What moves what (AU values are occurrence probabilities in [0, 1]; "up" is up on screen):

| channel | feature |
|---|---|
| AU1 inner brow raiser | inner ends of both brows up |
| AU2 outer brow raiser | outer ends of both brows up |
| AU4 brow lowerer | both brows down, inner ends towards the nose |
| AU6 cheek raiser | pink cheeks appear and rise; eyes narrow a little |
| AU7 lid tightener | eyes narrow |
| AU9 nose wrinkler | wrinkles across the nose bridge |
| AU10 upper lip raiser | upper lip up |
| AU12 lip corner puller | mouth corners up, mouth wider (smile) |
| AU14 dimpler | dimples beside the mouth corners, mouth a little wider |
| AU15 lip corner depressor | mouth corners down |
| AU17 chin raiser | lower lip up, a crease under it |
| AU23 lip tightener | mouth narrower, lips thinner |
| AU24 lip pressor | lips thinner |
| AU25 lips part | lips apart |
| AU26 jaw drop | lower lip and chin down, face longer |
| 3DMM 52 rot_x (pitch, rad) | features up/down on the face (nodding) |
| 3DMM 53 rot_y (yaw, rad) | features left/right, face narrower (turning) |
| 3DMM 54 rot_z (roll, rad) | the whole head rotates in the image plane |
| 3DMM 55, 56 trans_x, trans_y | the head moves right/up |
| 3DMM 57 trans_z | the head grows (towards the camera) |
| valence, arousal | the bar strip under the face: two bars from the centre (right: positive) |
| 8 expression probabilities | the bar strip: one column each, in `layout.EXPRESSION_NAMES` order |

Videos (`write_video`): the speaker's video (scaled to the grid's height) and audio on the left, a
grid of labelled faces on the right (the α reactions, and the real listener when known), 25 fps,
H.264 (yuv420p) + AAC in MP4, so browsers play it. Labels are drawn once per video with
matplotlib; every frame after that is numpy only.
"""

from __future__ import annotations

import importlib
import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import av
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave

from reactdiff.data import corpus, layout
from reactdiff.data.corpus import Clip
from reactdiff.request_checks import DEFAULT_ALPHA

FACE_SIZE = 128  # pixels of one drawn face (the bar strip and label add to its height)
LABEL_HEIGHT = 16
POSE_SLICE = slice(layout.FACE3D_ROT.start, layout.FACE3D_TRANS.stop)  # the last 6 of the 58
_AU = {name: i for i, name in enumerate(layout.AU_NAMES)}

# How far pose moves the drawing per unit (the canvas spans [-1, 1]; the head ±0.7 across).
FEATURE_SHIFT_PER_RAD = 0.6  # pitch/yaw slide the features over the face (head units)
TRANSLATION_GAIN = 2.0  # trans_x/y move the head (canvas units)
MAX_SHIFT = 0.35  # no pose moves anything further, so the face stays in its tile
HEAD_SCALE = 0.72  # the upright head's half-height, in canvas half-widths
DEPTH_GAIN = 1.0  # trans_z scales the head by exp(DEPTH_GAIN · trans_z)

BACKGROUND = np.array([38, 40, 48], np.uint8)
SKIN = np.array([232, 194, 164], np.float32)
DARK = np.array([62, 42, 32], np.float32)
EYE_WHITE = np.array([250, 250, 250], np.float32)
LIPS = np.array([186, 72, 82], np.float32)
MOUTH = np.array([72, 20, 30], np.float32)
CHEEK = np.array([240, 120, 120], np.float32)
CREASE = np.array([160, 110, 90], np.float32)
POSITIVE, NEGATIVE = np.array([90, 200, 110], np.uint8), np.array([220, 80, 70], np.uint8)
EXPRESSION_COLOURS = np.array(
    [
        [200, 200, 200],
        [250, 210, 60],
        [80, 130, 230],
        [250, 150, 40],
        [170, 90, 200],
        [110, 170, 60],
        [230, 60, 50],
        [140, 110, 90],
    ],
    np.uint8,
)

# Renderer: (emotion (25,), 3DMM (58,), size) → (size, size, 3) uint8 RGB.
Renderer = Callable[[np.ndarray, np.ndarray, int], np.ndarray]


# --------------------------------------------------------------------------------------------
# The face
# --------------------------------------------------------------------------------------------


def _clamp(value: float, low: float, high: float) -> float:
    return min(max(value, low), high)  # np.clip costs microseconds per scalar, ~30 per face


@lru_cache(maxsize=8)
def _axis(size: int) -> np.ndarray:
    """Pixel centres along one side, in face units: [-1, 1] across the canvas."""
    return ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2 - 1


class _Upright:
    """The face drawn upright and centred; pose rolls, shifts and scales it afterwards (`_warp`).

    Upright, head coordinates (x right, y down; canvas units / HEAD_SCALE) depend on
    the column or the row only, and so do the feature coordinates, into which pitch and yaw slide
    the features. Every feature is painted inside its own window of rows and columns, computed by
    broadcasting a column vector against a row vector: a few thousand pixels per feature."""

    def __init__(self, size: int, pitch: float, yaw: float):
        self.x = _axis(size) / HEAD_SCALE  # per column
        self.y = self.x  # per row
        squeeze = max(math.cos(yaw), 0.5)
        self.squeeze = squeeze
        self.fx = (self.x - _clamp(FEATURE_SHIFT_PER_RAD * math.sin(yaw), -MAX_SHIFT, MAX_SHIFT)) / squeeze
        self.fy = self.y - _clamp(FEATURE_SHIFT_PER_RAD * math.sin(pitch), -MAX_SHIFT, MAX_SHIFT)
        self.padded = np.empty((size + 2, size + 2, 3), np.float32)
        self.padded[:] = BACKGROUND
        self.image = self.padded[1:-1, 1:-1]

    def window(self, half_width: float, top: float, bottom: float):
        """(image view, |fx| (1, w), fy (h, 1)) of the pixels whose feature coordinates lie in
        |fx| <= half_width and top <= fy <= bottom (both sides of the face)."""
        c0, c1 = np.searchsorted(self.fx, (-half_width, half_width))
        r0, r1 = np.searchsorted(self.fy, (top, bottom))
        return self.image[r0:r1, c0:c1], np.abs(self.fx[None, c0:c1]), self.fy[r0:r1, None]


def _segment(
    x: np.ndarray, y: np.ndarray, start: tuple[float, float], stop: tuple[float, float], half_width: float
) -> np.ndarray:
    """Pixels within `half_width` of the segment start→stop (a thick line with round ends)."""
    dx, dy = stop[0] - start[0], stop[1] - start[1]
    t = np.clip(((x - start[0]) * dx + (y - start[1]) * dy) / (dx * dx + dy * dy), 0, 1)
    return (x - start[0] - t * dx) ** 2 + (y - start[1] - t * dy) ** 2 < half_width**2


def _ellipse(x: np.ndarray, y: np.ndarray, cx: float, cy: float, rx: float, ry: float) -> np.ndarray:
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1


def _paint(image: np.ndarray, mask: np.ndarray, colour: np.ndarray, opacity: float = 1.0) -> None:
    if opacity >= 1:
        image[mask] = colour
    elif opacity > 0:
        image[mask] += opacity * (colour - image[mask])


@lru_cache(maxsize=8)
def _canvas_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    axis = _axis(size)
    return np.broadcast_to(axis[None, :], (size, size)), np.broadcast_to(axis[:, None], (size, size))


def _warp(padded: np.ndarray, roll: float, shift: tuple[float, float], scale: float) -> np.ndarray:
    """The upright face (`padded`: a one-pixel background border around it) rolled by `roll`
    (rad), scaled and moved by `shift` (canvas units), by nearest-neighbour lookup of every
    canvas pixel; pixels that fall outside the upright face take the border's background."""
    size = len(padded) - 2
    u, v = _canvas_grid(size)
    cos_r, sin_r, half = math.cos(roll), math.sin(roll), size / 2
    # Upright pixel = half · R(-roll) · (canvas - shift) / scale + half, plus one for the border.
    a, b = half * cos_r / scale, half * sin_r / scale
    columns = a * u + b * v + (half + 1 - a * shift[0] - b * shift[1])
    rows = a * v - b * u + (half + 1 + b * shift[0] - a * shift[1])
    np.clip(columns, 0, size + 1, out=columns)
    np.clip(rows, 0, size + 1, out=rows)
    index = rows.astype(np.int32) * (size + 2) + columns.astype(np.int32)
    return padded.reshape(-1, 3).take(index, axis=0)


def draw_face(emotion: np.ndarray, pose: np.ndarray, size: int = FACE_SIZE) -> np.ndarray:
    """(size, size, 3) uint8 RGB face from emotion (25,) and pose (6,) = 3DMM[52:58]; see the
    module doc for which channel moves which feature. Valence, arousal and the expression
    probabilities are not drawn here (see `draw_bars`)."""
    emotion, pose = np.asarray(emotion, np.float64), np.asarray(pose, np.float64)
    if emotion.shape != (layout.EMOTION_DIM,) or pose.shape != (6,):
        raise ValueError(
            f"draw_face: expected emotion ({layout.EMOTION_DIM},) and pose (6,) "
            f"(3DMM coefficients 52-57), got {emotion.shape} and {pose.shape}"
        )
    au = {name: _clamp(float(emotion[i]), 0.0, 1.0) for name, i in _AU.items()}
    pitch, yaw, roll, tx, ty, tz = (float(p) for p in pose)
    face = _Upright(size, pitch, yaw)
    jaw = 0.12 * au["AU26"]

    # Head: an ellipse, narrower when turned, longer below with the jaw drop.
    y = face.y[:, None]
    head = (face.x[None, :] / (0.98 * face.squeeze**0.5)) ** 2 + (y / np.where(y > 0, 1.2 + jaw, 1.2)) ** 2 < 1
    _paint(face.image, head, SKIN)

    image, x, y = face.window(0.55, 0.0, 0.3)
    _paint(image, _ellipse(x, y, 0.36, 0.14 - 0.05 * au["AU6"], 0.15, 0.09), CHEEK, 0.8 * au["AU6"])

    # Nose, and AU9's wrinkles across its bridge.
    image, x, y = face.window(0.15, -0.16, 0.26)
    _paint(image, _segment(x, y, (0.0, -0.05), (0.0, 0.2), 0.022), DARK)
    _paint(image, _segment(x, y, (0.0, 0.22), (0.08, 0.2), 0.022), DARK)
    for row in (-0.12, -0.05):
        _paint(image, _segment(x, y, (0.02, row), (0.1, row + 0.02), 0.015), CREASE, au["AU9"])

    # Eyes: open height shrinks with AU7 (and a little with AU6).
    opening = max(0.15, 1 - 0.6 * au["AU7"] - 0.3 * au["AU6"])
    image, x, y = face.window(0.5, -0.22, -0.02)
    eye = _ellipse(x, y, 0.33, -0.12, 0.15, 0.09 * opening)
    _paint(image, eye, EYE_WHITE)
    _paint(image, eye & _ellipse(x, y, 0.33, -0.12, 0.055, 0.055), DARK)

    # Brows: a thick segment from the inner to the outer end.
    inner = (0.12 - 0.05 * au["AU4"], -0.34 - 0.14 * au["AU1"] + 0.09 * au["AU4"])
    outer = (0.48, -0.36 - 0.14 * au["AU2"] + 0.05 * au["AU4"])
    image, x, y = face.window(0.53, -0.55, -0.2)
    _paint(image, _segment(x, y, inner, outer, 0.04), DARK)

    # Mouth: a centre line whose corners lift (AU12) or drop (AU15); the lips open around it.
    width = 0.3 * (1 + 0.3 * au["AU12"] + 0.12 * au["AU14"] - 0.25 * au["AU23"] - 0.08 * au["AU24"])
    centre = 0.48
    lift = 0.12 * (au["AU12"] - au["AU15"])
    upper_gap = 0.006 + 0.05 * au["AU25"] + 0.05 * au["AU10"]
    lower_gap = max(0.006 + 0.05 * au["AU25"] + jaw + 0.04 * au["AU26"] - 0.05 * au["AU17"], 0.006)
    image, x, y = face.window(width + 0.1, centre - 0.25, centre + lower_gap + 0.35)
    q = np.minimum((x / width) ** 2, 1)
    line = centre - lift * q
    thickness = 0.07 * (1 - 0.5 * au["AU24"]) * (1 - 0.35 * au["AU23"]) * (1 - 0.6 * q)
    inside = x < width
    upper_inner, lower_inner = line - upper_gap * (1 - q), line + lower_gap * (1 - q)
    _paint(image, inside & (y > upper_inner - thickness) & (y < lower_inner + 1.2 * thickness), LIPS)
    _paint(image, inside & (y > upper_inner) & (y < lower_inner), MOUTH)
    _paint(image, _ellipse(x, y, width + 0.06, centre - lift, 0.025, 0.035), CREASE, au["AU14"])
    chin = centre + lower_gap + 0.16
    _paint(image, _segment(x, y, (0.0, chin), (0.12, chin - 0.02), 0.02), CREASE, au["AU17"])

    shift = (
        _clamp(TRANSLATION_GAIN * tx, -MAX_SHIFT, MAX_SHIFT),
        _clamp(-TRANSLATION_GAIN * ty, -MAX_SHIFT, MAX_SHIFT),
    )  # 3DMM y points up, image rows down
    scale = math.exp(_clamp(DEPTH_GAIN * tz, -0.5, 0.5))
    return _warp(face.padded.astype(np.uint8), roll, shift, scale)


def draw_bars(emotion: np.ndarray, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 strip: valence and arousal as bars from the centre (right of
    centre: positive; green/red), then one column per expression probability."""
    strip = np.empty((height, width, 3), np.uint8)
    strip[:] = BACKGROUND
    row = max(2, height // 5)
    mid = width // 2
    for k, value in enumerate(np.clip(emotion[layout.VA_SLICE], -1, 1)):
        top = 1 + k * (row + 1)
        reach = int(round(float(value) * (mid - 2)))
        lo, hi = (mid, mid + reach) if reach >= 0 else (mid + reach, mid)
        strip[top : top + row, lo : hi + 1] = POSITIVE if reach >= 0 else NEGATIVE
        strip[top : top + row, mid] = 255  # the zero mark
    base, room = height - 1, height - 2 * (row + 1) - 2
    column = width // len(layout.EXPRESSION_NAMES)
    for k, value in enumerate(np.clip(emotion[layout.EXPR_SLICE], 0, 1)):
        tall = int(round(float(value) * room))
        strip[base - tall : base, k * column + 1 : (k + 1) * column - 1] = EXPRESSION_COLOURS[k]
    return strip


def drawn_face(emotion: np.ndarray, threedmm: np.ndarray, size: int) -> np.ndarray:
    """The built-in renderer: `draw_face` with the pose coefficients of a 3DMM vector."""
    return draw_face(emotion, np.asarray(threedmm)[POSE_SLICE], size)


def load_renderer(spec: str) -> Renderer:
    """`drawn` (the built-in drawing) or `package.module:function`, a function with the signature
    of `drawn_face`: (emotion (25,), 3DMM (58,), size) → (size, size, 3) uint8. The hook for a
    FaceVerse mesh renderer: the basis is not redistributable, so it is not part of reactdiff."""
    if spec == "drawn":
        return drawn_face
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"renderer '{spec}': expected 'drawn' or 'package.module:function'")
    try:
        renderer = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"renderer '{spec}': cannot import it ({exc}); install the package that provides it into this environment"
        ) from None
    if not callable(renderer):
        raise ValueError(f"renderer '{spec}' is not a function")
    return renderer


# --------------------------------------------------------------------------------------------
# Videos
# --------------------------------------------------------------------------------------------


@dataclass
class Face:
    """One labelled face of the grid: emotion (T, 25) and 3DMM (T, 58) over the clip."""

    label: str
    emotion: np.ndarray
    threedmm: np.ndarray


def _text(text: str, width: int, height: int, fontsize: float = 8.0) -> np.ndarray:
    """A label as (height, width, 3) uint8, drawn once with matplotlib's Agg canvas."""
    dpi = 100
    figure = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor=BACKGROUND / 255)
    canvas = FigureCanvasAgg(figure)
    figure.text(0.5, 0.5, text, ha="center", va="center", color="white", fontsize=fontsize)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[:height, :width, :3].copy()


def _even(n: int) -> int:
    return n + n % 2  # yuv420p needs even frame sizes


class _Layout:
    """Where everything goes: the speaker panel (square, grid height) left, the face grid right."""

    def __init__(self, faces: int, face_size: int):
        self.face_size = face_size
        self.bar_height = max(12, face_size // 4)
        self.tile_width, self.tile_height = face_size, LABEL_HEIGHT + face_size + self.bar_height
        self.columns = math.ceil(math.sqrt(faces))
        self.rows = math.ceil(faces / self.columns)
        self.grid_height = self.rows * self.tile_height
        self.panel = self.grid_height - LABEL_HEIGHT  # the speaker video, below its label
        self.left = self.panel + 4
        self.width = _even(self.left + self.columns * self.tile_width)
        self.height = _even(self.grid_height)

    def tile(self, k: int) -> tuple[int, int]:
        row, column = divmod(k, self.columns)
        return row * self.tile_height, self.left + column * self.tile_width


def _speaker_frames(path: Path, frames: int, size: int) -> Iterator[np.ndarray]:
    """The speaker video's first `frames` frames, scaled to (size, size) by FFmpeg while
    converting to RGB (the last frame repeats if the file is shorter)."""
    last = np.zeros((size, size, 3), np.uint8)
    produced = 0
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            if produced == frames:
                return
            last = frame.to_ndarray(width=size, height=size, format="rgb24", interpolation="FAST_BILINEAR")
            produced += 1
            yield last
    for _ in range(frames - produced):
        yield last


def compose_frames(
    speaker: Clip,
    faces: Sequence[Face],
    face_size: int = FACE_SIZE,
    renderer: Renderer = drawn_face,
    title: str = "speaker",
) -> Iterator[np.ndarray]:
    """The video's frames, (H, W, 3) uint8 (one buffer, redrawn in place for every frame): the
    speaker's video beside a grid of `faces`, as long as the shorter of the clip and the faces."""
    if not faces:
        raise ValueError("compose_frames: expected at least one face to draw")
    for face in faces:
        if face.emotion.shape[1:] != (layout.EMOTION_DIM,) or face.threedmm.shape[1:] != (layout.FACE3D_DIM,):
            raise ValueError(
                f"compose_frames: face '{face.label}': expected emotion (T, {layout.EMOTION_DIM}) "
                f"and 3DMM (T, {layout.FACE3D_DIM}), got {face.emotion.shape} and {face.threedmm.shape}"
            )
    frames = min(speaker.frames, *(len(f.emotion) for f in faces))
    grid = _Layout(len(faces), face_size)
    canvas = np.zeros((grid.height, grid.width, 3), np.uint8)
    canvas[:] = BACKGROUND
    canvas[:LABEL_HEIGHT, : grid.panel] = _text(title, grid.panel, LABEL_HEIGHT)
    for k, face in enumerate(faces):
        top, left = grid.tile(k)
        canvas[top : top + LABEL_HEIGHT, left : left + grid.tile_width] = _text(
            face.label, grid.tile_width, LABEL_HEIGHT
        )
    for t, speaker_frame in enumerate(_speaker_frames(speaker.video_path, frames, grid.panel)):
        canvas[LABEL_HEIGHT : LABEL_HEIGHT + grid.panel, : grid.panel] = speaker_frame
        for k, face in enumerate(faces):
            top, left = grid.tile(k)
            top += LABEL_HEIGHT
            canvas[top : top + face_size, left : left + face_size] = renderer(
                face.emotion[t], face.threedmm[t], face_size
            )
            canvas[top + face_size : top + face_size + grid.bar_height, left : left + face_size] = draw_bars(
                face.emotion[t], face_size, grid.bar_height
            )
        yield canvas


def write_video(
    path: str | Path,
    speaker: Clip,
    faces: Sequence[Face],
    face_size: int = FACE_SIZE,
    renderer: Renderer = drawn_face,
    title: str = "speaker",
) -> Path:
    """An MP4 of `compose_frames` with the speaker's audio (`speaker` from the corpus reader);
    returns the path."""
    frames = compose_frames(speaker, faces, face_size, renderer, title)
    first = next(frames)
    count = min(speaker.frames, *(len(f.emotion) for f in faces))
    audio, rate = speaker.read_audio()
    audio = audio[: round(count * rate / layout.FPS)]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # faststart: the index goes before the media, so a browser starts playing before the end arrives.
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        video = container.add_stream("libx264", rate=layout.FPS, options={"preset": "superfast", "crf": "23"})
        video.height, video.width = first.shape[:2]
        video.pix_fmt = "yuv420p"
        sound = container.add_stream("aac", rate=rate)
        sound.layout = "mono"
        container.mux(video.encode(av.VideoFrame.from_ndarray(first, format="rgb24")))
        for canvas in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(canvas, format="rgb24")))
        container.mux(video.encode())
        samples = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(audio, np.float32)[None], format="fltp", layout="mono"
        )
        samples.sample_rate, samples.pts = rate, 0
        container.mux(sound.encode(samples))
        container.mux(sound.encode())
    return path


def write_still(
    path: str | Path,
    speaker: Clip,
    faces: Sequence[Face],
    frame: int,
    face_size: int = FACE_SIZE,
    renderer: Renderer = drawn_face,
    title: str = "speaker",
) -> Path:
    """Frame `frame` of the video as a PNG (the README's picture)."""
    for t, canvas in enumerate(compose_frames(speaker, faces, face_size, renderer, title)):
        if t == frame:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            imsave(path, canvas)
            return path
    raise ValueError(f"still frame {frame}: the video has only {t + 1} frames")


# --------------------------------------------------------------------------------------------
# Sources: a folder written by `generate`, or a model and a speaker clip
# --------------------------------------------------------------------------------------------


def _corpus_split(summary: dict, corpus_root: Path | None, source: Path) -> tuple[Path, str]:
    """Where the speakers of a `generate` run live: a corpus clip names its own root and split; a
    store split names only the split, and its corpus must be given."""
    speaker = str(summary["speaker"])
    store, _, split = speaker.rpartition(":")
    if store and (Path(store) / "manifest.json").is_file():
        if corpus_root is None:
            raise ValueError(
                f"{source / layout.SUMMARY_FILE}: speaker '{speaker}' is a feature-store split; "
                "its real video and audio are in the corpus it was prepared from: pass --corpus ROOT"
            )
        return Path(corpus_root), split
    root, split, _ = corpus.locate_clip(speaker)
    return (Path(corpus_root) if corpus_root else root), split


def partner(root: Path, split: str, clip: str) -> str | None:
    """The other person of `clip`'s dyad row in the split CSV (its real listener), if listed."""
    for pair in corpus.read_split(root, split):
        if pair.speaker.path == clip:
            return pair.listener.path
        if pair.listener.path == clip:
            return pair.speaker.path
    return None


def read_generated(folder: str | Path, clip: str | None = None) -> tuple[dict, str, list[Face]]:
    """(generation.json, clip, one Face per reaction) of a `generate` folder; `clip` defaults to
    its first. Emotion comes from `emotion.npy` (raw AU probabilities) where `generate` wrote it,
    else from the per-clip CSVs (AU occurrences); 3DMM from the per-reaction `.npy` files."""
    folder = Path(folder)
    summary_path = folder / layout.SUMMARY_FILE
    if not summary_path.is_file():
        raise FileNotFoundError(f"{folder}: no generation.json; expected a folder written by `reactdiff generate`")
    summary = json.loads(summary_path.read_text())
    clips = list(summary["clips"])
    clip = clip or clips[0]
    if clip not in clips:
        raise ValueError(
            f"{summary_path}: clip '{clip}' was not generated (it has: {', '.join(clips[:5])}"
            f"{', ...' if len(clips) > 5 else ''})"
        )
    reactions = folder / layout.REACTIONS_DIR / clip
    frames, alpha = int(summary["frames"]), int(summary["alpha"])
    if (folder / layout.EMOTION_FILE).is_file():
        emotion = np.load(folder / layout.EMOTION_FILE, mmap_mode="r")[clips.index(clip)]
    else:
        emotion = np.stack([corpus.read_emotion(reactions / f"{k}.csv") for k in range(alpha)])
    faces = [
        Face(f"reaction {k}", np.asarray(emotion[k], np.float32), corpus.read_face3d(reactions / f"{k}.npy", frames))
        for k in range(alpha)
    ]
    return summary, clip, faces


def render(
    source: str | Path,
    out: str | Path,
    speaker: str | Path | None = None,
    clip: str | None = None,
    corpus_root: str | Path | None = None,
    alpha: int = DEFAULT_ALPHA,
    seed: int | None = 0,
    tracking_uri: str | None = None,
    truth: bool = True,
    face_size: int = FACE_SIZE,
    renderer: str = "drawn",
    still: int | None = None,
) -> Path:
    """`reactdiff render`: an MP4 of a speaker and the listener reactions to it.

    `source` is a folder written by `generate` (its `clip`, default the first), or a model
    (checkpoint or MLflow URI) that generates `alpha` reactions to `speaker`, a corpus clip file,
    first. The real listener (the speaker's partner in the split CSV) is one more face unless
    `truth` is off. With `still`, that frame is written as a PNG instead."""
    source_path = Path(str(source))
    if not (source_path / layout.SUMMARY_FILE).is_file():
        if speaker is None:
            raise ValueError(
                f"'{source}' is not a folder written by `reactdiff generate`, so it is taken as a "
                "model, which needs --speaker <corpus clip file>, e.g. "
                "<root>/test/Audio_files/NoXI/<session>/Expert_video/1.wav"
            )
        from reactdiff.generate import generate_to_dir

        folder = Path(tempfile.mkdtemp(prefix="reactdiff-render-"))
        try:
            generate_to_dir(source, speaker, folder, alpha=alpha, seed=seed, tracking_uri=tracking_uri)
            return render(
                folder,
                out,
                clip=clip,
                corpus_root=corpus_root,
                truth=truth,
                face_size=face_size,
                renderer=renderer,
                still=still,
            )
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    summary, clip, faces = read_generated(source_path, clip)
    root, split = _corpus_split(summary, Path(corpus_root) if corpus_root else None, source_path)
    speaker_clip = corpus.load_clip(root, split, clip, int(summary["frames"]))
    listener = partner(root, split, clip) if truth else None
    if listener is not None:
        real = corpus.load_clip(root, split, listener, int(summary["frames"]))
        faces.append(Face("real listener", real.emotion, real.face3d))
    if still is not None:
        return write_still(out, speaker_clip, faces, still, face_size, load_renderer(renderer), f"speaker {clip}")
    return write_video(out, speaker_clip, faces, face_size, load_renderer(renderer), title=f"speaker {clip}")
