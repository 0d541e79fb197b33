"""REACT2024 metrics on the 25-d emotion of facial reactions (DESIGN.md §6).

Inputs are numpy float arrays (float32 or float64; computed in float64):

- preds        (N, alpha, T, 25)  alpha generated reactions per speaker
- listener     (N, T, 25)         the real listener reaction of each sample
- speaker      (N, T, 25)         the speaker's emotion
- appropriate  (N, N) 0/1         M[k, j] = 1: listener j's real reaction is appropriate for speaker k

Each function reproduces the official challenge definition to float64 precision (the official code
runs parts in float32, so agreement is ~1e-6 relative), except FRDist, which sums each DTW cell's
squared differences in float32: within ~1e-6 relative of the float64 value (see `_BOUND_SLACK`).
At test size (N = 1614, alpha = 10, T = 750) every metric but FRDist takes seconds; FRDist is
compiled (numba), its candidates bounded and its DTW cells pruned, but it still costs ~2 minutes
of CPU time (see `frdist` and bench/bench_metrics.py).

Degenerate inputs, decided once here:
- a sample whose row of `appropriate` is all zero raises ValueError (the official code fails with
  `max()` of an empty list; silently dropping the sample would change the average's denominator);
- a constant (zero-variance) channel: its Pearson r is undefined (NaN) and, as in the official
  FRCorr, counts as 0; FRSyn does the same by default (see `frsyn` for the official behaviour);
- alpha = 1: FRDiv is 0.0 (no pairs; the official code's convention);
- N = 1: FRDvs is 0.0 (no pairs; the same convention).
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numba
import numpy as np

from reactdiff.data.layout import EMOTION_DIM

# FRDist channel groups (start, stop, weight): AUs, valence/arousal, expressions.
CHANNEL_GROUPS = ((0, 15, 1 / 15), (15, 17, 1.0), (17, 25, 1 / 8))
# Order in which a candidate's group DTWs are computed: valence/arousal carries the most weight
# and is the cheapest (2-d), so a losing candidate is abandoned before the 15-d AU DTW is paid.
_GROUP_ORDER = (1, 2, 0)
SYNC_MAX_LAG = 49  # FRSyn lags -49..49 (two seconds at 25 fps, minus one frame)
CCC_EPS = 1e-8
CHUNK = 64  # samples per vectorised chunk: bounds float64 temporaries to ~100 MB at T = 750

# FRDist precision and pruning margins. The DTW kernel sums each cell's squared differences in
# float32 (inputs are rounded to float32 once, see `frdist`) and the path costs in float64. Every
# cell cost is a sum of non-negative terms, each computed with a relative error of at most a few
# float32 roundings, so a cell is off by at most (d + 2)·2⁻²⁴ relative (≤ 1.1e-6 for the 15 AUs),
# and so is every path cost and the DTW² minimum (the float64 additions add ~1e-13); a DTW
# (its square root) by half that. Bounds are computed in float64 from the same float32 inputs, so
# lower bounds are shrunk and upper bounds and abandon thresholds widened by _BOUND_SLACK, ten
# times that error: the search then returns exactly the minimum of the kernel's values.
_BOUND_SLACK = 1e-5
_ABS_SLACK = 1e-12
_LB_BINS = 64  # value bins per channel for the cover lower bound


def _check(name: str, array: np.ndarray, ndim: int) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != ndim or array.shape[-1] != EMOTION_DIM:
        raise ValueError(
            f"{name}: expected a {ndim}-d array ending in {EMOTION_DIM} emotion channels, "
            f"got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name}: expected a float array, got dtype {array.dtype}")
    if not np.isfinite(array).all():
        raise ValueError(f"{name}: contains NaN or inf; fix the generator or the loaded file")
    return array


def _check_pairing(preds: np.ndarray, other: np.ndarray, other_name: str) -> None:
    if other.shape[0] != preds.shape[0] or other.shape[1] != preds.shape[2]:
        raise ValueError(
            f"{other_name}: expected shape (N={preds.shape[0]}, T={preds.shape[2]}, {EMOTION_DIM}) "
            f"to match preds {preds.shape}, got {other.shape}"
        )


def _appropriate_sets(appropriate: np.ndarray, n: int) -> list[np.ndarray]:
    """Indices j with M[k, j] = 1 for every k; raises if any sample has none."""
    appropriate = np.asarray(appropriate)
    if appropriate.shape != (n, n):
        raise ValueError(f"appropriate: expected shape ({n}, {n}), got {appropriate.shape}")
    empty = np.flatnonzero(appropriate.sum(axis=1) == 0)
    if len(empty):
        raise ValueError(
            f"appropriate: samples {empty[:10].tolist()}{'...' if len(empty) > 10 else ''} "
            f"({len(empty)} in all) have no appropriate reaction; every row needs at least one 1 "
            "(the sample's own listener is always appropriate: set the diagonal)"
        )
    return [np.flatnonzero(row) for row in appropriate]


# --------------------------------------------------------------------------- FRCorr


def _channel_stats(series: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(n, T, C) -> mean (n, C), population variance (n, C), centred values as (C, n, T)."""
    series = series.astype(np.float64)
    mean = series.mean(axis=1)
    centred = np.ascontiguousarray((series - mean[:, None]).transpose(2, 0, 1))
    return mean, (centred**2).mean(axis=-1).T, centred


def frcorr(preds: np.ndarray, listener: np.ndarray, appropriate: np.ndarray) -> float:
    """FRCorr (↑): mean over samples k of Σ_i max_{j: M[k,j]=1} mean-channel CCC(pred_i, listener_j).

    CCC = 2·r·sd_t·sd_p / (var_t + var_p + (mean_t − mean_p)² + 1e-8) with population statistics.
    2·r·sd_t·sd_p equals 2·cov, so no r is formed: a constant channel has cov = 0 (up to rounding)
    and so CCC 0 — the official value after its NaN → 0 of r.
    """
    preds = _check("preds", preds, 4)
    listener = _check("listener", listener, 3)
    _check_pairing(preds, listener, "listener")
    sets = _appropriate_sets(appropriate, preds.shape[0])
    frames = preds.shape[2]
    mean_t, var_t, centred_t = _channel_stats(listener)  # listeners once, not once per sample
    per_sample = []
    for k, candidates in enumerate(sets):
        mean_p, var_p, centred_p = _channel_stats(preds[k])
        # (C, a, T) @ (C, T, m) -> (C, a, m): one BLAS product per channel.
        cov = np.matmul(centred_p, centred_t[:, candidates].transpose(0, 2, 1)).transpose(1, 2, 0) / frames
        denom = var_p[:, None] + var_t[candidates][None] + (mean_p[:, None] - mean_t[candidates][None]) ** 2
        ccc = (2 * cov / (denom + CCC_EPS)).mean(axis=-1)  # (a, m)
        per_sample.append(ccc.max(axis=1).sum())
    return float(np.mean(per_sample))


# --------------------------------------------------------------------------- FRDist


def _lockstep_sq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(a, T, d) x (m, T, d) -> (a, m) summed squared distance along the diagonal path.

    The diagonal is one warping path, so its cost bounds DTW² from above. Computed from the Gram
    identity (cheap) and widened by the identity's worst rounding so it stays an upper bound.
    """
    norm_x = np.einsum("atd,atd->a", x, x)
    norm_y = np.einsum("mtd,mtd->m", y, y)
    cross = x.reshape(len(x), -1) @ y.reshape(len(y), -1).T
    scale = norm_x[:, None] + norm_y[None]
    return np.maximum(scale - 2 * cross, 0) * (1 + _BOUND_SLACK) + _BOUND_SLACK * scale + _ABS_SLACK


def _cover_lower_bound_sq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(a, T, d) x (m, T, d) -> (a, m) lower bound of DTW² (squared Euclidean local cost).

    A warping path visits every frame of x and every frame of y, and the multivariate path
    cost is at least the sum of each channel's own 1-d DTW. So per channel, DTW_c² ≥
    Σ_t min_s (x_t − y_s)² (x covered) and ≥ Σ_s min_t (x_t − y_s)² (y covered). The nearest
    value is bounded from below on a value histogram: a value in bin b is at least
    (|b − b'| − 1)·width from any value in bin b', so each bound becomes a histogram · table dot
    product — a few small matrix products for all pairs instead of a T×T search per pair.
    """
    lo = np.minimum(x.min(axis=(0, 1)), y.min(axis=(0, 1)))
    hi = np.maximum(x.max(axis=(0, 1)), y.max(axis=(0, 1)))
    width = np.where(hi > lo, (hi - lo) / _LB_BINS, 1.0)
    arange_bins = np.arange(_LB_BINS)

    def histogram_and_table(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n, _, d = series.shape
        bins = np.clip(((series - lo) / width).astype(np.int64), 0, _LB_BINS - 1)  # (n, T, d)
        flat = (np.arange(n)[:, None, None] * d + np.arange(d)[None, None, :]) * _LB_BINS + bins
        counts = np.bincount(flat.ravel(), minlength=n * d * _LB_BINS).reshape(n, d, _LB_BINS)
        occupied = counts > 0
        # Distance (in bins) from every bin to the nearest occupied bin, by forward/backward scans.
        last_at_or_below = np.maximum.accumulate(np.where(occupied, arange_bins, -_LB_BINS), axis=-1)
        next_at_or_above = np.minimum.accumulate(
            np.where(occupied, arange_bins, 2 * _LB_BINS)[..., ::-1], axis=-1
        )[..., ::-1]
        gap = np.minimum(arange_bins - last_at_or_below, next_at_or_above - arange_bins)
        table = (np.maximum(gap - 1, 0) * width[:, None]) ** 2
        return counts.astype(np.float64), table

    counts_x, table_x = histogram_and_table(x)
    counts_y, table_y = histogram_and_table(y)
    x_covered = np.einsum("adb,mdb->amd", counts_x, table_y)
    y_covered = np.einsum("mdb,adb->amd", counts_y, table_x)
    return np.maximum(x_covered, y_covered).sum(axis=-1) * (1 - _BOUND_SLACK)


# --- the DTW kernel (numba). Hand-rolled because no maintained library computes tslearn's DTW
# with early abandoning in compiled code that releases the GIL and vectorises: dtaidistance holds
# the GIL and runs one cell at a time (~3-5 ms per 750x750 group DTW, 5-20x slower than this).
#
# fastmath is limited to "no NaNs" and "no signed zeros": LLVM needs them to turn the `a if a < b
# else b` minimum into SIMD min instructions. Costs are finite or +inf and never negative, so both
# hold and change no value.
_DTW_FASTMATH = {"nnan", "nsz"}


@functools.cache
def _make_dtw_sq(channels: int):
    """The DTW² kernel for series of `channels` channels.

    One compiled kernel per channel count: with the count a compile-time constant the channel loop
    unrolls, each cell's squared distance is summed in registers and the loop over the cells of an
    anti-diagonal vectorises, so x and y are read once per cell and no cost buffer is written.
    """

    @numba.njit(nogil=True, fastmath=_DTW_FASTMATH, cache=True)
    def dtw_sq(x: np.ndarray, y_reversed: np.ndarray, limit_sq: float, diagonals: np.ndarray) -> float:
        """DTW² (summed squared Euclidean cost of the best warping path) of x (d, n) and y (d, m),
        float32, channel-major, y reversed in time; inf as soon as it provably exceeds limit_sq.

        The cumulative-cost matrix D(i, j) = c(i, j) + min(D(i-1, j-1), D(i-1, j), D(i, j-1)) is
        filled one anti-diagonal k = i + j at a time: cells of one anti-diagonal do not depend on
        each other, so the loop over them runs over contiguous memory and compiles to SIMD (y is
        reversed so that y[k - i] walks forwards with i). c(i, j) is summed in float32, D in
        float64 (see _BOUND_SLACK for the error). Only the last three anti-diagonals are kept,
        indexed by i + 1.

        Pruning (PrunedDTW, Silva & Batista 2016): partial costs only grow along a path, so a cell
        with D > limit_sq is dead — no path through it ends within the limit — and a cell whose
        predecessors are all dead need not be computed. Each anti-diagonal is computed only over
        the rows next to the alive rows of the two before it, then its alive range is trimmed
        from both ends; the cells just outside it read as +inf. This skips the cells far from the warping path
        and never changes a value ≤ limit_sq. Every warping path has a cell on one of any two
        consecutive anti-diagonals, so once both are dead the DTW² exceeds the limit (early
        abandoning). `diagonals` (3, n + 2) float64 is scratch, overwritten.
        """
        n = x.shape[1]
        m = y_reversed.shape[1]
        diagonals[:] = np.inf
        diagonals[0, 0] = 0.0  # D(-1, -1) = 0: the path starts at (0, 0)
        # Alive rows (D ≤ limit_sq) of the anti-diagonals one and two back; empty: (n, -1).
        lo_one_back, hi_one_back = n, -1
        lo_two_back, hi_two_back = -1, -1  # the start, D(-1, -1)
        for k in range(n + m - 1):
            # Cell (i, k - i) extends row i - 1 two back and rows i - 1 and i one back.
            lo = max(min(lo_one_back, lo_two_back + 1), max(0, k - m + 1))
            hi = min(max(hi_one_back, hi_two_back) + 1, min(k, n - 1))
            if lo > hi:  # nothing alive before can reach this anti-diagonal: the last two are dead
                return np.inf
            two_back, one_back, current = diagonals[k % 3], diagonals[(k + 1) % 3], diagonals[(k + 2) % 3]
            # Unsigned indices: numba wraps negative signed indices around, and that per-access
            # check keeps LLVM from vectorising the loop. All indices here are ≥ 0.
            first_i = np.uint64(lo)
            first_j = np.uint64(lo + m - 1 - k)  # y[k - i] = y_reversed[i + m - 1 - k]
            for t in range(np.uint64(hi - lo + 1)):
                i = first_i + t
                j = first_j + t
                cell = np.float32(0.0)
                for c in range(channels):
                    diff = x[c, i] - y_reversed[c, j]
                    cell += diff * diff
                best = two_back[i]
                above = one_back[i]
                best = above if above < best else best
                left = one_back[i + np.uint64(1)]
                best = left if left < best else best
                current[i + np.uint64(1)] = np.float64(cell) + best
            # The rows just outside the computed range are read by the next two anti-diagonals
            # (which never read further out): +inf, not a value left from three diagonals back.
            current[lo] = np.inf
            current[hi + 2] = np.inf
            while lo <= hi and current[lo + 1] > limit_sq:
                lo += 1
            while hi >= lo and current[hi + 1] > limit_sq:
                hi -= 1
            if lo > hi:
                if lo_one_back > hi_one_back:
                    return np.inf
                lo, hi = n, -1
            lo_two_back, hi_two_back = lo_one_back, hi_one_back
            lo_one_back, hi_one_back = lo, hi
        return diagonals[(n + m) % 3, n]

    return dtw_sq


_dtw_sq_aus, _dtw_sq_valence_arousal, _dtw_sq_expressions = (
    _make_dtw_sq(stop - start) for start, stop, _ in CHANNEL_GROUPS
)


@numba.njit(nogil=True, cache=True)
def _group_dtw_sq(group: int, x: np.ndarray, y_reversed: np.ndarray, limit_sq: float, diagonals: np.ndarray) -> float:
    """The kernel compiled for CHANNEL_GROUPS[group]'s channel count."""
    if group == 0:
        return _dtw_sq_aus(x, y_reversed, limit_sq, diagonals)
    if group == 1:
        return _dtw_sq_valence_arousal(x, y_reversed, limit_sq, diagonals)
    return _dtw_sq_expressions(x, y_reversed, limit_sq, diagonals)


@numba.njit(nogil=True, cache=True)
def _search_sum_of_min(
    pred_groups: tuple, target_groups: tuple, weights: np.ndarray, upper: np.ndarray, weighted_lower: np.ndarray
) -> float:
    """Σ over predictions i of min over targets j of Σ_g w_g·DTW_g(pred_i, target_j).

    pred_groups[g] (a, d_g, T) and target_groups[g] (m, d_g, T, reversed in time) are the channel
    groups, channel-major. upper (a, m) bounds the weighted distance from above, weighted_lower
    (a, m, groups) each group's weighted DTW from below. Candidates are tried in order of their
    upper bound (likely winners first, so the best-so-far is tight early); one whose lower bound
    exceeds the best so far is skipped, and each group DTW gets only the budget left once the
    groups already computed and the lower bounds of those still to come are paid.
    """
    n_preds, n_targets = upper.shape
    frames = pred_groups[0].shape[2]
    diagonals = np.empty((3, frames + 2))
    lower = weighted_lower.sum(axis=2)
    total = 0.0
    for i in range(n_preds):
        order = np.argsort(upper[i], kind="mergesort")
        threshold = upper[i, order[0]]
        best = np.inf
        for j in order:
            if lower[i, j] > threshold:
                continue
            spent = 0.0
            still_to_come = lower[i, j]
            for g in _GROUP_ORDER:
                still_to_come -= weighted_lower[i, j, g]
                budget = (threshold - spent - still_to_come) / weights[g]
                if budget < 0:
                    spent = np.inf
                    break
                limit = budget * (1 + _BOUND_SLACK) + _ABS_SLACK
                distance_sq = _group_dtw_sq(g, pred_groups[g][i], target_groups[g][j], limit * limit, diagonals)
                if distance_sq == np.inf:
                    spent = np.inf
                    break
                spent += weights[g] * np.sqrt(distance_sq)
            if spent < best:
                best = threshold = spent
        total += best
    return total


def _sum_of_min_distances(preds: np.ndarray, targets: np.ndarray) -> float:
    """Σ over the a predictions of min over the m targets of the weighted group DTW.

    The kernel reads float32 series; the bounds are computed in float64 from the same float32
    values, so bounds and DTWs describe the same inputs.
    """
    preds = preds.astype(np.float32)
    targets = targets.astype(np.float32)
    pred_groups = [preds[..., a:b].astype(np.float64) for a, b, _ in CHANNEL_GROUPS]
    target_groups = [targets[..., a:b].astype(np.float64) for a, b, _ in CHANNEL_GROUPS]
    weights = np.array([w for _, _, w in CHANNEL_GROUPS])
    upper = sum(w * np.sqrt(_lockstep_sq(x, y)) for w, x, y in zip(weights, pred_groups, target_groups))
    weighted_lower = np.stack(
        [w * np.sqrt(_cover_lower_bound_sq(x, y)) for w, x, y in zip(weights, pred_groups, target_groups)],
        axis=-1,
    )  # (a, m, groups)
    return _search_sum_of_min(
        tuple(np.ascontiguousarray(preds[..., a:b].transpose(0, 2, 1)) for a, b, _ in CHANNEL_GROUPS),
        tuple(np.ascontiguousarray(targets[:, ::-1, a:b].transpose(0, 2, 1)) for a, b, _ in CHANNEL_GROUPS),
        weights, upper, weighted_lower,
    )


def frdist(
    preds: np.ndarray, listener: np.ndarray, appropriate: np.ndarray, workers: int | None = None
) -> float:
    """FRDist (↓): mean over samples k of Σ_i min_{j: M[k,j]=1} Σ_g w_g·DTW_g(pred_i, listener_j).

    Groups g = AUs 0–15 (w 1/15), valence/arousal 15–17 (w 1), expressions 17–25 (w 1/8); DTW is
    tslearn's: sqrt of the summed squared Euclidean distances along the optimal warping path,
    unconstrained. Inputs are rounded to float32 once (REACT2024's emotion data are float32; for
    float64 inputs this moves a DTW by at most 2⁻²⁴·(‖x‖ + ‖y‖) along its path) and each cell's
    squared distance is summed in float32, the path costs in float64: every DTW is within ~1e-6
    relative of the float64 DTW of those float32 values (see `_BOUND_SLACK`; the challenge asks
    for 1e-5). Pruning never changes the result: it is the minimum of full DTWs. The speed comes
    from a compiled, vectorised DTW (`_make_dtw_sq`), from skipping candidates that provably
    cannot be the minimum (histogram lower bounds against the best so far, seeded by the
    diagonal-path upper bound), from abandoning a DTW as soon as its partial cost passes the
    best so far, and from pruning the cells whose partial cost already does (only the band of
    cells around the cheap paths is computed).

    `workers` threads (default: the CPUs this process may use) share the samples; the DTW search
    releases the GIL. The first call in a fresh environment compiles the kernel (a few seconds,
    then cached on disk by numba).

    Cost: a full three-group DTW is ~1.5-2 ms CPU at T = 750 (one kernel per group width, so
    each cell's channels are summed in float32 registers). On emotion-like data whose ~20
    appropriate reactions are all about equally close, the other groups' lower bounds are loose,
    so every candidate's 2-d valence/arousal DTW (which decides the winner) gets a loose budget
    and runs. Pruning dead cells cuts the cells computed from 83 % to 56 % of the started DTWs'
    matrices, from 25 to 17 single-group 750 x 750 matrices per prediction (valence/arousal
    17 -> 10): ~8 ms CPU per prediction, 135 CPU-s at test size (bench/bench_metrics.py,
    2 threads, shared 2-core AMD EPYC; 169 before pruning, 341 with the float64 kernel). Adding a
    per-frame suffix lower bound (bounding boxes of 25-75-frame blocks of the other series) to the
    pruning cost more to compute than it saved.
    """
    preds = _check("preds", preds, 4)
    listener = _check("listener", listener, 3)
    _check_pairing(preds, listener, "listener")
    sets = _appropriate_sets(appropriate, preds.shape[0])
    workers = min(workers or _usable_cpus(), len(sets))

    def sample_distance(k: int) -> float:
        return _sum_of_min_distances(preds[k], listener[sets[k]])

    if workers <= 1:
        return float(np.mean([sample_distance(k) for k in range(len(sets))]))
    with ThreadPoolExecutor(workers) as pool:
        return float(np.mean(list(pool.map(sample_distance, range(len(sets))))))


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


# --------------------------------------------------------------------------- diversity


def frdiv(preds: np.ndarray) -> float:
    """FRDiv (↑): per sample, Σ_{i≠j} ‖y_i − y_j‖² / (α(α−1)·T·25), averaged over samples.

    Uses Σ_{i≠j} ‖y_i − y_j‖² = 2α Σ_i ‖y_i − ȳ‖² (exact, and stable: identical predictions
    give exactly 0). α = 1 has no pairs: 0.0, the official code's value.
    """
    preds = _check("preds", preds, 4)
    n, alpha, frames, channels = preds.shape
    if alpha == 1:
        return 0.0
    spread = 0.0
    for start in range(0, n, CHUNK):
        chunk = preds[start : start + CHUNK].astype(np.float64)
        spread += ((chunk - chunk.mean(axis=1, keepdims=True)) ** 2).sum()
    return float(2 * alpha * spread / (alpha * (alpha - 1) * frames * channels) / n)


def frdvs(preds: np.ndarray) -> float:
    """FRDvs (↑): per prediction index i, Σ_{n≠m} ‖y_i^n − y_i^m‖² / (N(N−1)·α·T·25), summed over i.

    Same pair identity as `frdiv`, across samples. N = 1 has no pairs: 0.0.
    """
    preds = _check("preds", preds, 4)
    n, alpha, frames, channels = preds.shape
    if n == 1:
        return 0.0
    mean = np.zeros(preds.shape[1:])
    for start in range(0, n, CHUNK):
        mean += preds[start : start + CHUNK].sum(axis=0, dtype=np.float64)
    mean /= n
    spread = 0.0
    for start in range(0, n, CHUNK):
        spread += ((preds[start : start + CHUNK].astype(np.float64) - mean) ** 2).sum()
    return float(2 * n * spread / (n * (n - 1) * alpha * frames * channels))


def frvar(preds: np.ndarray) -> float:
    """FRVar (↑): unbiased variance over time of each channel, averaged over samples, predictions
    and channels (T ≥ 2)."""
    preds = _check("preds", preds, 4)
    if preds.shape[2] < 2:
        raise ValueError(f"preds: FRVar needs at least 2 frames, got shape {preds.shape}")
    total = sum(
        np.var(preds[start : start + CHUNK], axis=2, ddof=1, dtype=np.float64).sum()
        for start in range(0, len(preds), CHUNK)
    )
    n, alpha, _, channels = preds.shape
    return float(total / (n * alpha * channels))


# --------------------------------------------------------------------------- FRSyn


def _lagged_pearson(x: np.ndarray, y: np.ndarray, max_lag: int) -> np.ndarray:
    """(..., C, T) x (..., C, T) (broadcastable) -> (..., C, 2·max_lag+1): Pearson r of x[t + lag]
    with y[t] for lag = −max_lag..max_lag.

    Lag l pairs x[l:] with y[:T−l] (l ≥ 0) and x[:T+l] with y[−l:] (l < 0), as the official
    `shift`. Window sums come from prefix sums and the cross term from one FFT cross-correlation,
    so all lags cost about one pass over the data. A window that is exactly constant gives NaN
    (its r is undefined); constancy is decided exactly from where the series first and last change.
    """
    frames = x.shape[-1]
    lags = np.arange(-max_lag, max_lag + 1)
    x_start, x_stop = np.maximum(lags, 0), frames + np.minimum(lags, 0)
    y_start, y_stop = np.maximum(-lags, 0), frames - np.maximum(lags, 0)

    def constant_windows(values: np.ndarray, start: np.ndarray, stop: np.ndarray) -> np.ndarray:
        changes = values[..., 1:] != values[..., :-1]  # changes[..., t-1]: values[t] != values[t-1]
        any_change = changes.any(axis=-1, keepdims=True)
        first = np.where(any_change, changes.argmax(axis=-1)[..., None] + 1, frames)
        last = np.where(any_change, frames - 1 - changes[..., ::-1].argmax(axis=-1)[..., None], 0)
        # Every window is a prefix (start = 0) or a suffix (stop = T): a prefix is constant iff
        # the first change is at or after stop, a suffix iff the last change is at or before start.
        return (first >= stop) | (last <= start)

    constant = constant_windows(x, x_start, x_stop) | constant_windows(y, y_start, y_stop)

    x = x - x.mean(axis=-1, keepdims=True)  # centring keeps the window sums well conditioned
    y = y - y.mean(axis=-1, keepdims=True)
    n_fft = 1 << int(np.ceil(np.log2(frames + max_lag)))  # no circular wrap-around
    spectrum = np.fft.rfft(x, n=n_fft) * np.conj(np.fft.rfft(y, n=n_fft))
    cross = np.fft.irfft(spectrum, n=n_fft)[..., lags % n_fft]  # cross[..., l] = Σ_t x[t + l] y[t]

    def window_sums(values: np.ndarray, start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        prefix = np.zeros(values.shape[:-1] + (frames + 1,))
        np.cumsum(values, axis=-1, out=prefix[..., 1:])
        prefix_sq = np.zeros_like(prefix)
        np.cumsum(values * values, axis=-1, out=prefix_sq[..., 1:])
        return prefix[..., stop] - prefix[..., start], prefix_sq[..., stop] - prefix_sq[..., start]

    length = (frames - np.abs(lags)).astype(np.float64)
    sum_x, sum_xx = window_sums(x, x_start, x_stop)
    sum_y, sum_yy = window_sums(y, y_start, y_stop)
    cov = cross - sum_x * sum_y / length
    var_x = sum_xx - sum_x**2 / length
    var_y = sum_yy - sum_y**2 / length
    constant |= (var_x <= 0) | (var_y <= 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.clip(cov / np.sqrt(var_x * var_y), -1.0, 1.0)
    return np.where(constant, np.nan, r)


def frsyn(
    preds: np.ndarray,
    speaker: np.ndarray,
    all_predictions: bool = False,
    max_lag: int = SYNC_MAX_LAG,
    constant_channels: Literal["zero", "official"] = "zero",
) -> float:
    """FRSyn (↓): mean |offset| of the time-lagged cross-correlation peak with the speaker.

    At each lag −max_lag..max_lag the per-channel Pearson r are averaged over channels; the
    offset is max_lag − argmax (first maximum on ties), i.e. minus the peak lag. The official
    score uses the first prediction of each sample; `all_predictions=True` averages over all α.

    A channel that is constant over a lag window has no Pearson r. `constant_channels="zero"`
    (default) counts it as r = 0, like FRCorr's NaN → 0, so one flat AU cannot decide the
    score. `"official"` reproduces the official code: the NaN makes that lag's mean NaN,
    numpy's argmax returns the first NaN, and a channel constant over the whole clip yields an
    offset of max_lag (49) whatever the other 24 channels do.
    """
    preds = _check("preds", preds, 4)
    speaker = _check("speaker", speaker, 3)
    _check_pairing(preds, speaker, "speaker")
    n, alpha, frames, _ = preds.shape
    if not 0 <= max_lag <= frames - 2:
        raise ValueError(f"max_lag: expected 0..T-2={frames - 2} (two frames overlap at least), got {max_lag}")
    if constant_channels not in ("zero", "official"):
        raise ValueError(f"constant_channels: expected 'zero' or 'official', got {constant_channels!r}")
    used = alpha if all_predictions else 1
    chunk = max(1, CHUNK // used)  # about CHUNK series per step
    offsets = []
    for start in range(0, n, chunk):
        # Time last, so FFTs and prefix sums run over contiguous memory.
        x = preds[start : start + chunk, :used].astype(np.float64).transpose(0, 1, 3, 2)
        y = speaker[start : start + chunk, None].astype(np.float64).transpose(0, 1, 3, 2)
        r = _lagged_pearson(x, y, max_lag)  # (chunk, used, C, lags)
        if constant_channels == "zero":
            r = np.nan_to_num(r, nan=0.0)
        peak = np.argmax(r.mean(axis=-2), axis=-1)
        offsets.append(np.abs(max_lag - peak).ravel())
    return float(np.concatenate(offsets).mean())


# --------------------------------------------------------------------------- FRRea


def _gaussian_fit(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (..., 25) per-frame vectors, in chunks, float64."""
    rows = frames.reshape(-1, EMOTION_DIM)
    step = CHUNK * 750
    mean = sum(rows[s : s + step].sum(axis=0, dtype=np.float64) for s in range(0, len(rows), step)) / len(rows)
    scatter = np.zeros((EMOTION_DIM, EMOTION_DIM))
    for s in range(0, len(rows), step):
        centred = rows[s : s + step].astype(np.float64) - mean
        scatter += centred.T @ centred
    return mean, scatter / max(len(rows) - 1, 1)


def frrea(preds: np.ndarray, listener: np.ndarray) -> float:
    """Feature-space Fréchet distance (↓) — NOT the official FRRea.

    The official FRRea is an image FID between rendered faces of generated and real reactions
    (it needs a face renderer and Inception weights). This is its analogue on the 25-d emotion:
    every frame is one item, as every rendered frame is an image for FID; a Gaussian is fitted
    to all generated frames (N·α·T) and to all real listener frames (N·T), and
    ‖μ_g − μ_r‖² + Tr(Σ_g + Σ_r − 2(Σ_g Σ_r)^½). The trace of the matrix square root is taken
    from the eigenvalues of Σ_r^½ Σ_g Σ_r^½ (symmetric PSD, so no complex round-off).
    Values are not comparable with published FRRea numbers.
    """
    preds = _check("preds", preds, 4)
    listener = _check("listener", listener, 3)
    mean_g, cov_g = _gaussian_fit(preds)
    mean_r, cov_r = _gaussian_fit(listener)
    eigval, eigvec = np.linalg.eigh(cov_r)
    sqrt_r = (eigvec * np.sqrt(np.clip(eigval, 0, None))) @ eigvec.T
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(sqrt_r @ cov_g @ sqrt_r), 0, None)).sum()
    return float(((mean_g - mean_r) ** 2).sum() + np.trace(cov_g) + np.trace(cov_r) - 2 * trace_sqrt)


# --------------------------------------------------------------------------- all


def compute_all(
    preds: np.ndarray,
    listener: np.ndarray,
    speaker: np.ndarray,
    appropriate: np.ndarray,
    workers: int | None = None,
) -> dict[str, float]:
    """Every metric: FRCorr, FRDist, FRDiv, FRDvs, FRVar, FRSyn (first prediction, official),
    FRSyn_all (all α predictions) and FRRea (our feature-space Fréchet distance)."""
    # Clips shorter than the official ±49-frame lag window (tests, short demos) use the widest
    # window they allow; REACT2024's 750-frame clips always get the official 49.
    max_lag = min(SYNC_MAX_LAG, preds.shape[2] - 2)
    return {
        "FRCorr": frcorr(preds, listener, appropriate),
        "FRDist": frdist(preds, listener, appropriate, workers=workers),
        "FRDiv": frdiv(preds),
        "FRDvs": frdvs(preds),
        "FRVar": frvar(preds),
        "FRSyn": frsyn(preds, speaker, max_lag=max_lag),
        "FRSyn_all": frsyn(preds, speaker, all_predictions=True, max_lag=max_lag),
        "FRRea": frrea(preds, listener),
    }
