"""Benchmark store reads, local disk against S3, and Ray Data samples/s per CPU core (issue #19).
Prints figures; asserts nothing.

    .venv/bin/python bench/bench_store_read.py                                  # 24 dyads x 250 frames
    .venv/bin/python bench/bench_store_read.py --dyads 4 --frames 100 --passes 1  # a quick check

Builds a paper-profile store once (synthetic corpus, tiny wav2vec2 of hidden 768 and the tiny
facial predictors, as bench/bench_train.py) and copies it to a bucket of a `moto_server` that it
starts on 127.0.0.1 (S3 is skipped, with a message, where moto is not installed). Reads the
train split of both copies three ways, local and S3 in turn pass by pass (the same load):
- plain `pq.read_table` of the part files (no Ray): the reader's ceiling;
- `Store.ray_dataset("train")` iterated as whole Arrow blocks;
- `Batches` over a `streaming_split(1)` shard, as a Ray Train worker reads it (stage 1's roles,
  the config's default `data.shuffle_rows`): role-swapped float32 tensors, in samples/s.
Figures are medians of `--passes` passes after an untimed first one (planning, start-up): wall,
CPU-s of the whole process tree (Ray workers and moto_server, whose share is given), MB/s of
Parquet and of decoded bytes (fp16 network features; targets and MFCC float32). Reads are warm
(page cache; moto's memory). A split this small would stay in the object store (`data.cache:
auto`); these are the per-epoch reads of a store too big for that.

Before the reads: how long opening the store takes (`Store(root)` reads every part's Parquet
footer), with the footers read in parallel and one at a time.

Then `Batches` on the local store with the local Ray runtime limited to 1 and to 2 logical CPUs.
They bound Ray Data's read tasks; `Batches` converts in the driver beside them, so the per-core
figure is samples per CPU-second of the process tree. From it: the cores an input node needs
for 8 A100s (~90 samples/s of 750-frame clips).

Measured figures, with those of earlier rounds and the machines they ran on: docs/benchmarks.md.
"""

from __future__ import annotations

from reactdiff import ray_runtime

# An entry point: before anything imports ray, so that a local runtime binds loopback only.
ray_runtime.bind_local_ray_to_loopback()

import argparse
import contextlib
import itertools
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import psutil
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray
import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_prepare import MB, Phase, TreeMonitor, prepare_store  # noqa: E402

from reactdiff.config import ExperimentConfig  # noqa: E402
from reactdiff.data import store as store_module  # noqa: E402
from reactdiff.data.store import Store, read_columns  # noqa: E402
from reactdiff.data.synth import write_synthetic_corpus  # noqa: E402
from reactdiff.mlflow_server import free_port, wait_until_answering  # noqa: E402
from reactdiff.ray_runtime import ray_init  # noqa: E402
from reactdiff.train.batches import Batches  # noqa: E402

TARGET_SAMPLES_PER_S = 90  # 8 A100s at the paper's ~11 samples/s each
TARGET_FRAMES = 750  # a REACT2024 clip: 30 s at 25 fps
BUCKET = "reactdiff"


class MotoServer:
    """A `moto_server` (S3 API) on 127.0.0.1 and a free port, stopped by its pid; a bucket in it."""

    def __init__(self, tmp: Path):
        self.binary = Path(sys.executable).parent / "moto_server"
        self.log = tmp / "moto.log"

    def __enter__(self):
        port = free_port()
        self.endpoint = f"http://127.0.0.1:{port}"
        with open(self.log, "w") as out:
            self.process = subprocess.Popen(
                [str(self.binary), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
            )
        wait_until_answering(f"{self.endpoint}/moto-api/", self.process, self.log)
        self.fs = pafs.S3FileSystem(endpoint_override=self.endpoint, allow_bucket_creation=True)
        self.fs.create_dir(BUCKET)
        return self

    def __exit__(self, *exc):
        self.process.terminate()
        self.process.wait(timeout=30)

    def cpu_seconds(self) -> float:
        times = psutil.Process(self.process.pid).cpu_times()
        return times.user + times.system


def measure(readers: dict[str, tuple], args, monitor: TreeMonitor) -> dict[str, dict[str, float]]:
    """Medians of `args.passes` passes after a first one, the readers in turn pass by pass, so that
    all meet the same load. readers: {label: (one_pass, MotoServer or None)}; one_pass() returns
    {"parquet": bytes, "decoded": bytes, "samples": n} of what it read."""
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in readers}
    for _ in range(args.passes + 1):
        for label, (one_pass, server) in readers.items():
            server_cpu = server.cpu_seconds() if server else 0.0
            with Phase(monitor) as ph:
                got = one_pass()
            server_cpu = server.cpu_seconds() - server_cpu if server else 0.0
            runs[label].append({"wall": ph.wall, "cpu": ph.cpu, "server_cpu": server_cpu, **got})
    medians = {}
    for label, (_, server) in readers.items():
        m = medians[label] = {key: statistics.median(run[key] for run in runs[label][1:]) for key in runs[label][0]}
        line = (
            f"  {label}: {m['wall']:.2f} s per pass (first {runs[label][0]['wall']:.2f} s), {m['cpu']:.2f} CPU-s"
            + (f" ({m['server_cpu']:.2f} of them moto_server)" if server else "")
            + f"; {m['parquet'] / MB / m['wall']:.0f} MB/s Parquet, {m['decoded'] / MB / m['wall']:.0f} MB/s decoded"
        )
        if m.get("samples"):
            line += f"; {m['samples'] / m['wall']:.2f} samples/s, {m['samples'] / m['cpu']:.2f} samples per CPU-s"
        print(line, flush=True)
    return medians


def batches_epochs(store: Store, args):
    """A pass function: each call one epoch of `Batches` over the same `streaming_split(1)` shard
    (split once: Ray Train keeps it across epochs), read as stage 1 reads it (every person as a
    listener), reseeded every epoch."""
    shard = store.ray_dataset("train").streaming_split(1, equal=True)[0]
    manifest, seeds, shuffle_rows = store.manifest, itertools.count(), ExperimentConfig().data.shuffle_rows
    streams, cpu = list(manifest.streams), torch.device("cpu")

    def one_pass() -> dict[str, float]:
        batches = Batches(shard, manifest, streams, ("listener",), args.batch_rows, 0, next(seeds), cpu, shuffle_rows)
        samples = decoded = 0
        for batch in batches:
            samples += len(batch["listener_id"])
            # What the batch holds, at the store's dtypes (Batches widens fp16 to float32).
            decoded += sum(
                t.numel() * (2 if manifest.streams[s].dtype == "float16" else 4) for s, t in batch["listener"].items()
            )
        return {"parquet": store.split_bytes("train"), "decoded": decoded, "samples": samples}

    return one_pass


def readers(store: Store, args) -> dict[str, Callable[[], dict[str, float]]]:
    """The three ways of reading the train split, as pass functions for `measure`."""
    files, fs, columns = store.files("train"), store.location.fs, read_columns(store.manifest, None)
    parquet = store.split_bytes("train")
    dataset = store.ray_dataset("train")

    def plain_pass() -> dict[str, float]:
        decoded = sum(pq.read_table(f, columns=columns, filesystem=fs).nbytes for f in files)
        return {"parquet": parquet, "decoded": decoded}

    def blocks_pass() -> dict[str, float]:
        blocks = dataset.iter_batches(batch_size=None, batch_format="pyarrow")
        return {"parquet": parquet, "decoded": sum(block.nbytes for block in blocks)}

    return {
        "pyarrow read_table": plain_pass,
        "Ray Data whole blocks": blocks_pass,
        f"Batches ({args.batch_rows} rows per batch)": batches_epochs(store, args),
    }


def compare_reads(stores: dict[str, tuple], args, monitor: TreeMonitor) -> None:
    """Each reader on every store ({name: (Store, MotoServer or None)}), the stores in turn."""
    ways = {name: readers(store, args) for name, (store, _) in stores.items()}
    for name, (store, _) in stores.items():
        print(f"read[{name}] {store.location.shown}: {store.split_bytes('train') / MB:.0f} MB", flush=True)
    for way in ways["local disk"]:
        medians = measure(
            {f"{way}, {name}": (ways[name][way], server) for name, (_, server) in stores.items()}, args, monitor
        )
        if "S3" in stores:
            local, remote = medians[f"{way}, local disk"], medians[f"{way}, S3"]
            rate, cpu = local["wall"] / remote["wall"], remote["cpu"] / local["cpu"]
            print(f"  S3 / local disk: {rate:.2f} of the rate, {cpu:.2f}x the CPU-s", flush=True)


def per_core(store: Store, args, monitor: TreeMonitor) -> None:
    """The Batches path with the local runtime limited to 1 and 2 logical CPUs; input-node sizing."""
    rates = {}
    for cpus in (1, 2):
        ray.shutdown()
        ray_init(num_cpus=cpus)
        print(f"Ray local runtime with {cpus} logical CPU(s):", flush=True)
        m = measure({"Batches": (batches_epochs(store, args), None)}, args, monitor)["Batches"]
        per_cpu_s = m["samples"] / m["cpu"]
        sample_mb = m["decoded"] / m["samples"] / MB
        print(
            f"  per CPU-s: {per_cpu_s:.2f} samples = {per_cpu_s * sample_mb:.0f} MB of paper-profile features "
            f"({sample_mb:.1f} MB per {store.manifest.frames}-frame sample at the store's dtypes)",
            flush=True,
        )
        rates[cpus] = (per_cpu_s, sample_mb)
    # Size from the costlier setting. Cost per sample scaled by bytes (frames): per-batch fixed
    # costs scale too, so this overstates the cores a little.
    per_cpu_s, sample_mb = min(rates.values())
    scale = TARGET_FRAMES / store.manifest.frames
    needed_mb_s = TARGET_SAMPLES_PER_S * sample_mb * scale
    print(
        f"input node for 8 A100s: {TARGET_SAMPLES_PER_S} samples/s of {TARGET_FRAMES}-frame clips = "
        f"{needed_mb_s / 1000:.2f} GB/s of features ({sample_mb * scale:.1f} MB per sample, x{scale:.1f} the "
        f"{store.manifest.frames}-frame one) at {per_cpu_s * sample_mb:.0f} MB per CPU-s → "
        f"{needed_mb_s / (per_cpu_s * sample_mb):.1f} cores of this machine for Ray Data + Batches",
        flush=True,
    )


def open_seconds(root: str, readers: int, opens: int = 5) -> float:
    """Median wall seconds of `Store(root)` (manifest, one listing, every part's footer), with
    `readers` footers read at once."""
    default, store_module.SCHEMA_READERS = store_module.SCHEMA_READERS, readers
    try:
        times = []
        for _ in range(opens):
            start = time.perf_counter()
            Store(root)
            times.append(time.perf_counter() - start)
        return statistics.median(times)
    finally:
        store_module.SCHEMA_READERS = default


def print_open_times(stores: dict[str, tuple]) -> None:
    for label, (store, _) in stores.items():
        parts = sum(len(store.files(split)) for split in store.manifest.splits)
        print(
            f"[{label}] opening the store ({parts} parts): {open_seconds(store.root, store_module.SCHEMA_READERS):.3f} s "
            f"with {store_module.SCHEMA_READERS} footers read at once, {open_seconds(store.root, 1):.3f} s one at a time",
            flush=True,
        )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dyads", type=int, default=24, help="train dyads (2 samples each)")
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--passes", type=int, default=3, help="timed passes per reader (medians)")
    parser.add_argument("--batch-rows", type=int, default=4, help="dyad rows per Batches batch (2 samples each)")
    parser.add_argument("--workers", type=int, default=2, help="prepare's actor pool size")
    parser.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: system temp)")
    args = parser.parse_args()
    args.full_dims = True  # bench_prepare.prepare_store: wav2vec2 of hidden 768 (AFR 1536)
    # Set as a user sets them, before the Ray runtime (and its workers) starts; moto takes any.
    os.environ.update(AWS_ACCESS_KEY_ID="reactdiff-bench", AWS_SECRET_ACCESS_KEY="reactdiff-bench-secret")
    os.environ.update(AWS_DEFAULT_REGION="us-east-1")
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp, TreeMonitor(interval=1.0) as monitor:
        tmp = Path(tmp)
        print(f"machine: {os.cpu_count()} cores, load average {load_average()} at start", flush=True)
        try:
            ray_init()
            ray.data.DataContext.get_current().enable_progress_bars = False
            write_synthetic_corpus(
                tmp / "corpus",
                dyads={"train": args.dyads, "val": 0, "test": 0},
                frames_on_disk=args.frames + 1,
                video_size=64,
            )
            local = Store(prepare_store(args, "paper", tmp / "corpus", tmp, monitor))
            stores = {"local disk": (local, None)}
            server = MotoServer(tmp)
            with server if server.binary.exists() else contextlib.nullcontext() as running:
                if running:
                    with Phase(monitor) as ph:
                        pafs.copy_files(local.root, f"{BUCKET}/store", destination_filesystem=server.fs)
                    size = sum(local.location.size(rel) for rel in local.location.files())
                    print(f"store copied to S3 (moto_server): {size / MB:.0f} MB in {ph.wall:.1f} s", flush=True)
                    remote = Store(f"s3://{BUCKET}/store?endpoint_override={server.endpoint}")
                    stores["S3"] = (remote, server)
                else:
                    print(f"S3 skipped: no {server.binary} (the [test] extra installs moto)", flush=True)
                print_open_times(stores)
                compare_reads(stores, args, monitor)
                ray.shutdown()  # its workers hold connections to the server
            per_core(local, args, monitor)
        finally:
            ray.shutdown()
        print(f"load average {load_average()} at end", flush=True)


if __name__ == "__main__":
    main()
