"""Speed of `synth` and the corpus reader, and how learnable the synthetic reactions are.

    .venv/bin/python bench/bench_synth.py --dyads 12 --frames 751

Prints person-clips/s for writing, scanning (full validation) and fingerprinting, then a
learnability probe on an in-memory corpus: per-sample CCC (REACT2024 definition, own listener)
and MSE of naive baselines against a centred ridge regression from a ±15-frame window of the
speaker's emotion and speaking turn. The ridge is a crude stand-in for a trained model: it must
beat Mime on CCC and MeanSeq on MSE for the structure to be learnable.

Measured figures, with those of earlier rounds and the machines they ran on: docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from reactdiff.data.corpus import corpus_fingerprint, scan_split
from reactdiff.data.synth import generate_corpus, write_synthetic_corpus


def ccc(target: np.ndarray, pred: np.ndarray) -> float:
    """Mean over channels of the concordance correlation (Pearson NaN → 0), as in FRCorr."""
    mt, mp, vt, vp = target.mean(0), pred.mean(0), target.var(0), pred.var(0)
    cov = ((target - mt) * (pred - mp)).mean(0)
    sd = np.sqrt(vt * vp)
    r = np.divide(cov, sd, out=np.zeros_like(cov), where=sd > 0)
    return float((2 * r * sd / (vt + vp + (mt - mp) ** 2 + 1e-8)).mean())


def window_features(speaker: np.ndarray, speaking: np.ndarray, half: int = 15, step: int = 3) -> np.ndarray:
    """(N, T, d): the clip-centred speaker emotion at offsets −half..half, alone and gated by the turn."""
    centred = speaker - speaker.mean(axis=1, keepdims=True)
    n, t, _ = centred.shape
    padded = np.pad(centred, ((0, 0), (half, half), (0, 0)), mode="edge")
    x = np.concatenate([padded[:, half + o : half + o + t] for o in range(-half, half + 1, step)], axis=2)
    gate = speaking[:, :, None].astype(np.float64)
    return np.concatenate([x, x * gate, gate, np.ones_like(gate)], axis=2)


def samples(rows, frames):
    """Role-swapped (speaker emotion, listener emotion, speaker speaking) arrays."""
    order = [(a, b) for a, b in rows] + [(b, a) for a, b in rows]
    return (
        np.stack([s.emotion[:frames] for s, _ in order]).astype(np.float64),
        np.stack([lis.emotion[:frames] for _, lis in order]).astype(np.float64),
        np.stack([s.speaking[:frames] for s, _ in order]),
    )


def learnability(train_rows: int, val_rows: int, frames_on_disk: int, seed: int) -> None:
    rows = list(generate_corpus({"train": train_rows, "val": val_rows}, frames_on_disk, seed))
    frames = frames_on_disk - 1
    s_tr, l_tr, sp_tr = samples([r for r in rows if r[0].split == "train"], frames)
    s_va, l_va, sp_va = samples([r for r in rows if r[0].split == "val"], frames)
    x = window_features(s_tr, sp_tr).reshape(-1, window_features(s_tr[:1], sp_tr[:1]).shape[-1])
    w = np.linalg.solve(x.T @ x + np.eye(x.shape[1]), x.T @ l_tr.reshape(-1, l_tr.shape[-1]))
    predictions = {
        "B_Random": np.random.default_rng(seed).uniform(0, 1, l_va.shape),
        "B_Mime": s_va,
        "B_MeanSeq": np.broadcast_to(l_tr.mean(axis=0), l_va.shape),
        "ridge (centred window)": window_features(s_va, sp_va) @ w,
    }
    print(f"learnability probe: {len(l_tr)} train / {len(l_va)} val samples of {frames} frames")
    for name, pred in predictions.items():
        score = np.mean([ccc(l_va[k], pred[k]) for k in range(len(l_va))])
        print(f"  {name:24s} CCC {score:6.3f}   MSE {np.mean((pred - l_va) ** 2):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dyads", type=int, default=12, help="rows in the train split written")
    parser.add_argument("--frames", type=int, default=751, help="frames on disk per clip")
    parser.add_argument("--video-size", type=int, default=64)
    parser.add_argument("--probe-rows", type=int, default=40, help="train rows of the learnability probe")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "corpus"
        summary = write_synthetic_corpus(root, {"train": args.dyads}, args.frames, args.seed, args.video_size)
        size_mb = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 1e6
        print(
            f"write: {summary.person_clips} person-clips of {args.frames} frames in {summary.seconds:.2f} s "
            f"= {summary.clips_per_second:.2f} clips/s, {size_mb:.1f} MB"
        )
        start = time.perf_counter()
        good, rejected = scan_split(root, "train")
        seconds = time.perf_counter() - start
        print(
            f"scan_split: {summary.person_clips} clips validated in {seconds:.2f} s "
            f"= {summary.person_clips / seconds:.1f} clips/s ({len(good)} samples, {len(rejected)} rejected)"
        )
        start = time.perf_counter()
        corpus_fingerprint(root)
        print(f"fingerprint: {time.perf_counter() - start:.2f} s")
    learnability(args.probe_rows, max(args.probe_rows // 4, 4), args.frames, args.seed)


if __name__ == "__main__":
    main()
