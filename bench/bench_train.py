"""Benchmark distributed training (issue: training). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_train.py --profiles lite --dyads 48 --frames 750 --epochs 3
    .venv/bin/python bench/bench_train.py --profiles paper --dyads 24 --frames 250 --epochs 3
    .venv/bin/python bench/bench_train.py --profiles paper --dyads 24 --frames 250 --epochs 2 --repeats 3 \
        --ddp-steps 3 --set model.mmt.d_model=1024 model.mmt.latent_dim=128 model.mmt.decoder_layers=4

For the lite and paper profiles (paper at the paper's stream dims with the demo's MMT, or with the
paper's MMT through --set), stage 1 with 1 and 2 DDP workers through Ray Train (`run_training`,
the real job): samples/s of the last epoch, scaling efficiency (samples/s at 2 workers) /
(2 × samples/s at 1 worker), the data-wait fraction of step time (slowest worker), and peak
memory of the whole process tree.

Scaling is weak by default (each worker keeps `--batch-size` samples per step, as data-parallel
throughput is usually measured); `--fixed-global-batch` measures strong scaling instead. Next to
it, the same model and step in plain `torch.distributed` DDP (gloo, random inputs, no Ray, no data
pipeline) gives the ceiling this machine allows: on 2 cores the Ray figure can only be read
against it. Epochs must hold several steps per worker, or per-epoch start-up dominates.

Measured figures, with those of earlier rounds and the machines they ran on: docs/benchmarks.md.
"""

from __future__ import annotations

from reactdiff import ray_runtime

# An entry point: before anything imports ray, so that a local runtime binds loopback only.
ray_runtime.bind_local_ray_to_loopback()

import argparse
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import ray
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))

from bench_prepare import Phase, TreeMonitor, gib  # noqa: E402

from reactdiff.config import ExperimentConfig, load_config  # noqa: E402
from reactdiff.data.prepare import PrepareOptions, prepare  # noqa: E402
from reactdiff.data.store import Manifest, Store  # noqa: E402
from reactdiff.data.synth import write_synthetic_corpus  # noqa: E402
from reactdiff.data.tiny_models import make_tiny_facial_predictors, make_tiny_wav2vec2  # noqa: E402
from reactdiff.models.mmt import MMT  # noqa: E402
from reactdiff.train.rendezvous import host_store, join_process_group  # noqa: E402
from reactdiff.train.trainer import run_training  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DDP_PORT = 29533


def plain_ddp_worker(
    rank: int, world: int, cfg_json: str, manifest_json: str, batch: int, frames: int, steps: int, queue
) -> None:
    """Stage-1 steps of the same MMT in plain torch DDP on random inputs: no Ray, no data."""
    torch.set_num_threads(1)  # as the Ray workers (cpus_per_worker 1)
    timeout = timedelta(minutes=30)  # torch's default
    if rank == 0:
        host_store("127.0.0.1", DDP_PORT, world, timeout)
    join_process_group("gloo", "127.0.0.1", DDP_PORT, rank, world, timeout)
    cfg = ExperimentConfig.model_validate_json(cfg_json)
    manifest = Manifest.from_json(manifest_json, "bench manifest")
    torch.manual_seed(rank)
    model = MMT(manifest.model_streams(), cfg.model.mmt)
    # As Ray Train's prepare_model with Engine's options: one worker trains the bare model.
    stepped = torch.nn.parallel.DistributedDataParallel(model, gradient_as_bucket_view=True) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), cfg.train.lr)
    feats = {name: torch.randn(batch, frames, dim) for name, dim in manifest.model_streams().items()}
    target_3dmm, target_emotion = torch.randn(batch, frames, 58), torch.rand(batch, frames, 25)

    def step() -> None:
        loss, _ = stepped(feats, target_3dmm, target_emotion)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.train.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()

    for _ in range(2):  # warm-up
        step()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    dist.barrier()
    if rank == 0:
        queue.put(world * batch * steps / (time.perf_counter() - start))
    dist.destroy_process_group()


def plain_ddp_rate(
    cfg: ExperimentConfig, manifest: Manifest, workers: int, batch: int, frames: int, steps: int
) -> float:
    context = mp.get_context("spawn")
    queue = context.SimpleQueue()
    mp.start_processes(
        plain_ddp_worker,
        nprocs=workers,
        start_method="spawn",
        args=(workers, cfg.model_dump_json(), manifest.to_json(), batch, frames, steps, queue),
    )
    return queue.get()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dyads", type=int, default=48, help="train dyads (2 samples each)")
    parser.add_argument("--frames", type=int, default=750)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--profiles", nargs="+", default=["lite", "paper"])
    parser.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="samples per step per worker (weak scaling: the global batch grows with the workers)",
    )
    parser.add_argument(
        "--fixed-global-batch",
        action="store_true",
        help="strong scaling instead: --batch-size is the global batch, split across the workers",
    )
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="config overrides for the Ray Train runs and the ceiling, e.g. data.shuffle_rows=0 "
        "or model.mmt.d_model=1024 (the paper's MMT)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs per configuration (medians are reported)")
    parser.add_argument("--ddp-steps", type=int, default=8, help="timed steps of the plain-DDP ceiling (0: skip)")
    args = parser.parse_args()
    demo = load_config(REPO / "configs" / "demo.yaml", args.set)  # the ceiling runs the same model
    if 0 < demo.data.crop_frames < args.frames:
        raise SystemExit("the plain-DDP ceiling assumes whole clips; the demo config now crops stage 1")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        write_synthetic_corpus(
            corpus, dyads={"train": args.dyads, "val": 2, "test": 0}, frames_on_disk=args.frames + 1, video_size=64
        )
        for profile in args.profiles:
            options = PrepareOptions(
                corpus=corpus, out=tmp / f"store-{profile}", profile=profile, splits=("train", "val")
            )
            if profile == "paper":
                options.wav2vec2_dir = make_tiny_wav2vec2(tmp / "w2v", hidden_size=768)
                options.facial_predictors = make_tiny_facial_predictors(tmp / "facial")
                options.rows_per_part = 2
            prepare(options)
            manifest = Store(options.out).manifest
            rates: dict[int, list[float]] = {1: [], 2: []}
            ceiling: dict[int, list[float]] = {1: [], 2: []}
            # Each figure is the median of --repeats runs, 1 and 2 workers in turn: on this shared
            # 2-core machine one run's samples/s moved by up to 25 % from the next.
            if args.ddp_steps:  # with no Ray runtime alive, so it has the machine to itself
                ray.shutdown()
                for _ in range(args.repeats):
                    for workers in (1, 2):
                        batch = args.batch_size // (workers if args.fixed_global_batch else 1)
                        ceiling[workers].append(
                            plain_ddp_rate(demo, manifest, workers, batch, args.frames, args.ddp_steps)
                        )
                for workers in (1, 2):
                    print(
                        f"[{profile}] {workers} worker(s), plain torch DDP, same model and step, random inputs: "
                        f"{statistics.median(ceiling[workers]):.2f} samples/s "
                        f"(runs: {', '.join(f'{r:.2f}' for r in ceiling[workers])})",
                        flush=True,
                    )
            for repeat in range(args.repeats):
                for workers in (1, 2):
                    global_batch = args.batch_size * (1 if args.fixed_global_batch else workers)
                    cfg = load_config(
                        REPO / "configs" / "demo.yaml",
                        [
                            f"data.store={options.out}",
                            f"train.storage_path={tmp / 'runs'}",
                            f"train.name=bench-{profile}-{workers}-{repeat}",
                            f"train.num_workers={workers}",
                            f"train.epochs={args.epochs}",
                            f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
                            f"train.batch_size={global_batch}",
                            *args.set,
                        ],
                    )
                    # Sampling the tree's memory costs CPU (smaps of every process); every 2 s it
                    # took no measurable share, every 0.25 s it slowed 2 workers on 2 cores.
                    with TreeMonitor(interval=2.0) as monitor, Phase(monitor) as phase:
                        result = run_training(cfg)
                    rates[workers].append(result.metrics["samples_per_s"])
                    print(
                        f"[{profile}] Ray Train, {workers} worker(s), {global_batch} samples per step: "
                        f"{rates[workers][-1]:.2f} samples/s, "
                        f"data wait {100 * result.metrics['data_wait_fraction']:.1f}% of the epoch "
                        f"({100 * result.metrics['data_wait_steady_fraction']:.1f}% after its first batch), "
                        f"peak RSS of the process tree {gib(monitor.peak_rss)} (PSS {gib(monitor.peak_pss)}), "
                        f"{phase.cpu:.0f} CPU-s in {phase.wall:.0f} s",
                        flush=True,
                    )

            def efficiency(runs: dict[int, list[float]]) -> float:
                return statistics.median(runs[2]) / (2 * statistics.median(runs[1]))

            print(
                f"[{profile}] scaling efficiency 1→2 workers (medians): Ray Train {efficiency(rates):.2f} "
                f"({statistics.median(rates[1]):.2f} → {statistics.median(rates[2]):.2f} samples/s)"
                + (f", plain DDP ceiling {efficiency(ceiling):.2f}" if args.ddp_steps else ""),
                flush=True,
            )


if __name__ == "__main__":
    main()
