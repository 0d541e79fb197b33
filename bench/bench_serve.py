"""Concurrent real-time streams on `reactdiff serve`'s WebSocket /stream: how many one machine holds.

Serves a model from a checkpoint file on a local Ray runtime: the demo's size by default
(configs/demo.yaml: lite streams, ws 50, T 20), or the paper's dims (`--dims paper`: AU 25088,
d_model 1024, latent 128); random weights, as speed does not depend on what the model learned.
It then runs N concurrent streams for N = 1, 2, 4, ... Each stream is a live speaker: it sends
speaker window t at start + t·ws/fps (staggered starts), and the latency of a window is the time
from sending it to receiving the listener window it conditions. A load holds when the p99 latency
stays under one window's duration (ws/fps = 2 s), so no stream falls behind.

    .venv/bin/python bench/bench_serve.py                        # N = 1, 2, 4, ... until one fails
    .venv/bin/python bench/bench_serve.py --replicas 1 --num-cpus 2 --windows 8 --alpha 10
    .venv/bin/python bench/bench_serve.py --dims paper --max-streams 2 --windows 4

The load generator (JSON encoding, WebSocket clients) runs on the same cores as the server.
Measured figures: docs/benchmarks.md.
"""

from __future__ import annotations

from reactdiff import ray_runtime  # noqa: F401  isort: skip  (first: the local Ray runtime binds 127.0.0.1)

import argparse
import asyncio
import json
import os
import random
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from reactdiff.config import ModelConfig, load_config
from reactdiff.data.layout import FPS
from reactdiff.models import MMT, LatentStatsAccumulator, ReactDiff, save_checkpoint
from reactdiff.serve import ServeOptions

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
LITE = {"emotion": 25, "3dmm": 58, "mfcc": 26}


def sized_model(dims: str) -> ReactDiff:
    """A ReactDiff of the demo's size or the paper's dims, random weights and latent statistics."""
    if dims == "paper":
        from reactdiff.data.features import MFCC_DIM, PAPER_FACIAL_DIMS

        streams, config = {**PAPER_FACIAL_DIMS, "mfcc": MFCC_DIM}, ModelConfig()
    else:
        streams, config = LITE, load_config(RECIPE).model
    model = ReactDiff(MMT(streams, config.mmt), config).eval()
    accumulator = LatentStatsAccumulator(config.mmt.latent_dim)
    with torch.no_grad():
        accumulator.update(model.mmt.encode({name: torch.randn(2, 100, dim) for name, dim in streams.items()}))
    model.set_latent_stats(accumulator.finalize())
    return model


async def one_stream(
    url: str, streams: dict[str, int], windows: int, alpha: int, seed: int, ws: int, offset_s: float
) -> list[float]:
    from websockets.asyncio.client import connect

    rng = np.random.default_rng(seed)
    messages = [
        json.dumps({name: rng.standard_normal((ws, dim)).round(3).tolist() for name, dim in streams.items()})
        for _ in range(windows)
    ]
    await asyncio.sleep(offset_s)
    latencies = []
    async with connect(url, max_size=None, open_timeout=300) as socket:
        await socket.send(json.dumps({"alpha": alpha, "seed": seed}))
        json.loads(await socket.recv())  # model, window size, streams
        json.loads(await socket.recv())  # listener window 0 (conditioned on nothing)
        start = time.perf_counter()
        for t, message in enumerate(messages, start=1):
            # Speaker window t-1 has been spoken by start + t·ws/fps; a late reply delays the next send.
            await asyncio.sleep(max(0.0, start + t * ws / FPS - time.perf_counter()))
            sent = time.perf_counter()
            await socket.send(message)
            reply = json.loads(await socket.recv())
            if "error" in reply:
                raise RuntimeError(reply["error"])
            latencies.append(time.perf_counter() - sent)
    return latencies


async def load(url: str, streams: dict[str, int], count: int, windows: int, alpha: int, ws: int) -> list[float]:
    rng = random.Random(count)
    results = await asyncio.gather(
        *(one_stream(url, streams, windows, alpha, seed, ws, rng.uniform(0, ws / FPS)) for seed in range(count))
    )
    return [latency for stream in results for latency in stream]


def serving_processes() -> list:
    """The Serve replicas and HTTP proxy: what a window costs the server, apart from the clients.
    This driver's local Ray runtime runs under it; the workers' titles name their actors."""
    import psutil

    titles = ("ray::ServeReplica", "ray::ProxyActor")
    return [
        process
        for process in psutil.Process().children(recursive=True)
        if " ".join(process.cmdline()).startswith(titles)
    ]


def cpu_seconds(processes: list) -> float:
    return sum(sum(process.cpu_times()[:2]) for process in processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dims", choices=("demo", "paper"), default="demo")
    parser.add_argument("--alpha", type=int, default=10, help="reactions per listener window")
    parser.add_argument("--windows", type=int, default=8, help="speaker windows each stream sends")
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--num-cpus", type=float, default=1.0, help="CPUs (torch threads) per replica")
    parser.add_argument("--max-streams", type=int, default=64)
    args = parser.parse_args()

    import ray
    from ray import serve

    from reactdiff.mlflow_server import free_port
    from reactdiff.serve import app

    model = sized_model(args.dims)
    streams, ws = dict(model.mmt.streams), model.config.diffusion.window_size
    window_s = ws / FPS
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = save_checkpoint(Path(tmp) / f"{args.dims}-size.pt", model)
        del model
        options = ServeOptions(
            model=str(checkpoint),
            port=free_port(),
            min_replicas=args.replicas,
            max_replicas=args.replicas,
            num_cpus=args.num_cpus,
            max_ongoing_requests=args.max_streams,
            target_ongoing_requests=args.max_streams,
        )
        try:
            url = app.deploy(options).replace("http://", "ws://") + "/stream"
            print(
                f"{args.dims} size: streams {streams}, ws {ws} = {window_s:.1f} s windows, α {args.alpha}, "
                f"{args.replicas} replica(s) × {args.num_cpus:g} CPU, {args.windows} windows per stream; "
                f"load average {os.getloadavg()[0]:.1f}",
                flush=True,
            )
            asyncio.run(load(url, streams, args.replicas, 2, args.alpha, ws))  # warm-up: every replica

            processes, cpu_per_window_s = serving_processes(), []
            print(f"serving processes: {len(processes)}", flush=True)

            def holds(count: int) -> bool:
                cpu = cpu_seconds(processes)
                latencies = asyncio.run(load(url, streams, count, args.windows, args.alpha, ws))
                cpu_per_window = (cpu_seconds(processes) - cpu) / (len(latencies) + count)  # + each window 0
                cpu_per_window_s.append(cpu_per_window)
                p50, p99 = np.percentile(latencies, 50), np.percentile(latencies, 99)
                print(
                    f"{count:3d} streams: window latency p50 {p50:.3f} s, p99 {p99:.3f} s, mean "
                    f"{statistics.fmean(latencies):.3f} s over {len(latencies)} windows, server "
                    f"{cpu_per_window:.3f} CPU-s per window: {'holds' if p99 < window_s else 'falls behind'} "
                    f"(load average {os.getloadavg()[0]:.1f})",
                    flush=True,
                )
                return p99 < window_s

            held, count = 0, 1  # double until a load falls behind, then try halfway between
            while count <= args.max_streams and holds(count):
                held, count = count, count * 2
            if held >= 2 and count <= args.max_streams and holds((held + count) // 2):
                held = (held + count) // 2
            print(
                f"real-time streams held: {held} (p99 under {window_s:.1f} s), at load average {os.getloadavg()[0]:.1f}"
            )
            # What the cores would hold with nothing else on them (the clients' own cost left out).
            cpu_per_window = min(cpu_per_window_s)
            print(
                f"server CPU per window: {cpu_per_window:.3f} CPU-s (least of the loads) → an idle "
                f"{os.cpu_count()}-core machine serves at most {os.cpu_count() * window_s / cpu_per_window:.1f} "
                "real-time streams"
            )
        finally:
            serve.shutdown()
            ray.shutdown()


if __name__ == "__main__":
    main()
