"""Model speed and memory at the paper's dims (AU 25088, d_model 1024, latent 128, ws 50, T 20).

Prints: offline generation of α reactions for one clip, online per-window latency (a 50-frame
window lasts 2 s at 25 fps), peak resident memory, and stage-1 / stage-2 training step times.
Random weights and features: speed does not depend on what the model learned.

    .venv/bin/python bench/bench_model.py                 # defaults below
    .venv/bin/python bench/bench_model.py --train-frames 750 --threads 2

Measured figures, with those of earlier rounds and the machines they ran on: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time

import torch

from reactdiff.config import ModelConfig
from reactdiff.data.layout import FPS
from reactdiff.models import MMT, LatentStatsAccumulator, ReactDiff

PAPER = {"au": 25088, "fe": 1408, "va": 64, "afr": 1536, "mfcc": 26}


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def paper_features(batch: int, frames: int) -> dict[str, torch.Tensor]:
    return {name: torch.randn(batch, frames, dim) for name, dim in PAPER.items()}


class Clock:
    """Wall and CPU seconds since the last `lap()`. CPU time is what the figure would be on an idle
    core (with one torch thread); wall time includes waiting for cores other processes hold."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.process_time()
        lap = (wall - self.wall, cpu - self.cpu)
        self.wall, self.cpu = wall, cpu
        return lap


def timed(fn) -> str:
    clock = Clock()
    fn()
    wall, cpu = clock.lap()
    return f"{wall:.2f} s wall, {cpu:.2f} s CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=750, help="clip length for generation")
    parser.add_argument("--alpha", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16, help="training batch size")
    parser.add_argument("--train-frames", type=int, default=150,
                        help="frames per training sample (750 = whole clips; ~10 GB for stage 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 on a shared machine: contending OpenMP threads crawl)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config = ModelConfig()
    ws = config.diffusion.window_size
    print(f"paper dims: streams {PAPER}, d_model {config.mmt.d_model}, latent "
          f"{config.mmt.latent_dim}, ws {ws}, T {config.diffusion.steps}; torch threads {args.threads}")
    mmt = MMT(PAPER, config.mmt)
    model = ReactDiff.from_stage1(mmt, config).eval()
    speaker = paper_features(1, args.frames)
    accumulator = LatentStatsAccumulator(config.mmt.latent_dim)
    with torch.no_grad():
        accumulator.update(mmt.encode(speaker))
    model.set_latent_stats(accumulator.finalize())
    print(f"parameters: MMT {sum(p.numel() for p in mmt.parameters()) / 1e6:.1f} M, "
          f"denoiser {sum(p.numel() for p in model.denoiser.parameters()) / 1e6:.1f} M")

    offline = timed(lambda: model.generate(speaker, alpha=args.alpha, seed=0))
    print(f"offline generate: alpha={args.alpha}, {args.frames} frames, 1 clip: {offline} "
          "(goal <= 10 s)")

    laps = []
    clock = Clock()
    for _ in model.generate_online(speaker, alpha=args.alpha, seed=0):
        laps.append(clock.lap())
    for name, index in (("wall", 0), ("CPU", 1)):
        seconds = [lap[index] for lap in laps]
        print(f"online generate, per-window latency ({name}): first {seconds[0]:.2f} s, median "
              f"{statistics.median(seconds):.2f} s, last {seconds[-1]:.2f} s over {len(laps)} "
              f"windows (a window lasts {ws / FPS:.1f} s)")
    print(f"peak RSS after generation: {peak_rss_gib():.2f} GiB")

    # Stage 1: one warm-up step, then one timed step (ReactDiff froze this MMT: unfreeze it).
    mmt.requires_grad_(True).train()
    optimiser = torch.optim.AdamW(mmt.parameters(), lr=5e-3, weight_decay=5e-4)
    feats = paper_features(args.batch, args.train_frames)
    threedmm = torch.randn(args.batch, args.train_frames, 58)
    emotion = torch.rand(args.batch, args.train_frames, 25)

    def stage1_step() -> None:
        loss, _ = mmt(feats, threedmm, emotion)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()

    stage1_step()
    print(f"stage-1 train step: batch {args.batch} x {args.train_frames} frames: "
          f"{timed(stage1_step)}; peak RSS {peak_rss_gib():.2f} GiB")
    del optimiser

    # Stage 2: the MMT frozen again (the model owns it), the denoiser trains.
    model = ReactDiff.from_stage1(mmt, config).train()
    model.set_latent_stats(accumulator.finalize())
    optimiser = torch.optim.AdamW(model.trainable_parameters(), lr=5e-3, weight_decay=5e-4)
    listener = paper_features(args.batch, args.train_frames)

    def stage2_step() -> None:
        loss, _ = model(feats, listener)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        model.update_ema()

    stage2_step()
    print(f"stage-2 train step: batch {args.batch} x {args.train_frames} frames "
          f"({args.batch * -(-args.train_frames // ws)} windows): {timed(stage2_step)}; "
          f"peak RSS {peak_rss_gib():.2f} GiB")


if __name__ == "__main__":
    main()
