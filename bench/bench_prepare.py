"""Benchmark `prepare` and store reads (issue #2). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_prepare.py --dyads 50 --read-mb 0           # prepare, both profiles
    .venv/bin/python bench/bench_prepare.py --dyads 4 --profiles paper --full-dims   # paper memory + read
    .venv/bin/python bench/bench_prepare.py --profiles --read-mb 600          # read throughput only

- `prepare` throughput in person-clips/s, and the overhead of a re-run with nothing to do (resume), wall and CPU seconds of the whole process tree (Ray
  workers included: the machine may be shared), store bytes per person-clip;
- peak memory of the whole process tree during `prepare`: summed RSS (what the < 8 GB goal is
  stated in; it counts pages shared between processes, e.g. Ray's object store, once per process)
  and summed PSS (shared pages split between their processes);
- read throughput of each store, Ray Data (`Store.ray_dataset` → `iter_batches(batch_format=
  "pyarrow")`, the Arrow batches `train/loop.py: Batches` turns into tensors) against a plain `pq.read_table` of the same
  files and columns, pass by pass in turn. Both read from the page cache (the files are read once
  before timing). Ray's runtime start-up, the first pass (dataset planning + first batch) and the
  steady state (later passes = later epochs) are reported separately, and `streaming_split` (Ray
  Train's per-worker sharding), whole-block iteration and bare Ray tasks (the ceiling of any
  Ray-based reader on the machine) are timed too. `--read-mb` adds a lite store of that size written by the real writer
  (`store.write_part`) from random features, since a corpus big enough takes long to synthesise.

Measured figures, with those of earlier rounds and the machines they ran on: docs/benchmarks.md.
"""

from __future__ import annotations

from reactdiff import ray_runtime

# An entry point: before anything imports ray, so that a local runtime binds loopback only.
ray_runtime.bind_local_ray_to_loopback()

import argparse
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.parquet as pq

from reactdiff.data.layout import FPS
from reactdiff.data.prepare import PrepareOptions, _stream_specs, prepare
from reactdiff.data.store import PERSONS, Location, Manifest, Store, column, write_manifest, write_part

MB = 1e6


class TreeMonitor:
    """Samples the process tree of this process (Ray's GCS, raylet and workers included).

    Keeps the peak of summed RSS and summed PSS, and the CPU seconds of every process seen (a
    process that exits keeps its last sampled value), so phases can be charged CPU time.
    """

    def __init__(self, interval: float = 0.25):
        self.interval, self._stop, self._lock = interval, threading.Event(), threading.Lock()
        self.cpu: dict[tuple[int, float], float] = {}  # (pid, create_time) → user + system s
        self.peak_rss = self.peak_pss = 0

    def sample(self) -> None:
        me = psutil.Process()
        rss = pss = 0
        for p in [me, *me.children(recursive=True)]:
            try:
                with p.oneshot():
                    times = p.cpu_times()
                    key = (p.pid, p.create_time())
                    try:
                        full = p.memory_full_info()
                        rss, pss = rss + full.rss, pss + full.pss
                    except (psutil.AccessDenied, AttributeError):
                        r = p.memory_info().rss
                        rss, pss = rss + r, pss + r
            except psutil.Error:
                continue
            with self._lock:
                self.cpu[key] = times.user + times.system
        with self._lock:
            self.peak_rss, self.peak_pss = max(self.peak_rss, rss), max(self.peak_pss, pss)

    def cpu_seconds(self) -> float:
        self.sample()
        with self._lock:
            return sum(self.cpu.values())

    def reset_peak(self) -> None:
        with self._lock:
            self.peak_rss = self.peak_pss = 0

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


class Phase:
    """`with Phase(monitor) as ph:` → ph.wall, ph.cpu (process-tree CPU seconds)."""

    def __init__(self, monitor: TreeMonitor):
        self.monitor = monitor

    def __enter__(self):
        self.cpu0, self.t0 = self.monitor.cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        self.cpu = self.monitor.cpu_seconds() - self.cpu0


def gib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB"


# --------------------------------------------------------------------------------------------
# Stores
# --------------------------------------------------------------------------------------------


def prepare_store(args, profile: str, corpus: Path, tmp: Path, monitor: TreeMonitor) -> Path:
    from reactdiff.data.tiny_models import make_tiny_facial_predictors, make_tiny_wav2vec2

    out = tmp / f"store-{profile}"
    options = PrepareOptions(corpus=corpus, out=out, profile=profile, splits=("train",), workers=args.workers)
    if profile == "paper":
        hidden = 768 if args.full_dims else 16  # facial predictors always have the paper's dims
        options.wav2vec2_dir = make_tiny_wav2vec2(tmp / "w2v", hidden_size=hidden)
        options.facial_predictors = make_tiny_facial_predictors(tmp / "facial")
        options.rows_per_part = 2
    monitor.reset_peak()
    with Phase(monitor) as ph:
        prepare(options)
    clips = 2 * args.dyads
    size = Store(out).split_bytes("train")
    dims = {k: v.dim for k, v in Store(out).manifest.streams.items()}
    print(
        f"prepare[{profile}]: {clips} person-clips in {ph.wall:.1f} s wall = {clips / ph.wall:.3f} clips/s; "
        f"{ph.cpu:.0f} CPU-s for the process tree ({ph.cpu / clips:.1f} CPU-s per clip); "
        f"peak process tree RSS {gib(monitor.peak_rss)} (PSS {gib(monitor.peak_pss)}); "
        f"store {size / MB:.0f} MB = {size / clips / MB:.2f} MB per person-clip; dims {dims}",
        flush=True,
    )
    # Resume overhead: a re-run with every part recorded reads the records and rewrites the
    # matrices, rejected.json and the manifest (paper: also fingerprints the extractor files).
    with Phase(monitor) as ph:
        prepare(options)
    parts = len(Store(out).files("train"))
    print(
        f"prepare[{profile}] re-run with nothing to do ({parts} parts recorded): {ph.wall:.2f} s wall, "
        f"{ph.cpu:.2f} CPU-s",
        flush=True,
    )
    return out


def synthetic_lite_store(out: Path, target_mb: float, frames: int, rows_per_part: int = 8) -> Path:
    """A lite store of ~target_mb written by the real writer from random features (reads only)."""
    options = PrepareOptions(corpus=out, out=out, profile="lite")
    streams = _stream_specs(options, None, {})
    manifest = Manifest(profile="lite", frames=frames, fps=FPS, streams=streams)
    row_bytes = 2 * frames * sum(4 * s.dim for s in streams.values())
    dyads = max(rows_per_part, int(target_mb * MB / row_bytes))
    rng = np.random.default_rng(0)
    location = Location(out)
    files = []
    for part, start in enumerate(range(0, dyads, rows_per_part)):
        rows = [
            {
                "pair_id": i,
                "clip_a": f"synth/s{i}/a/1",
                "clip_b": f"synth/s{i}/b/1",
                **{
                    p: {name: rng.standard_normal((frames, s.dim), dtype=np.float32) for name, s in streams.items()}
                    for p in PERSONS
                },
            }
            for i in range(start, min(dyads, start + rows_per_part))
        ]
        rel = f"train/part-{part:05d}.parquet"
        write_part(location, rel, rows, manifest)
        files.append(rel)
    manifest.splits["train"] = {"rows": dyads, "samples": 2 * dyads, "files": files}
    write_manifest(location, manifest)
    return out


# --------------------------------------------------------------------------------------------
# Reads
# --------------------------------------------------------------------------------------------


def read_throughput(name: str, store_dir: Path, args, monitor: TreeMonitor) -> None:
    import ray

    store = Store(store_dir)
    files = store.files("train")
    columns = ["pair_id", "clip_a", "clip_b"] + [column(p, s) for p in PERSONS for s in store.manifest.streams]
    file_mb = store.split_bytes("train") / MB
    rows = store.manifest.splits["train"]["rows"]
    for f in files:  # page cache: both readers read the same warm files
        Path(f).read_bytes()
    print(
        f"read[{name}]: {len(files)} files, {rows} dyad rows, {file_mb:.0f} MB on disk; "
        f"batch {args.batch_rows} rows; best and median of {args.passes} passes",
        flush=True,
    )

    def report(label: str, walls: list[float], cpus: list[float], mb: float) -> float:
        best = mb / min(walls)
        print(
            f"  {label}: best {best:.0f} MB/s, median {mb / statistics.median(walls):.0f} MB/s "
            f"({min(walls):.2f} s per pass, {statistics.median(cpus):.2f} CPU-s per pass)",
            flush=True,
        )
        return best

    ray.data.DataContext.get_current().enable_progress_bars = False
    with Phase(monitor) as ph:
        dataset = store.ray_dataset("train")
    print(f"  Ray Data dataset creation: {ph.wall:.2f} s", flush=True)

    def consume(iterator, sink: list) -> None:
        first = None
        t0 = time.perf_counter()
        for batch in iterator:
            if first is None:
                first = time.perf_counter() - t0
            sink.append(batch.num_rows)
        sink.append(-(first or 0.0))  # negative marks the first-batch latency

    def ray_pass() -> tuple[float, float, float]:
        sink: list = []
        with Phase(monitor) as ph:
            consume(dataset.iter_batches(batch_size=args.batch_rows, batch_format="pyarrow", prefetch_batches=2), sink)
        assert sum(b for b in sink if b > 0) == rows, "Ray Data did not deliver every row"
        return ph.wall, ph.cpu, -sink[-1]

    def plain_pass() -> tuple[float, float, float]:
        with Phase(monitor) as ph:
            mem = sum(pq.read_table(f, columns=columns).nbytes for f in files)
        return ph.wall, ph.cpu, mem

    first_wall, first_cpu, first_batch = ray_pass()  # planning, read-task start-up (first epoch)
    print(
        f"  Ray Data first pass: {first_wall:.2f} s ({file_mb / first_wall:.0f} MB/s), first batch after "
        f"{first_batch:.2f} s, {first_cpu:.2f} CPU-s",
        flush=True,
    )
    # Alternate the readers pass by pass, so both meet the same machine state (page cache, memory
    # the allocator holds, other load): run one after the other, the second was up to 2x off.
    plain, via_ray = [], []
    for _ in range(args.passes):
        plain.append(plain_pass())
        via_ray.append(ray_pass())
    best_plain = report(
        f"pyarrow read_table ({plain[0][2] / MB:.0f} MB in memory)",
        [w for w, _, _ in plain],
        [c for _, c, _ in plain],
        file_mb,
    )
    best_ray = report(
        f"Ray Data iter_batches, later passes (first batch after {statistics.median(f for _, _, f in via_ray):.2f} s)",
        [w for w, _, _ in via_ray],
        [c for _, c, _ in via_ray],
        file_mb,
    )
    ratios = [p[0] / r[0] for p, r in zip(plain, via_ray, strict=True)]
    print(
        f"  ratio Ray Data / pyarrow: best passes {best_ray / best_plain:.2f}, pass pairs median "
        f"{statistics.median(ratios):.2f} (range {min(ratios):.2f}-{max(ratios):.2f})",
        flush=True,
    )

    def blocks_pass() -> tuple[float, float]:  # whole blocks: no re-batching, no slicing
        with Phase(monitor) as ph:
            got = sum(b.num_rows for b in dataset.iter_batches(batch_size=None, batch_format="pyarrow"))
        assert got == rows, "Ray Data did not deliver every row"
        return ph.wall, ph.cpu

    # The ceiling of any reader built on Ray here: bare tasks, as many as Ray Data's read tasks,
    # each reading its files with pq.read_table and returning the table through the object store.
    @ray.remote
    def read_parts(paths: list[str]):
        return pa.concat_tables([pq.read_table(p, columns=columns) for p in paths])

    tasks = store.read_tasks("train")
    groups = [[str(f) for f in files[i::tasks]] for i in range(tasks)]

    def tasks_pass() -> tuple[float, float]:
        with Phase(monitor) as ph:
            got = sum(ray.get(ref).num_rows for ref in [read_parts.remote(g) for g in groups])
        assert got == rows
        return ph.wall, ph.cpu

    for label, one_pass in (
        ("Ray Data iter_batches(batch_size=None), whole blocks", blocks_pass),
        (f"bare Ray tasks ({len(groups)}) returning pq.read_table through the object store", tasks_pass),
    ):
        one_pass()  # start-up (task workers, first execution)
        timed = [one_pass() for _ in range(args.passes)]
        best = report(label, [w for w, _ in timed], [c for _, c in timed], file_mb)
        print(f"  ratio to pyarrow (best passes): {best / best_plain:.2f}", flush=True)

    for n in args.splits:  # split once, iterate every pass: Ray Train keeps the shards across epochs
        shards = dataset.streaming_split(n, equal=True)
        walls, cpus, got = [], [], 0
        for i in range(args.passes + 1):
            sinks = [[] for _ in shards]
            with Phase(monitor) as ph:
                threads = [
                    threading.Thread(
                        target=consume,
                        args=(
                            s.iter_batches(batch_size=args.batch_rows, batch_format="pyarrow", prefetch_batches=2),
                            sink,
                        ),
                    )
                    for s, sink in zip(shards, sinks, strict=True)
                ]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
            got = sum(b for sink in sinks for b in sink if b > 0)  # equal=True may drop a remainder
            if i == 0:
                print(
                    f"  streaming_split({n}) first pass (starts its coordinator actor): {ph.wall:.2f} s, "
                    f"{ph.cpu:.2f} CPU-s",
                    flush=True,
                )
            else:
                walls.append(ph.wall)
                cpus.append(ph.cpu)
        split_rate = report(
            f"streaming_split({n}, equal=True), {n} consumer thread(s), {got}/{rows} rows, later passes",
            walls,
            cpus,
            file_mb * got / rows,
        )
        print(f"  ratio streaming_split({n}) / pyarrow (best passes): {split_rate / best_plain:.2f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dyads", type=int, default=50, help="train dyads (2 person-clips each)")
    parser.add_argument("--frames", type=int, default=750)
    parser.add_argument("--profiles", nargs="*", default=["lite", "paper"], help="profiles to prepare (none: skip)")
    parser.add_argument(
        "--full-dims",
        action="store_true",
        help="paper profile with a wav2vec2 of hidden 768 (AFR 1536); VA/AU/FE are always 64/25088/1408",
    )
    parser.add_argument("--workers", type=int, default=2, help="prepare's actor pool size")
    parser.add_argument(
        "--read-mb", type=float, default=0, help="also time reads of a synthetic lite store of about this many MB"
    )
    parser.add_argument("--no-read", action="store_true", help="skip read throughput of the prepared stores")
    parser.add_argument("--batch-rows", type=int, default=8, help="dyad rows per batch (training default: 8)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--splits", type=int, nargs="*", default=[1, 2], help="streaming_split widths to time")
    parser.add_argument("--tmp", type=Path, default=None, help="scratch folder (default: system temp)")
    args = parser.parse_args()

    import ray

    from reactdiff.ray_runtime import ray_init

    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp, TreeMonitor() as monitor:
        try:
            run(args, Path(tmp), monitor, ray_init)
        finally:
            ray.shutdown()


def run(args, tmp: Path, monitor: TreeMonitor, ray_init) -> None:
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start", flush=True)
    with Phase(monitor) as ph:
        ray_init()
    print(f"Ray runtime start-up: {ph.wall:.1f} s wall, {ph.cpu:.1f} CPU-s", flush=True)
    stores = {}
    if args.profiles:
        from reactdiff.data.synth import write_synthetic_corpus

        corpus = tmp / "corpus"
        with Phase(monitor) as ph:
            write_synthetic_corpus(
                corpus, dyads={"train": args.dyads, "val": 0, "test": 0}, frames_on_disk=args.frames + 1, video_size=64
            )
        print(f"synthetic corpus: {2 * args.dyads} person-clips in {ph.wall:.1f} s", flush=True)
        for profile in args.profiles:
            stores[profile] = prepare_store(args, profile, corpus, tmp, monitor)
    if args.no_read:
        stores = {}
    if args.read_mb:
        with Phase(monitor) as ph:
            stores[f"lite-synthetic-{args.read_mb:.0f}MB"] = synthetic_lite_store(
                tmp / "store-read", args.read_mb, args.frames
            )
        print(f"synthetic lite store written in {ph.wall:.1f} s", flush=True)
    for name, store_dir in stores.items():
        monitor.reset_peak()
        read_throughput(name, store_dir, args, monitor)
        print(
            f"  peak process tree RSS while reading {gib(monitor.peak_rss)} (PSS {gib(monitor.peak_pss)})", flush=True
        )
    print(f"load average {os.getloadavg()[0]:.2f} at end", flush=True)


if __name__ == "__main__":
    main()
