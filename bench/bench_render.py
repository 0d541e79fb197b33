"""Render speed and `score` wall time.

    .venv/bin/python bench/bench_render.py                       # both, at the default sizes
    .venv/bin/python bench/bench_render.py --skip-score --alpha 3 --face-size 96   # an evaluate video
    .venv/bin/python bench/bench_render.py --skip-render --n 200

Render: `draw_face` alone (faces/s at 128 and 160 px), then a whole video with `write_video`: a
synthetic 256 px speaker clip of `--frames` frames (decoded, scaled), α = `--alpha` reactions and
the real listener drawn per frame, H.264 + AAC encoded; printed as video frames/s.

Score: `load_predictions` (read from `.npy`, every value checked) and `score` (the metrics, the
table and the plots) at REACT2024 test size (N 1614, α 10, T 750, ~20 appropriate reactions per
sample), on bench_metrics.py's emotion-like data.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from bench_metrics import emotion_like_eval_set

from reactdiff.data import corpus, layout
from reactdiff.data.synth import write_synthetic_corpus
from reactdiff.evaluate.score import GroundTruth, load_predictions, score
from reactdiff.render.face import Face, draw_face
from reactdiff.render.video import write_video


def timed(fn) -> tuple[object, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def bench_render(frames: int, alpha: int, face_size: int, workdir: Path) -> None:
    rng = np.random.default_rng(0)
    emotion = rng.random((500, layout.EMOTION_DIM))
    pose = rng.normal(0, 0.1, (500, 6))
    for size in (128, 160):
        _, wall, cpu = timed(lambda size=size: [draw_face(e, p, size) for e, p in zip(emotion, pose, strict=True)])
        print(f"draw_face {size} px: {len(emotion) / wall:7.0f} faces/s wall, {len(emotion) / cpu:7.0f} per CPU-s")

    root = workdir / "corpus"
    write_synthetic_corpus(
        root,
        dyads={"train": 0, "val": 0, "test": 1},
        frames_on_disk=frames + 1,
        seed=0,
        video_size=256,
        clips_per_session=1,
    )
    pair = corpus.read_split(root, "test")[0]
    speaker, listener = (corpus.load_clip(root, "test", ref) for ref in (pair.speaker, pair.listener))
    faces = [
        Face(
            f"reaction {k}",
            np.clip(listener.emotion + rng.normal(0, 0.2, listener.emotion.shape), 0, 1),
            listener.face3d + rng.normal(0, 0.05, listener.face3d.shape).astype(np.float32),
        )
        for k in range(alpha)
    ] + [Face("real listener", listener.emotion, listener.face3d)]
    path, wall, cpu = timed(lambda: write_video(workdir / "video.mp4", speaker, faces, face_size))
    print(
        f"write_video α={alpha} + real listener, {face_size} px faces, {frames} frames: {wall:.1f} s wall = {frames / wall:.1f} "
        f"frames/s ({frames / cpu:.1f} per CPU-s, {len(faces) * frames / wall:.0f} faces/s), "
        f"{path.stat().st_size / 1e6:.1f} MB"
    )


def bench_score(n: int, alpha: int, frames: int, workdir: Path) -> None:
    preds, listener, speaker, appropriate = emotion_like_eval_set(n, alpha, frames, 20, 0.5, 0)
    path = workdir / "emotion.npy"
    np.save(path, preds)
    del preds
    truth = GroundTruth([f"clip{i}" for i in range(n)], listener, speaker, appropriate, "bench")
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    predictions, load_wall, _ = timed(lambda: load_predictions(path, truth))
    (rows, _, _), score_wall, _ = timed(lambda: score(predictions, truth, workdir / "score"))
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    print(
        f"score N={n} α={alpha} T={frames}: {wall:.1f} s wall ({cpu:.1f} CPU-s): load and check "
        f"{load_wall:.1f} s, metrics + table + plots {score_wall:.1f} s; FRDist {rows['predictions']['FRDist']:.3f} "
        f"(load avg {os.getloadavg()[0]:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--frames", type=int, default=750, help="video and prediction frames")
    parser.add_argument("--alpha", type=int, default=10)
    parser.add_argument("--face-size", type=int, default=128, help="video faces (evaluate's videos: 96, α 3)")
    parser.add_argument("--n", type=int, default=1614, help="samples scored (REACT2024 test: 1614)")
    parser.add_argument("--skip-render", action="store_true")
    parser.add_argument("--skip-score", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-render-") as workdir:
        if not args.skip_render:
            bench_render(args.frames, args.alpha, args.face_size, Path(workdir))
        if not args.skip_score:
            bench_score(args.n, args.alpha, args.frames, Path(workdir))


if __name__ == "__main__":
    main()
