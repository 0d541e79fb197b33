"""FRDist's search: for each prediction, the nearest appropriate listener by weighted DTW.

`metrics.frdist` defines the metric; this module finds its minima fast and exactly, in numba:
- a compiled, vectorised DTW (`_make_dtw_sq`) that abandons a DTW as soon as its partial cost
  passes the best so far, and prunes the cells whose partial cost already does (only the band of
  cells around the cheap paths is computed);
- each prediction's candidates tried nearest first, as estimated by a coarse valence/arousal DTW
  (means of 10-frame blocks), so the best-so-far is about final after the first candidate;
- lower bounds (value histograms per channel, frame boxes for the AUs) that skip candidates and
  tighten each group DTW's budget, and an upper bound (the diagonal path) to start from.

Cost: a full three-group DTW is ~1.5-2 ms CPU at T = 750. On emotion-like data the ~20
appropriate reactions are all within a few % of each other, valence/arousal making ~3/4 of the
distance and nearly all of its spread, so every candidate's 2-d valence/arousal DTW runs (most
are abandoned part-way) and the AU and expression DTWs mostly only for the nearest: ~13.5
single-group 750 x 750 matrices per prediction (valence/arousal 9.4, expressions 2.6, AUs 1.5),
~5.5 ms CPU. At test size (bench/bench_metrics.py --per-metric, 2 threads, shared 2-core AMD
EPYC): 91 CPU-s, 47 s; 134 CPU-s, 68 s with the candidates in upper-bound order, histogram bounds
only and the bounds in numpy (169 CPU-s before pruning dead cells, 341 with the float64 kernel).
Tried and dropped: a per-frame suffix lower bound inside the DTW, and frame boxes for
valence/arousal and the expressions (each cost more than it saved).

Compilation. Every kernel is declared with its numba signature, so it is compiled when this
module is imported, never on a first call (a kernel called with other types raises TypeError
instead of compiling again: `prepare_targets` and `sum_of_min_distances` hand the kernels
exactly these types). With `cache=True` the machine code is compiled once per install, ~20 s,
and loaded from numba's cache by every later process. Numba picks the cache folder: the
`__pycache__` next to this file where that is writable (a checkout; a Ray job's copy of its
working dir, per node and per upload), else `~/.cache/numba` (a read-only site-packages);
NUMBA_CACHE_DIR, where set, comes first, for hosts where neither is writable. This module sets
none of them.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numba
import numpy as np
from numba import types

# FRDist channel groups (start, stop, weight): AUs, valence/arousal, expressions.
CHANNEL_GROUPS = ((0, 15, 1 / 15), (15, 17, 1.0), (17, 25, 1 / 8))
_AUS, _VALENCE_AROUSAL, _EXPRESSIONS = 0, 1, 2  # indices into CHANNEL_GROUPS
# Order in which a candidate's group DTWs are computed: valence/arousal carries the most weight
# (~3/4 of the distance on emotion-like data, and nearly all of its spread over the candidates)
# and is the cheapest (2-d), so a losing candidate is abandoned before the 15-d AU DTW is paid.
_GROUP_ORDER = (_VALENCE_AROUSAL, _EXPRESSIONS, _AUS)

# Precision and pruning margins. The DTW kernel sums each cell's squared differences in float32
# (inputs are rounded to float32 once, see `metrics.frdist`) and the path costs in float64. Every
# cell cost is a sum of non-negative terms, each computed with a relative error of at most a few
# float32 roundings, so a cell is off by at most (d + 2)·2⁻²⁴ relative (≤ 1.1e-6 for the 15 AUs),
# and so is every path cost and the DTW² minimum (the float64 additions add ~1e-13); a DTW
# (its square root) by half that. Bounds are computed in float64 from the same float32 inputs, so
# lower bounds are shrunk and upper bounds and abandon thresholds widened by _BOUND_SLACK, ten
# times that error: the search then returns exactly the minimum of the kernel's values.
_BOUND_SLACK = 1e-5
_ABS_SLACK = 1e-12
_LB_BINS = 64  # value bins per channel for the histogram cover lower bound
# Frame boxes for the AU cover lower bound: at most this many per prediction / per listener (a
# binary-AU listener has ~100 distinct frames; a smooth prediction gets blocks of 10 frames).
_PRED_BOXES = 75
_TARGET_BOXES = 150
_COARSE_BLOCK = 10  # frames per block mean for the coarse valence/arousal DTW that orders candidates

# The kernels' argument types (numba signatures): C-contiguous, aligned, writable arrays.
_F32_2D, _F32_3D = types.float32[:, ::1], types.float32[:, :, ::1]
_F64_1D, _F64_2D, _F64_3D = types.float64[::1], types.float64[:, ::1], types.float64[:, :, ::1]
_I64_1D = types.int64[::1]
_GROUPS = types.UniTuple(_F32_3D, len(CHANNEL_GROUPS))  # one (s, d, T) array per channel group
_HISTOGRAMS = types.UniTuple(_F64_3D, 2)  # `_value_histograms`: counts, gap tables
_BOXES = types.Tuple((_F32_3D, _F32_3D, _F64_2D, _I64_1D))  # `_frame_boxes`: lo, hi, counts, boxes used
_DTW_SIGNATURE = (_F32_2D, _F32_2D, types.float64, _F64_2D)


# --------------------------------------------------------------------------- the DTW kernel
# Hand-rolled because no maintained library computes tslearn's DTW with early abandoning in
# compiled code that releases the GIL and vectorises: dtaidistance holds the GIL and runs one cell
# at a time (~3-5 ms per 750x750 group DTW, 5-20x slower than this).
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

    @numba.njit([_DTW_SIGNATURE], nogil=True, fastmath=_DTW_FASTMATH, cache=True)
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


@numba.njit([(types.int64, *_DTW_SIGNATURE)], nogil=True, cache=True)
def _group_dtw_sq(group: int, x: np.ndarray, y_reversed: np.ndarray, limit_sq: float, diagonals: np.ndarray) -> float:
    """The kernel compiled for CHANNEL_GROUPS[group]'s channel count."""
    if group == 0:
        return _dtw_sq_aus(x, y_reversed, limit_sq, diagonals)
    if group == 1:
        return _dtw_sq_valence_arousal(x, y_reversed, limit_sq, diagonals)
    return _dtw_sq_expressions(x, y_reversed, limit_sq, diagonals)


# --------------------------------------------------------------------------- bounds and search
# Bounds that let the search skip candidates and tighten DTW budgets.


@numba.njit([(_F32_3D, types.int64, types.int64, types.boolean, types.int64)], nogil=True, cache=True)
def _channel_major(series: np.ndarray, start: int, stop: int, reverse: bool, block: int) -> np.ndarray:
    """(s, T, C) -> (s, stop − start, ⌈T / block⌉) float32: channels start..stop-1, channel-major
    (the DTW kernel's layout), time reversed if `reverse`, frames averaged over blocks of `block`
    (the last block may be shorter; 1: the frames as they are)."""
    n_series, frames, _ = series.shape
    n_blocks = -(-frames // block)
    out = np.empty((n_series, stop - start, n_blocks), dtype=np.float32)
    for a in range(n_series):
        for c in range(start, stop):
            for b in range(n_blocks):
                first, last = b * block, min(frames, (b + 1) * block)
                total = 0.0
                for t in range(first, last):
                    total += series[a, t, c]
                out[a, c - start, n_blocks - 1 - b if reverse else b] = total / (last - first)
    return out


@numba.njit([(_F32_3D, _F32_3D, _I64_1D)], nogil=True, cache=True)
def _coarse_dtw_sq(pred_coarse: np.ndarray, target_coarse: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(a, m) DTW² of the block means (`_channel_major` with block > 1) of the valence/arousal
    channels: a cheap estimate of which candidate is nearest, to try it first (not a bound)."""
    n_preds = pred_coarse.shape[0]
    estimate = np.empty((n_preds, len(candidates)))
    diagonals = np.empty((3, pred_coarse.shape[2] + 2))
    for i in range(n_preds):
        for jj in range(len(candidates)):
            target = target_coarse[candidates[jj]]
            estimate[i, jj] = _dtw_sq_valence_arousal(pred_coarse[i], target, np.inf, diagonals)
    return estimate


@numba.njit([(_F32_3D, _F32_3D, _I64_1D)], nogil=True, cache=True)
def _lockstep_upper(preds: np.ndarray, targets: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    """(a, T, C) preds x targets[candidates] -> (a, m) upper bound of the weighted distance.

    The diagonal is one warping path, so its cost bounds each group's DTW² from above; summed in
    float64 and widened by _BOUND_SLACK so it also bounds the kernel's float32-cell value.
    """
    n_preds, frames, channels = preds.shape
    upper = np.empty((n_preds, len(candidates)))
    per_channel = np.empty(channels)
    for i in range(n_preds):
        for jj in range(len(candidates)):
            target = targets[candidates[jj]]
            per_channel[:] = 0.0
            for t in range(frames):
                for c in range(channels):
                    diff = np.float64(preds[i, t, c]) - np.float64(target[t, c])
                    per_channel[c] += diff * diff
            total = 0.0
            for start, stop, weight in CHANNEL_GROUPS:
                cost_sq = per_channel[start:stop].sum()
                total += weight * np.sqrt(cost_sq * (1 + _BOUND_SLACK) + _ABS_SLACK)
            upper[i, jj] = total
    return upper


@numba.njit([(_F32_3D, _F64_1D, _F64_1D)], nogil=True, cache=True)
def _value_histograms(series: np.ndarray, lo: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(s, T, C) -> counts and gap tables, each (s, C, _LB_BINS) float64, for `_cover_lower_bounds`.

    Channel c's values fall in bins of width[c] from lo[c] (at or below every value). counts: the
    frames per bin. tables[a, c, b]: the squared distance from any value in bin b to the nearest
    value of series a's channel c is at least (max(gap − 1, 0)·width)², gap the bin distance from
    b to the nearest occupied bin (one bin of slack for where in its bin a value lies).
    """
    n_series, frames, channels = series.shape
    counts = np.zeros((n_series, channels, _LB_BINS))
    tables = np.empty((n_series, channels, _LB_BINS))
    for a in range(n_series):
        for t in range(frames):
            for c in range(channels):
                bin_index = int((np.float64(series[a, t, c]) - lo[c]) / width[c])
                counts[a, c, min(max(bin_index, 0), _LB_BINS - 1)] += 1.0
        for c in range(channels):
            # Bin distance to the nearest occupied bin: below by a forward scan, above backward.
            nearest = -2 * _LB_BINS
            for b in range(_LB_BINS):
                if counts[a, c, b] > 0:
                    nearest = b
                tables[a, c, b] = b - nearest
            nearest = 3 * _LB_BINS
            for b in range(_LB_BINS - 1, -1, -1):
                if counts[a, c, b] > 0:
                    nearest = b
                gap = min(tables[a, c, b], nearest - b)
                tables[a, c, b] = (max(gap - 1, 0) * width[c]) ** 2
    return counts, tables


@numba.njit([(_F32_3D, types.int64, types.int64, types.int64)], nogil=True, cache=True)
def _frame_boxes(series: np.ndarray, start: int, stop: int, max_boxes: int) -> tuple:
    """Boxes covering the frames of each (T, C) series over channels start..stop-1, for
    `_box_cover_sq`: (lo, hi) (s, d, max_boxes) channel-major, frame counts (s, max_boxes), and
    the number of boxes used per series (s,).

    The boxes are the distinct frames (zero-width, exact) if there are at most max_boxes of
    them, as for binary AUs, else blocks of consecutive frames (tight for smooth series).
    """
    n_series, frames, _ = series.shape
    channels = stop - start
    lo = np.empty((n_series, channels, max_boxes), dtype=np.float32)
    hi = np.empty((n_series, channels, max_boxes), dtype=np.float32)
    counts = np.zeros((n_series, max_boxes))
    n_boxes = np.empty(n_series, dtype=np.int64)
    for a in range(n_series):
        used = 0
        for t in range(frames):
            match = -1
            for b in range(used):
                same = True
                for c in range(channels):
                    if lo[a, c, b] != series[a, t, start + c]:
                        same = False
                        break
                if same:
                    match = b
                    break
            if match < 0 and used == max_boxes:
                used = -1  # too many distinct frames
                break
            if match < 0:
                match = used
                used += 1
                for c in range(channels):
                    lo[a, c, match] = hi[a, c, match] = series[a, t, start + c]
            counts[a, match] += 1.0
        if used < 0:
            block = -(-frames // max_boxes)
            used = -(-frames // block)
            for b in range(used):
                first, last = b * block, min(frames, (b + 1) * block)
                counts[a, b] = last - first
                for c in range(channels):
                    values = series[a, first:last, start + c]
                    lo[a, c, b] = values.min()
                    hi[a, c, b] = values.max()
        n_boxes[a] = used
    return lo, hi, counts, n_boxes


@numba.njit([(_BOXES, types.int64, _BOXES, types.int64)], nogil=True, fastmath=_DTW_FASTMATH, cache=True)
def _box_cover_sq(x_boxes: tuple, i: int, y_boxes: tuple, j: int) -> float:
    """Lower bound of the multivariate DTW² of series i of `x_boxes` and series j of `y_boxes`
    (`_frame_boxes` of each): the cover bound Σ_t min_s ‖x_t − y_s‖² (and the same with y's frames),
    each frame's nearest distance bounded by the distance between its box and the nearest box
    of the other series. Unlike the histogram bound it keeps the channels of a frame together.

    Box distances are summed in float32 (twice the SIMD width; the box edges are float32 values):
    ≤ (d + 3)·2⁻²⁴ relative above the exact one, well inside _BOUND_SLACK.
    """
    x_lo, x_hi, x_counts, x_used = x_boxes
    y_lo, y_hi, y_counts, y_used = y_boxes
    n_x, n_y = x_used[i], y_used[j]
    nearest_to_x = np.full(n_x, np.inf, dtype=np.float32)
    distance = np.empty(n_x, dtype=np.float32)
    y_covered = 0.0
    for q in range(n_y):
        distance[:] = 0.0
        for c in range(x_lo.shape[1]):
            lo_q, hi_q = y_lo[j, c, q], y_hi[j, c, q]
            x_lo_c, x_hi_c = x_lo[i, c], x_hi[i, c]
            for p in range(n_x):
                below, above = lo_q - x_hi_c[p], x_lo_c[p] - hi_q
                gap = below if below > above else above
                gap = gap if gap > 0 else np.float32(0.0)
                distance[p] += gap * gap
        nearest = np.float32(np.inf)
        for p in range(n_x):
            nearest = min(nearest, distance[p])
            nearest_to_x[p] = min(nearest_to_x[p], distance[p])
        y_covered += y_counts[j, q] * nearest
    x_covered = 0.0
    for p in range(n_x):
        x_covered += x_counts[i, p] * nearest_to_x[p]
    return max(x_covered, y_covered)


@numba.njit([(_HISTOGRAMS, _HISTOGRAMS, _BOXES, _BOXES, _I64_1D)], nogil=True, cache=True)
def _cover_lower_bounds(
    pred_histograms: tuple, target_histograms: tuple, pred_boxes: tuple, target_boxes: tuple, candidates: np.ndarray
) -> np.ndarray:
    """(a, m, groups) lower bounds of each group's weighted DTW.

    A warping path visits every frame of x and every frame of y, so DTW² ≥ Σ_t min_s ‖x_t − y_s‖²
    (x covered) and ≥ Σ_s min_t ‖x_t − y_s‖² (y covered). Per channel (the multivariate cost is at
    least the sum of each channel's own 1-d DTW) both are bounded on value histograms (see
    `_value_histograms`): a dot product of one series' counts with the other's gap table. For
    the AUs the frame boxes of `_box_cover_sq` keep a frame's channels together, which bounds
    the AU DTW about twice as tightly; valence/arousal and expressions gain little from them.
    """
    pred_counts, pred_tables = pred_histograms
    target_counts, target_tables = target_histograms
    n_preds = pred_counts.shape[0]
    weighted_lower = np.empty((n_preds, len(candidates), len(CHANNEL_GROUPS)))
    for i in range(n_preds):
        for jj in range(len(candidates)):
            j = candidates[jj]
            for g in range(len(CHANNEL_GROUPS)):
                start, stop, weight = CHANNEL_GROUPS[g]
                cost_sq = 0.0
                for c in range(start, stop):
                    x_covered = 0.0
                    y_covered = 0.0
                    for b in range(_LB_BINS):
                        x_covered += pred_counts[i, c, b] * target_tables[j, c, b]
                        y_covered += target_counts[j, c, b] * pred_tables[i, c, b]
                    cost_sq += max(x_covered, y_covered)
                if g == _AUS:
                    cost_sq = max(cost_sq, _box_cover_sq(pred_boxes, i, target_boxes, j))
                weighted_lower[i, jj, g] = weight * np.sqrt(cost_sq * (1 - _BOUND_SLACK))
    return weighted_lower


@numba.njit([(_GROUPS, _GROUPS, _I64_1D, _F64_2D, _F64_3D, _F64_2D)], nogil=True, cache=True)
def _search_sum_of_min(
    pred_groups: tuple,
    target_groups: tuple,
    candidates: np.ndarray,
    upper: np.ndarray,
    weighted_lower: np.ndarray,
    nearest_first: np.ndarray,
) -> float:
    """Σ over predictions i of min over candidates j of Σ_g w_g·DTW_g(pred_i, target_j).

    pred_groups[g] (a, d_g, T) and target_groups[g] (N, d_g, T, reversed in time) are the channel
    groups, channel-major; candidates (m,) index the targets. upper (a, m) bounds the weighted
    distance from above (the smallest one is the first best-so-far), weighted_lower (a, m, groups)
    each group's weighted DTW from below. Candidates are tried in ascending order of nearest_first
    (a, m), an estimate of the distance (only an order: exactness never depends on it), so the
    best-so-far is tight early; one whose lower bound exceeds the best so far is skipped,
    and each group DTW gets only the budget left once the groups already computed and the lower
    bounds of those still to come are paid.
    """
    n_preds = upper.shape[0]
    frames = pred_groups[0].shape[2]
    diagonals = np.empty((3, frames + 2))
    lower = weighted_lower.sum(axis=2)
    total = 0.0
    for i in range(n_preds):
        order = np.argsort(nearest_first[i], kind="mergesort")
        threshold = upper[i].min()
        best = np.inf
        for j in order:
            if lower[i, j] > threshold:
                continue
            spent = 0.0
            still_to_come = lower[i, j]
            for g in _GROUP_ORDER:
                weight = CHANNEL_GROUPS[g][2]
                still_to_come -= weighted_lower[i, j, g]
                budget = (threshold - spent - still_to_come) / weight
                if budget < 0:
                    spent = np.inf
                    break
                limit = budget * (1 + _BOUND_SLACK) + _ABS_SLACK
                distance_sq = _group_dtw_sq(
                    g, pred_groups[g][i], target_groups[g][candidates[j]], limit * limit, diagonals
                )
                if distance_sq == np.inf:
                    spent = np.inf
                    break
                spent += weight * np.sqrt(distance_sq)
            if spent < best:
                best = threshold = spent
        total += best
    return total


class _Targets(NamedTuple):
    """The listeners' side of FRDist, prepared once: each listener is a candidate of ~20 samples."""

    series: np.ndarray  # (N, T, C) float32
    groups: tuple  # per channel group, (N, d, T) float32 channel-major and reversed in time (kernel layout)
    coarse_valence_arousal: np.ndarray  # (N, 2, T / _COARSE_BLOCK), the same for block means
    histograms: tuple  # `_value_histograms`
    au_boxes: tuple  # `_frame_boxes` of the AUs
    bin_lo: np.ndarray  # (C,) histogram bins: bin_lo + k·bin_width, over the values of all series
    bin_width: np.ndarray


_TARGETS = types.NamedTuple((_F32_3D, _GROUPS, _F32_3D, _HISTOGRAMS, _BOXES, _F64_1D, _F64_1D), _Targets)


@numba.njit([(_F32_3D, _I64_1D, _TARGETS)], nogil=True, cache=True)
def _sum_of_min_distances(preds: np.ndarray, candidates: np.ndarray, targets: _Targets) -> float:
    """Σ over one sample's predictions (a, T, C) float32 of min over the candidate targets of
    the weighted group DTW.

    Bounds are computed in float64 from the same float32 values the kernel reads, so bounds and
    DTWs describe the same inputs. Compiled whole, so the threads sharing the samples never wait
    for the GIL.
    """
    au_start, au_stop, _ = CHANNEL_GROUPS[_AUS]
    va_start, va_stop, _ = CHANNEL_GROUPS[_VALENCE_AROUSAL]
    weighted_lower = _cover_lower_bounds(
        _value_histograms(preds, targets.bin_lo, targets.bin_width),
        targets.histograms,
        _frame_boxes(preds, au_start, au_stop, _PRED_BOXES),
        targets.au_boxes,
        candidates,
    )
    upper = _lockstep_upper(preds, targets.series, candidates)
    nearest_first = _coarse_dtw_sq(
        _channel_major(preds, va_start, va_stop, False, _COARSE_BLOCK), targets.coarse_valence_arousal, candidates
    )
    pred_groups = (
        _channel_major(preds, CHANNEL_GROUPS[0][0], CHANNEL_GROUPS[0][1], False, 1),
        _channel_major(preds, CHANNEL_GROUPS[1][0], CHANNEL_GROUPS[1][1], False, 1),
        _channel_major(preds, CHANNEL_GROUPS[2][0], CHANNEL_GROUPS[2][1], False, 1),
    )
    return _search_sum_of_min(pred_groups, targets.groups, candidates, upper, weighted_lower, nearest_first)


# --------------------------------------------------------------------------- entry points


def _kernel_array(array: np.ndarray, dtype: type) -> np.ndarray:
    """`array` as the kernels' declared type (C-contiguous, aligned, writable): a view when it is
    one already, else a copy (a read-only input, e.g. a memory-mapped file, is copied)."""
    return np.require(array, dtype, ("C", "A", "W"))


def prepare_targets(listener: np.ndarray, preds: np.ndarray) -> _Targets:
    """The listeners' (N, T, 25) side of the search, once for all samples; `preds` (N, α, T, 25)
    only sets the histogram bins, which span the float32 values of all series (rounding to
    float32 is monotonic)."""
    listener = _kernel_array(listener, np.float32)
    lo = np.minimum(preds.min(axis=(0, 1, 2)), listener.min(axis=(0, 1))).astype(np.float32).astype(np.float64)
    hi = np.maximum(preds.max(axis=(0, 1, 2)), listener.max(axis=(0, 1))).astype(np.float32).astype(np.float64)
    width = np.where(hi > lo, (hi - lo) / _LB_BINS, 1.0)
    au_start, au_stop, _ = CHANNEL_GROUPS[_AUS]
    va_start, va_stop, _ = CHANNEL_GROUPS[_VALENCE_AROUSAL]
    return _Targets(
        series=listener,
        groups=tuple(_channel_major(listener, start, stop, True, 1) for start, stop, _ in CHANNEL_GROUPS),
        coarse_valence_arousal=_channel_major(listener, va_start, va_stop, True, _COARSE_BLOCK),
        histograms=_value_histograms(listener, lo, width),
        au_boxes=_frame_boxes(listener, au_start, au_stop, _TARGET_BOXES),
        bin_lo=lo,
        bin_width=width,
    )


def sum_of_min_distances(preds: np.ndarray, candidates: np.ndarray, targets: _Targets) -> float:
    """Σ over one sample's predictions (α, T, 25) of min over the listeners `candidates` (indices
    into `targets`) of Σ_g w_g·DTW_g, computed on the float32-rounded values; releases the GIL."""
    return _sum_of_min_distances(_kernel_array(preds, np.float32), _kernel_array(candidates, np.int64), targets)
