"""Benchmark distributed training (issue: training). Prints figures; asserts nothing.

    .venv/bin/python bench/bench_train.py --dyads 16 --frames 250 --epochs 3

For the lite and paper profiles (paper at the paper's stream dims with a demo-sized MMT), stage 1
with 1 and 2 DDP workers: samples/s of the last epoch, scaling efficiency
(samples/s at 2 workers) / (2 × samples/s at 1 worker), the data-wait fraction of step time, and
the peak RSS of the training worker processes. On a 2-core machine the ideal is 2 workers × 1 core.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_prepare import Phase, TreeMonitor, gib  # noqa: E402

from reactdiff.config import load_config  # noqa: E402
from reactdiff.data.prepare import PrepareOptions, prepare  # noqa: E402
from reactdiff.data.synth import write_synthetic_corpus  # noqa: E402
from reactdiff.data.tiny_models import make_tiny_facial_predictors, make_tiny_wav2vec2  # noqa: E402
from reactdiff.train.trainer import run_training  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dyads", type=int, default=16)
    parser.add_argument("--frames", type=int, default=250)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--profiles", nargs="+", default=["lite", "paper"])
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        corpus = tmp / "corpus"
        write_synthetic_corpus(corpus, dyads={"train": args.dyads, "val": 2, "test": 0},
                               frames_on_disk=args.frames + 1, video_size=64)
        for profile in args.profiles:
            options = PrepareOptions(corpus=corpus, out=tmp / f"store-{profile}", profile=profile,
                                     splits=("train", "val"))
            if profile == "paper":
                options.wav2vec2_dir = make_tiny_wav2vec2(tmp / "w2v", hidden_size=768)
                options.facial_predictors = make_tiny_facial_predictors(tmp / "facial")
                options.rows_per_part = 2
            prepare(options)
            rates = {}
            for workers in (1, 2):
                cfg = load_config(REPO / "configs" / "demo.yaml", [
                    f"data.store={options.out}", f"train.storage_path={tmp / 'runs'}",
                    f"train.name=bench-{profile}-{workers}", f"train.num_workers={workers}",
                    f"train.epochs={args.epochs}", f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
                    "train.batch_size=8",
                ])
                with TreeMonitor() as monitor, Phase(monitor) as phase:
                    result = run_training(cfg)
                rates[workers] = result.metrics["samples_per_s"]
                print(f"[{profile}] {workers} worker(s): {rates[workers]:.2f} samples/s, "
                      f"data wait {100 * result.metrics['data_wait_fraction']:.1f}% of step time, "
                      f"peak RSS of the process tree {gib(monitor.peak_rss)} (PSS {gib(monitor.peak_pss)}), "
                      f"{phase.cpu:.0f} CPU-s in {phase.wall:.0f} s", flush=True)
            print(f"[{profile}] scaling efficiency 1→2 workers: {rates[2] / (2 * rates[1]):.2f}")


if __name__ == "__main__":
    main()
