"""Model speed and memory at the paper's dims (AU 25088, d_model 1024, latent 128, ws 50, T 20).

Prints: offline generation of α reactions for one clip in fp32, with the denoiser and with the
denoiser and decoder in bf16 (and how far those outputs are from fp32), online per-window latency
of an `OnlineStream` (a 50-frame window lasts 2 s at 25 fps) at windows 1, 2 and 15, peak resident
memory, and stage-1 / stage-2 training step times. Random weights and features: speed does not
depend on what the model learned.
`--dims demo` measures the demo's model (configs/demo.yaml) on the lite streams instead.

    .venv/bin/python bench/bench_model.py                 # defaults below
    .venv/bin/python bench/bench_model.py --threads 2 --generation-only
    .venv/bin/python bench/bench_model.py --threads 2 --generation-only --dims demo
    .venv/bin/python bench/bench_model.py --train-frames 750 --threads 2

Measured figures, with those of earlier rounds and the machines they ran on: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

import torch

from reactdiff.config import ModelConfig, load_config
from reactdiff.data.layout import FPS
from reactdiff.models import MMT, LatentStatsAccumulator, ReactDiff

PAPER = {"au": 25088, "fe": 1408, "va": 64, "afr": 1536, "mfcc": 26}
LITE = {"emotion": 25, "3dmm": 58, "mfcc": 26}
DEMO_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def paper_features(batch: int, frames: int, streams: dict[str, int] = PAPER) -> dict[str, torch.Tensor]:
    return {name: torch.randn(batch, frames, dim) for name, dim in streams.items()}


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
    parser.add_argument(
        "--train-frames",
        type=int,
        default=150,
        help="frames per training sample (750 = whole clips; ~10 GB for stage 1)",
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 on a shared machine: contending OpenMP threads crawl)"
    )
    parser.add_argument(
        "--dims",
        choices=["paper", "demo"],
        default="paper",
        help="paper: reactdiff/config.py's defaults on the paper streams; demo: "
        "configs/demo.yaml's model on the lite streams",
    )
    parser.add_argument("--generation-only", action="store_true", help="skip the training steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    config, streams = (ModelConfig(), PAPER) if args.dims == "paper" else (load_config(DEMO_RECIPE).model, LITE)
    ws = config.diffusion.window_size
    print(
        f"{args.dims} dims: streams {streams}, d_model {config.mmt.d_model}, latent "
        f"{config.mmt.latent_dim}, ws {ws}, T {config.diffusion.steps}, guidance "
        f"{config.diffusion.guidance_scale}; torch threads {args.threads}"
    )
    mmt = MMT(streams, config.mmt)
    model = ReactDiff.from_stage1(mmt, config).eval()
    speaker = paper_features(1, args.frames, streams)
    accumulator = LatentStatsAccumulator(config.mmt.latent_dim)
    with torch.no_grad():
        accumulator.update(mmt.encode(speaker))
    model.set_latent_stats(accumulator.finalize())
    print(
        f"parameters: MMT {sum(p.numel() for p in mmt.parameters()) / 1e6:.1f} M, "
        f"denoiser {sum(p.numel() for p in model.denoiser.parameters()) / 1e6:.1f} M"
    )

    outputs = {}
    variants = {
        "fp32": {},
        "denoiser in bf16": {"bf16_sampling": True},
        "denoiser and decoder in bf16": {"bf16_sampling": True, "bf16_decoding": True},
    }
    for variant, options in variants.items():

        def generate(variant: str = variant, options: dict = options) -> None:
            (outputs[variant],) = model.generate_in_styles(speaker, [None], alpha=args.alpha, seed=0, **options)

        print(
            f"offline generate, {variant}: alpha={args.alpha}, {args.frames} frames, 1 clip: "
            f"{timed(generate)} (goal <= 8 s wall on 2 threads)"
        )
        if variant != "fp32":
            differences = ", ".join(
                f"{key} {(outputs[variant][key] - outputs['fp32'][key]).abs().max():.2g} / "
                f"{(outputs[variant][key] - outputs['fp32'][key]).abs().mean():.2g}"
                for key in ("3dmm", "emotion", "latent")
            )
            print(f"  against fp32, max / mean abs difference: {differences}")

    laps = []
    clock = Clock()
    for _ in model.generate_online(speaker, alpha=args.alpha, seed=0):
        laps.append(clock.lap())
    shown = sorted({1, 2, len(laps)})  # window 1 has no speaker frames to encode
    for name, index in (("wall", 0), ("CPU", 1)):
        seconds = ", ".join(f"window {w} {laps[w - 1][index]:.2f} s" for w in shown)
        print(
            f"online generate, per-window latency ({name}): {seconds}; max "
            f"{max(lap[index] for lap in laps):.2f} s over {len(laps)} windows (a window lasts {ws / FPS:.1f} s)"
        )
    print(f"peak RSS after generation: {peak_rss_gib():.2f} GiB")
    if args.generation_only:
        return

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
    print(
        f"stage-1 train step: batch {args.batch} x {args.train_frames} frames: "
        f"{timed(stage1_step)}; peak RSS {peak_rss_gib():.2f} GiB"
    )
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
    print(
        f"stage-2 train step: batch {args.batch} x {args.train_frames} frames "
        f"({args.batch * -(-args.train_frames // ws)} windows): {timed(stage2_step)}; "
        f"peak RSS {peak_rss_gib():.2f} GiB"
    )


if __name__ == "__main__":
    main()
