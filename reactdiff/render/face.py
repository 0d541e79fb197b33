"""The drawn face, pure numpy: the layer under the video (video.py) and `reactdiff render`.

The face is drawn from the 25 emotion values and the 6 pose values of the 3DMM
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
"""

from __future__ import annotations

import math
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from reactdiff.data.layout import (
    AU_NAMES,
    EMOTION_DIM,
    EXPR_SLICE,
    EXPRESSION_NAMES,
    FACE3D_ROT,
    FACE3D_TRANS,
    VA_SLICE,
)

FACE_SIZE = 128  # pixels of one drawn face (the bar strip and label add to its height)
POSE_SLICE = slice(FACE3D_ROT.start, FACE3D_TRANS.stop)  # the last 6 of the 58
_AU = {name: i for i, name in enumerate(AU_NAMES)}

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


@dataclass
class Face:
    """One labelled face of a video's grid: emotion (T, 25) and 3DMM (T, 58) over the clip."""

    label: str
    emotion: np.ndarray
    threedmm: np.ndarray


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
    if emotion.shape != (EMOTION_DIM,) or pose.shape != (6,):
        raise ValueError(
            f"draw_face: expected emotion ({EMOTION_DIM},) and pose (6,) "
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
    for k, value in enumerate(np.clip(emotion[VA_SLICE], -1, 1)):
        top = 1 + k * (row + 1)
        reach = int(round(float(value) * (mid - 2)))
        lo, hi = (mid, mid + reach) if reach >= 0 else (mid + reach, mid)
        strip[top : top + row, lo : hi + 1] = POSITIVE if reach >= 0 else NEGATIVE
        strip[top : top + row, mid] = 255  # the zero mark
    base, room = height - 1, height - 2 * (row + 1) - 2
    column = width // len(EXPRESSION_NAMES)
    for k, value in enumerate(np.clip(emotion[EXPR_SLICE], 0, 1)):
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
    try:
        renderer = pkgutil.resolve_name(spec)
    except ValueError:
        raise ValueError(f"renderer '{spec}': expected 'drawn' or 'package.module:function'") from None
    except (ImportError, AttributeError) as exc:
        raise ValueError(
            f"renderer '{spec}': cannot import it ({exc}); install the package that provides it into this environment"
        ) from None
    if not callable(renderer):
        raise ValueError(f"renderer '{spec}' is not a function")
    return renderer
