"""Benchmark `prepare` and store reads (issue: foundation). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_prepare.py --dyads 50            # 100 person-clips, both profiles
    .venv/bin/python bench/bench_prepare.py --dyads 4 --profiles paper --full-dims   # paper memory

- `prepare` throughput in person-clips/s for the lite and paper profiles;
- peak RSS of the whole process tree during the paper profile (it must stream: < 8 GB);
- Ray Data read throughput of the store against a plain pyarrow read of the same files.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from reactdiff.data.prepare import PrepareOptions, prepare
from reactdiff.data.store import Store
from reactdiff.data.synth import write_synthetic_corpus
from reactdiff.data.tiny_models import make_tiny_facial_predictors, make_tiny_wav2vec2


class PeakMemory:
    """Samples the RSS of this process and all its descendants (Ray workers included)."""

    def __init__(self, interval: float = 0.2):
        self.peak, self._stop, self.interval = 0, threading.Event(), interval

    def _run(self):
        me = psutil.Process()
        while not self._stop.is_set():
            total = 0
            for p in [me, *me.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            self.peak = max(self.peak, total)
            time.sleep(self.interval)

    def __enter__(self):
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def read_throughput(store_dir: Path, split: str) -> tuple[float, float]:
    """MB/s of a plain pyarrow read and of a Ray Data read (streamed to the driver)."""
    import ray

    store = Store(store_dir)
    files = store.files(split)
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    start = time.perf_counter()
    for f in files:
        pq.read_table(f)
    plain = size_mb / (time.perf_counter() - start)
    ds = store.ray_dataset(split)
    start = time.perf_counter()
    for _ in ds.iter_batches(batch_size=8, batch_format="pyarrow"):
        pass
    via_ray = size_mb / (time.perf_counter() - start)
    return plain, via_ray


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dyads", type=int, default=50, help="train dyads (2 person-clips each)")
    parser.add_argument("--frames", type=int, default=750)
    parser.add_argument("--profiles", nargs="+", default=["lite", "paper"])
    parser.add_argument("--full-dims", action="store_true",
                        help="paper profile at full dims (wav2vec2 hidden 768 → 1536, AU 25088)")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        write_synthetic_corpus(corpus, dyads={"train": args.dyads, "val": 0, "test": 0},
                               frames_on_disk=args.frames + 1, video_size=64)
        clips = 2 * args.dyads
        for profile in args.profiles:
            options = PrepareOptions(corpus=corpus, out=tmp / f"store-{profile}", profile=profile, splits=("train",))
            if profile == "paper":
                hidden = 768 if args.full_dims else 16
                options.wav2vec2_dir = make_tiny_wav2vec2(tmp / "w2v", hidden_size=hidden)
                options.facial_predictors = make_tiny_facial_predictors(tmp / "facial")
                options.rows_per_part = 2
            with PeakMemory() as memory:
                start = time.perf_counter()
                prepare(options)
                seconds = time.perf_counter() - start
            print(f"prepare[{profile}]: {clips} person-clips in {seconds:.1f} s = {clips / seconds:.2f} clips/s; "
                  f"peak RSS (process tree) {memory.peak / 2**30:.2f} GiB")
            plain, via_ray = read_throughput(options.out, "train")
            print(f"read[{profile}]: pyarrow {plain:.0f} MB/s, Ray Data {via_ray:.0f} MB/s "
                  f"(ratio {via_ray / plain:.2f})")


if __name__ == "__main__":
    main()
