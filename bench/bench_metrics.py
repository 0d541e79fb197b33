"""Time every REACT2024 metric on emotion-like data of test-set size.

    .venv/bin/python bench/bench_metrics.py                 # N = 1614, alpha = 10, T = 750
    .venv/bin/python bench/bench_metrics.py --n 200 --workers 1
    .venv/bin/python bench/bench_metrics.py --per-metric    # each metric function timed alone
    .venv/bin/python bench/bench_metrics.py --n 60 --first-call  # a fresh process's first call, cold and warm

By default it times `metrics.compute_all`, which is what an evaluation runs: FRDist on all
threads while the other metrics run beside it. `--per-metric` times each public function on its
own instead, one after the other (FRSyn and FRSyn_all each compute their own offsets then).
`--first-call` times what a first `evaluate` or `score` in a fresh process pays: importing the metrics
(numba loads or compiles its kernels then) and the first `compute_all`, in two fresh subprocesses
sharing an empty numba cache (NUMBA_CACHE_DIR): cold (a fresh install: nothing compiled yet), then
warm (every later process); then a second call in the warm process, for the steady state.

The data imitates the real 25-d emotion: 15 binary AUs for real reactions (continuous AU
probabilities for predictions, as a model outputs), smooth valence/arousal in [-1, 1] and 8 softmax
expression probabilities, all temporally smooth. Samples fall into clusters of about `--appropriate`
members; a cluster's listeners are mutually appropriate and share a prototype reaction, and each
prediction is a fresh variation of its cluster's prototype (a model that found the right mode).
Every real listener and every prediction also carries a personal style: a constant offset of the
latent, of scale `--style` (people differ in baseline valence, arousal and expressiveness).
`--style 0` removes it: all candidates then look alike, the hardest case for FRDist's pruning.

Measured figures, with those of earlier rounds and the machines they ran on: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Run in a fresh interpreter by --first-call: times the import (kernels loaded or compiled) and two
# compute_all calls on the saved data; prints wall and CPU seconds of each, "wall cpu" x 3.
FIRST_CALL_SCRIPT = """
import sys, time
import numpy as np
data = np.load(sys.argv[1])
args = (data["preds"], data["listener"], data["speaker"], data["appropriate"])
marks = [(time.perf_counter(), time.process_time())]
from reactdiff.evaluate import metrics
marks.append((time.perf_counter(), time.process_time()))
for _ in range(2):
    metrics.compute_all(*args)
    marks.append((time.perf_counter(), time.process_time()))
print(*(f"{b[0] - a[0]} {b[1] - a[1]}" for a, b in zip(marks, marks[1:])))
"""


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], width: int) -> np.ndarray:
    """Unit-variance noise smoothed along axis -2 (time) with a Gaussian of `width` frames."""
    t = np.arange(-3 * width, 3 * width + 1)
    kernel = np.exp(-0.5 * (t / width) ** 2)
    kernel /= np.sqrt((kernel**2).sum())
    noise = rng.standard_normal(shape[:-2] + (shape[-2] + len(t) - 1, shape[-1]))
    # Convolve along time by FFT so large batches stay fast.
    n_fft = noise.shape[-2]
    spectrum = np.fft.rfft(noise, axis=-2) * np.fft.rfft(kernel, n=n_fft)[:, None]
    return np.fft.irfft(spectrum, n=n_fft, axis=-2)[..., len(t) - 1 :, :][..., : shape[-2], :]


def emotion_from_latent(latent: np.ndarray, binary_aus: bool) -> np.ndarray:
    """Map a (..., T, 25) smooth latent to AUs, valence/arousal and expression probabilities."""
    au_bias = np.linspace(-1.6, -0.2, 15)  # activation rates from ~5 % to ~40 %
    au_logit = 2.5 * (latent[..., :15] + au_bias)
    aus = (au_logit > 0).astype(np.float64) if binary_aus else 1.0 / (1.0 + np.exp(-au_logit))
    va = np.tanh(0.6 * latent[..., 15:17])
    logits = 1.5 * latent[..., 17:25]
    logits[..., 0] += 1.5  # Neutral dominates, as in the real data
    expr = np.exp(logits - logits.max(axis=-1, keepdims=True))
    expr /= expr.sum(axis=-1, keepdims=True)
    return np.concatenate([aus, va, expr], axis=-1)


def emotion_like_eval_set(
    n: int, alpha: int, frames: int, appropriate_per_sample: int, style: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(preds (n, alpha, T, 25) float32, listener, speaker (n, T, 25) float32, appropriate (n, n))."""
    rng = np.random.default_rng(seed)
    n_clusters = max(1, round(n / appropriate_per_sample))
    cluster = rng.integers(0, n_clusters, size=n)
    prototype = smooth_noise(rng, (n_clusters, frames, 25), width=20)
    speaker = emotion_from_latent(smooth_noise(rng, (n, frames, 25), width=15), binary_aus=True)
    listener_latent = (
        prototype[cluster]
        + 0.8 * smooth_noise(rng, (n, frames, 25), width=15)
        + style * rng.standard_normal((n, 1, 25))
    )
    listener = emotion_from_latent(listener_latent, binary_aus=True)
    preds = np.empty((n, alpha, frames, 25), dtype=np.float32)
    for start in range(0, n, 256):  # chunked: the float64 latent of all predictions is ~2.4 GB
        stop = min(n, start + 256)
        latent = (
            prototype[cluster[start:stop], None]
            + 0.8 * smooth_noise(rng, (stop - start, alpha, frames, 25), width=15)
            + style * rng.standard_normal((stop - start, alpha, 1, 25))
        )
        preds[start:stop] = emotion_from_latent(latent, binary_aus=False)
    appropriate = (cluster[:, None] == cluster[None, :]).astype(np.uint8)
    return preds, listener.astype(np.float32), speaker.astype(np.float32), appropriate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--n", type=int, default=1614, help="samples (test split: 1614)")
    parser.add_argument("--alpha", type=int, default=10)
    parser.add_argument("--frames", type=int, default=750)
    parser.add_argument("--appropriate", type=int, default=20, help="mean appropriate reactions per sample")
    parser.add_argument("--style", type=float, default=0.5, help="scale of personal style offsets")
    parser.add_argument("--workers", type=int, default=None, help="FRDist threads (default: all CPUs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-metric", action="store_true", help="time each metric function alone")
    parser.add_argument(
        "--first-call", action="store_true", help="time import + first compute_all in fresh processes, cold and warm"
    )
    args = parser.parse_args()

    t0 = time.perf_counter()
    preds, listener, speaker, appropriate = emotion_like_eval_set(
        args.n, args.alpha, args.frames, args.appropriate, args.style, args.seed
    )
    print(
        f"data: N={args.n} alpha={args.alpha} T={args.frames} "
        f"appropriate/sample={appropriate.sum(1).mean():.1f} style={args.style} cpus={len(os.sched_getaffinity(0))} "
        f"(generated in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    if args.first_call:
        first_calls(preds, listener, speaker, appropriate)
        return
    from reactdiff.evaluate import metrics

    # CPU seconds (all threads of this process) beside wall seconds: on a shared machine wall time
    # includes waiting for the CPU, CPU time does not.
    print(f"{'metric':10s} {'value':>12s}   {'wall':>8s}   {'cpu':>8s}")
    start_wall, start_cpu = time.perf_counter(), time.process_time()
    if args.per_metric:
        timed = {
            "FRCorr": lambda: metrics.frcorr(preds, listener, appropriate),
            "FRDist": lambda: metrics.frdist(preds, listener, appropriate, workers=args.workers),
            "FRDiv": lambda: metrics.frdiv(preds),
            "FRDvs": lambda: metrics.frdvs(preds),
            "FRVar": lambda: metrics.frvar(preds),
            "FRSyn": lambda: metrics.frsyn(preds, speaker),
            "FRSyn_all": lambda: metrics.frsyn(preds, speaker, all_predictions=True),
            "FRRea": lambda: metrics.frrea(preds, listener),
        }
        for name, fn in timed.items():
            metric_wall, metric_cpu = time.perf_counter(), time.process_time()
            value = fn()
            wall, cpu = time.perf_counter() - metric_wall, time.process_time() - metric_cpu
            print(f"{name:10s} {value:12.5f}   {wall:8.2f}   {cpu:8.2f}", flush=True)
    else:  # one time for all: compute_all overlaps the metrics
        for name, value in metrics.compute_all(preds, listener, speaker, appropriate, workers=args.workers).items():
            print(f"{name:10s} {value:12.5f}")
    wall, cpu = time.perf_counter() - start_wall, time.process_time() - start_cpu
    print(f"{'total':10s} {'':12s}   {wall:8.2f}   {cpu:8.2f}   (seconds; load avg {os.getloadavg()[0]:.1f})")


def first_calls(preds: np.ndarray, listener: np.ndarray, speaker: np.ndarray, appropriate: np.ndarray) -> None:
    """Import + first compute_all in a fresh process with an empty numba cache, then again."""
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data.npz"
        np.savez(data, preds=preds, listener=listener, speaker=speaker, appropriate=appropriate)
        env = {**os.environ, "NUMBA_CACHE_DIR": str(Path(tmp) / "numba-cache")}
        print(f"{'process':8s} {'import':>13s} {'first call':>13s} {'second call':>13s}   (wall / CPU seconds)")
        for label in ("cold", "warm"):
            # cwd: not the checkout, so that the interpreter's installed reactdiff is what is timed
            out = subprocess.run(
                [sys.executable, "-c", FIRST_CALL_SCRIPT, str(data)],
                env=env,
                cwd=tmp,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            seconds = [float(word) for word in out.split()[-6:]]
            columns = " ".join(
                f"{wall:6.1f} / {cpu:4.1f}" for wall, cpu in zip(seconds[::2], seconds[1::2], strict=True)
            )
            print(f"{label:8s} {columns}   (load avg {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
