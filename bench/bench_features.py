"""Seconds per 30 s REACT2024 clip for each feature extractor (CPU unless --device says otherwise).

    .venv/bin/python bench/bench_features.py [--threads 1] [--repeats 3] [--base] [--device cpu]

Audio is 30 s of noise-modulated tone at 44.1 kHz; video is 751 frames of 256×256 H.264. Models
are the tiny stand-ins from `tiny_models`; `--base` adds a randomly initialised wav2vec2-base-sized
model (95 M parameters, same cost as the real one) to estimate the paper profile's AFR cost.

Measured figures, with those of earlier rounds and the machines they ran on: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from reactdiff.data.features import FacialFeatures, Wav2Vec2Features, decode_video, mfcc, to_model_rate
from reactdiff.data.layout import AUDIO_RATE, FPS, FRAMES_ON_DISK, VIDEO_SIZE
from reactdiff.data.tiny_models import make_tiny_facial_predictors, make_tiny_wav2vec2


def report(name: str, fn: Callable[[], object], repeats: int) -> None:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    print(f"{name:<28} {statistics.median(times):8.3f}")


def write_video(path: Path) -> None:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = VIDEO_SIZE
        stream.pix_fmt = "yuv420p"
        base = rng.integers(0, 256, (VIDEO_SIZE, VIDEO_SIZE, 3), dtype=np.uint8)
        for i in range(FRAMES_ON_DISK):
            image = np.roll(base, i, axis=1)  # moving texture, so the codec has real work
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", action="store_true", help="also time a wav2vec2-base-sized model")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    t = np.arange(30 * AUDIO_RATE) / AUDIO_RATE
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 0.5 * t))).astype(np.float32)
    frames = FRAMES_ON_DISK
    print(f"threads={args.threads} device={args.device} repeats={args.repeats} (median seconds per clip)")

    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        report("resample 44.1k→16k", lambda: to_model_rate(audio, AUDIO_RATE), args.repeats)
        report("mfcc (incl. resample)", lambda: mfcc(audio, AUDIO_RATE, frames), args.repeats)

        tiny = Wav2Vec2Features(make_tiny_wav2vec2(tmp_path / "w2v_tiny"), device=args.device)
        report(f"wav2vec2 tiny (dim {tiny.dim})", lambda: tiny(audio, AUDIO_RATE, frames), args.repeats)
        if args.base:
            Wav2Vec2Model(Wav2Vec2Config()).save_pretrained(tmp_path / "w2v_base")
            base = Wav2Vec2Features(tmp_path / "w2v_base", device=args.device)
            report(f"wav2vec2 base (dim {base.dim})", lambda: base(audio, AUDIO_RATE, frames), args.repeats)

        video = tmp_path / "clip.mp4"
        write_video(video)
        report("decode 751×256² → 224²", lambda: decode_video(video, frames, 224), args.repeats)
        facial = FacialFeatures(
            make_tiny_facial_predictors(tmp_path / "facial", input_size=224), input_size=224, device=args.device
        )
        report("facial tiny va+au+fe", lambda: facial(video, frames), args.repeats)


if __name__ == "__main__":
    main()
