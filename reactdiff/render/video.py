"""Videos of drawn faces, encoded with PyAV: the layer between the face (face.py) and the command.

Videos (`write_video`): the speaker's video (scaled to the grid's height) and audio on the left, a
grid of labelled faces on the right (the α reactions, and the real listener when known), 25 fps,
H.264 (yuv420p) + AAC in MP4, so browsers play it. Labels are drawn once per video with
matplotlib; every frame after that is numpy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import av
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.image import imsave

from reactdiff.data import layout
from reactdiff.data.corpus import Clip
from reactdiff.render.face import BACKGROUND, FACE_SIZE, Face, Renderer, draw_bars, drawn_face

LABEL_HEIGHT = 16


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
    """Frame `frame` of the video as a PNG (the picture in docs/usage.md)."""
    for t, canvas in enumerate(compose_frames(speaker, faces, face_size, renderer, title)):
        if t == frame:
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            imsave(path, canvas)
            return path
    raise ValueError(f"still frame {frame}: the video has only {t + 1} frames")
