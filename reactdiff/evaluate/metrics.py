"""REACT2024 metrics on the 25-d emotion of facial reactions.

Inputs are numpy float arrays (float32 or float64; computed in float64):

- preds        (N, alpha, T, 25)  alpha generated reactions per speaker
- listener     (N, T, 25)         the real listener reaction of each sample
- speaker      (N, T, 25)         the speaker's emotion
- appropriate  (N, N) 0/1         M[k, j] = 1: listener j's real reaction is appropriate for speaker k

Each function reproduces the official challenge definition to float64 precision (the official code
runs parts in float32, so agreement is ~1e-6 relative), except FRDist, which sums each DTW cell's
squared differences in float32: within ~1e-6 relative of the float64 value (see `frdist`).
At test size (N = 1614, alpha = 10, T = 750) every metric but FRDist takes seconds; FRDist's
search (`dtw`: compiled with numba when this module is imported, candidates bounded, DTW cells
pruned) still costs ~1.5 minutes of CPU time; `compute_all` runs the others beside it, ~50 s on
two cores (see `frdist`, `compute_all` and bench/bench_metrics.py).

Degenerate inputs, decided once here:
- a sample whose row of `appropriate` is all zero raises ValueError (the official code fails with
  `max()` of an empty list; silently dropping the sample would change the average's denominator);
- a constant (zero-variance) channel: its Pearson r is undefined (NaN) and, as in the official
  FRCorr, counts as 0; FRSyn does the same by default (see `frsyn` for the official behaviour);
- alpha = 1: FRDiv is 0.0 (no pairs; the official code's convention);
- N = 1: FRDvs is 0.0 (no pairs; the same convention).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Literal

import numpy as np
import scipy.fft

from reactdiff.data.layout import EMOTION_DIM, VA_SLICE
from reactdiff.evaluate import dtw

# Which way each metric improves (the names `compute_all` returns).
DIRECTIONS = {
    "FRCorr": "max",
    "FRDist": "min",
    "FRDiv": "max",
    "FRDvs": "max",
    "FRVar": "max",
    "FRSyn": "min",
    "FRSyn_all": "min",
    "FRRea": "min",
    "track_corr": "max",
    "track_sd_ratio": "max",
}
SYNC_MAX_LAG = 49  # FRSyn lags -49..49 (two seconds at 25 fps, minus one frame)
CCC_EPS = 1e-8
# Series (T x 25) per vectorised step: float64 temporaries of ~3 MB at T = 750. Much larger ones
# (~10 MB) make malloc hand them back to the OS after every step and page-fault them in again,
# which cost up to a third of a metric's CPU time.
CHUNK_SERIES = 20


def _chunks(array: np.ndarray) -> list[slice]:
    """Slices along axis 0 of an (n, ..., T, C) array holding about CHUNK_SERIES series each."""
    per_item = array[0].size // (array.shape[-2] * array.shape[-1]) if len(array) else 1
    step = max(1, CHUNK_SERIES // per_item)
    return [slice(start, start + step) for start in range(0, len(array), step)]


def _check(name: str, array: np.ndarray, ndim: int) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim != ndim or array.shape[-1] != EMOTION_DIM:
        raise ValueError(
            f"{name}: expected a {ndim}-d array ending in {EMOTION_DIM} emotion channels, got shape {array.shape}"
        )
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"{name}: expected a float array, got dtype {array.dtype}")
    # In chunks: a whole-array mask of test-size predictions is a 300 MB temporary.
    if not all(np.isfinite(array[chunk]).all() for chunk in _chunks(array)):
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
    """(n, T, C) -> mean (n, C), population variance (n, C), centred values as (n, C, T)."""
    centred = np.ascontiguousarray(series.transpose(0, 2, 1), dtype=np.float64)  # one pass
    mean = centred.mean(axis=-1)
    centred -= mean[..., None]
    return mean, np.einsum("nct,nct->nc", centred, centred) / series.shape[1], centred


def paired_ccc(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """CCC over time of each series with its own target, per channel: (n, T, C) x2 → (n, C), as
    FRCorr computes it (a constant channel gives 0)."""
    mean_p, var_p, centred_p = _channel_stats(pred)
    mean_t, var_t, centred_t = _channel_stats(target)
    cov = np.einsum("nct,nct->nc", centred_p, centred_t) / pred.shape[1]
    return 2 * cov / (var_p + var_t + (mean_p - mean_t) ** 2 + CCC_EPS)


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
    n, alpha, frames, channels = preds.shape
    mean_t, var_t, centred_t = _channel_stats(listener)  # listeners once, not once per sample
    per_sample = np.empty(n)
    for chunk in _chunks(preds):
        mean_p, var_p, centred_p = _channel_stats(preds[chunk].reshape(-1, frames, channels))
        for k in range(chunk.start, min(n, chunk.stop)):
            candidates = sets[k]
            own = slice((k - chunk.start) * alpha, (k - chunk.start + 1) * alpha)
            # (C, a, T) @ (C, T, m) -> (C, a, m): one BLAS product per channel, on strided views
            # (only the candidates' rows are copied, each a contiguous (C, T) block).
            cov = (
                np.matmul(centred_p[own].transpose(1, 0, 2), centred_t[candidates].transpose(1, 2, 0)).transpose(
                    1, 2, 0
                )
                / frames
            )
            mean_gap_sq = (mean_p[own, None] - mean_t[candidates][None]) ** 2
            denom = var_p[own, None] + var_t[candidates][None] + mean_gap_sq
            ccc = (2 * cov / (denom + CCC_EPS)).mean(axis=-1)  # (a, m)
            per_sample[k] = ccc.max(axis=1).sum()
    return float(per_sample.mean())


# --------------------------------------------------------------------------- FRDist


def frdist(preds: np.ndarray, listener: np.ndarray, appropriate: np.ndarray, workers: int | None = None) -> float:
    """FRDist (↓): mean over samples k of Σ_i min_{j: M[k,j]=1} Σ_g w_g·DTW_g(pred_i, listener_j).

    Groups g = AUs 0–15 (w 1/15), valence/arousal 15–17 (w 1), expressions 17–25 (w 1/8); DTW is
    tslearn's: sqrt of the summed squared Euclidean distances along the optimal warping path,
    unconstrained. Inputs are rounded to float32 once (REACT2024's emotion data are float32; for
    float64 inputs this moves a DTW by at most 2⁻²⁴·(‖x‖ + ‖y‖) along its path) and each cell's
    squared distance is summed in float32, the path costs in float64: every DTW is within ~1e-6
    relative of the float64 DTW of those float32 values (see `dtw._BOUND_SLACK`; the challenge
    asks for 1e-5). The nearest listener is found by a pruned search (`dtw`), which never changes
    the result: it is the minimum of full DTWs.

    `workers` threads (default: the CPUs this process may use) share the samples; a sample's
    whole search, bounds included, is compiled and releases the GIL.
    """
    preds = _check("preds", preds, 4)
    listener = _check("listener", listener, 3)
    _check_pairing(preds, listener, "listener")
    sets = _appropriate_sets(appropriate, preds.shape[0])
    workers = min(workers or _usable_cpus(), len(sets))

    targets = dtw.prepare_targets(listener, preds)

    def sample_distance(k: int) -> float:
        return dtw.sum_of_min_distances(preds[k], sets[k], targets)

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
    for chunk in _chunks(preds):
        values = preds[chunk].astype(np.float64)
        spread += _sum_of_squares(values - values.mean(axis=1, keepdims=True))
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
    for chunk in _chunks(preds):
        mean += preds[chunk].sum(axis=0, dtype=np.float64)
    mean /= n
    spread = 0.0
    for chunk in _chunks(preds):
        spread += _sum_of_squares(preds[chunk] - mean)
    return float(2 * n * spread / (n * (n - 1) * alpha * frames * channels))


def frvar(preds: np.ndarray) -> float:
    """FRVar (↑): unbiased variance over time of each channel, averaged over samples, predictions
    and channels (T ≥ 2)."""
    preds = _check("preds", preds, 4)
    if preds.shape[2] < 2:
        raise ValueError(f"preds: FRVar needs at least 2 frames, got shape {preds.shape}")
    spread = 0.0
    for chunk in _chunks(preds):
        values = preds[chunk].astype(np.float64)
        spread += _sum_of_squares(values - values.mean(axis=2, keepdims=True))
    n, alpha, frames, channels = preds.shape
    return float(spread / (frames - 1) / (n * alpha * channels))


def _sum_of_squares(values: np.ndarray) -> float:
    """Σ values² of a contiguous array without a squared temporary. einsum, not BLAS dot: that
    wakes OpenBLAS threads, which spin on the cores the FRDist threads use (see `compute_all`)."""
    flat = values.reshape(-1)
    return float(np.einsum("i,i->", flat, flat))


# --------------------------------------------------------------------------- FRSyn


def _lagged_pearson_work(shape: tuple, max_lag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Arrays for `_lagged_pearson` of x of `shape`: x's float64 copy, its rfft and irfft."""
    # No circular wrap-around; a 5-smooth length, where pocketfft is fastest (800 for T = 750 and
    # 49 lags runs ~15 % faster than 1024).
    n_fft = scipy.fft.next_fast_len(shape[-1] + max_lag, real=True)
    return (
        np.empty(shape),
        np.empty(shape[:-1] + (n_fft // 2 + 1,), dtype=np.complex128),
        np.empty(shape[:-1] + (n_fft,)),
    )


def _lagged_pearson(x: np.ndarray, y: np.ndarray, max_lag: int, work: tuple) -> np.ndarray:
    """(..., C, T) x (..., C, T) (broadcastable) -> (..., C, 2·max_lag+1): Pearson r of x[t + lag]
    with y[t] for lag = −max_lag..max_lag.

    `work` (`_lagged_pearson_work` for x's shape) receives x's float64 copy and its FFTs: a caller
    looping over chunks reuses the same arrays, because fresh multi-MB temporaries are handed
    back to the OS and page-faulted in again on every call.

    Lag l pairs x[l:] with y[:T−l] (l ≥ 0) and x[:T+l] with y[−l:] (l < 0), as the official
    `shift`. Every window is the whole series less at most max_lag frames at one end, so window
    sums are the total less a short head or tail sum; the cross term comes from one FFT
    cross-correlation: all lags cost about one pass over the data. A window that is exactly
    constant gives NaN (its r is undefined); constancy is decided exactly from where the series
    first and last change.
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

    x_copy, spectrum, cross = work
    n_fft = cross.shape[-1]
    np.copyto(x_copy, x)  # time contiguous, float64, our own copy
    x = x_copy
    y = np.array(y, dtype=np.float64, order="C")
    constant = constant_windows(x, x_start, x_stop) | constant_windows(y, y_start, y_stop)

    x -= x.mean(axis=-1, keepdims=True)  # centring keeps the window sums well conditioned
    y -= y.mean(axis=-1, keepdims=True)
    np.fft.rfft(x, n=n_fft, out=spectrum)
    spectrum *= np.conj(np.fft.rfft(y, n=n_fft))
    np.fft.irfft(spectrum, n=n_fft, out=cross)
    cross = cross[..., lags % n_fft]  # cross[..., l] = Σ_t x[t + l] y[t]

    def window_sums(values: np.ndarray, start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Σ values and Σ values² over [start, stop) for windows that drop at most max_lag frames
        at one end: the totals less the sums of a short head or tail."""
        head, tail = values[..., :max_lag], values[..., : frames - max_lag - 1 : -1]

        def windows(total: np.ndarray, head: np.ndarray, tail: np.ndarray) -> np.ndarray:
            head_sums = np.zeros(head.shape[:-1] + (max_lag + 1,))  # [..., k]: the first k frames
            np.cumsum(head, axis=-1, out=head_sums[..., 1:])
            tail_sums = np.zeros_like(head_sums)  # [..., k]: the last k frames
            np.cumsum(tail, axis=-1, out=tail_sums[..., 1:])
            return total[..., None] - head_sums[..., start] - tail_sums[..., frames - stop]

        sum_of_squares = np.einsum("...t,...t->...", values, values)
        return windows(values.sum(axis=-1), head, tail), windows(sum_of_squares, head * head, tail * tail)

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
    used = preds.shape[1] if all_predictions else 1
    return float(_sync_offsets(preds, speaker, used, max_lag, constant_channels).mean())


def _sync_offsets(
    preds: np.ndarray, speaker: np.ndarray, used: int, max_lag: int, constant_channels: str
) -> np.ndarray:
    """(N, used) |offset| of the first `used` predictions of each sample (see `frsyn`)."""
    n, _, frames, _ = preds.shape
    if not 0 <= max_lag <= frames - 2:
        raise ValueError(f"max_lag: expected 0..T-2={frames - 2} (two frames overlap at least), got {max_lag}")
    if constant_channels not in ("zero", "official"):
        raise ValueError(f"constant_channels: expected 'zero' or 'official', got {constant_channels!r}")
    offsets = np.empty((n, used), dtype=np.int64)
    chunks = _chunks(preds[:, :used])
    work = _lagged_pearson_work(preds[chunks[0], :used].transpose(0, 1, 3, 2).shape, max_lag)
    for chunk in chunks:
        x = preds[chunk, :used].transpose(0, 1, 3, 2)
        y = speaker[chunk, None].transpose(0, 1, 3, 2)
        r = _lagged_pearson(x, y, max_lag, tuple(buffer[: len(x)] for buffer in work))  # (chunk, used, C, lags)
        if constant_channels == "zero":
            r = np.nan_to_num(r, nan=0.0)
        peak = np.argmax(r.mean(axis=-2), axis=-1)
        offsets[chunk] = np.abs(max_lag - peak)
    return offsets


# --------------------------------------------------------------------------- FRRea


def _gaussian_fit(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and unbiased covariance of (..., T, 25) per-frame vectors, in chunks, float64."""
    series = frames.reshape(-1, frames.shape[-2], EMOTION_DIM)
    rows = frames.size // EMOTION_DIM
    mean = sum(series[chunk].sum(axis=(0, 1), dtype=np.float64) for chunk in _chunks(series)) / rows
    scatter = np.zeros((EMOTION_DIM, EMOTION_DIM))
    for chunk in _chunks(series):
        centred = (series[chunk] - mean).reshape(-1, EMOTION_DIM)  # float64
        scatter += centred.T @ centred
    return mean, scatter / max(rows - 1, 1)


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


# --------------------------------------------------------------------------- tracking


def tracking(preds: np.ndarray, listener: np.ndarray) -> tuple[float, float]:
    """Does the average reaction follow the real listener? Not a REACT2024 metric: FRDist rewards a
    flat sequence near the mean, and FRCorr takes a max over appropriate listeners, so neither
    tells directly whether the reactions move with this sample's own listener.

    On valence and arousal, per sample and channel, between the α-mean of the predictions and the
    real listener over time: `track_corr` (↑), the Pearson r (a constant series counts as 0, as
    in FRCorr), and `track_sd_ratio` (↑ up to 1), the α-mean's standard deviation over time over
    the listener's (channels where the listener is constant are left out). Each is averaged over
    samples and the two channels. A model that ignores the speaker has r ≈ 0 and, because its α
    reactions disagree, a small ratio even when each reaction alone moves a lot."""
    mean = preds[..., VA_SLICE].astype(np.float64).mean(axis=1)
    target = listener[..., VA_SLICE].astype(np.float64)
    mean_c = mean - mean.mean(axis=1, keepdims=True)
    target_c = target - target.mean(axis=1, keepdims=True)
    sd_mean, sd_target = np.sqrt((mean_c**2).mean(axis=1)), np.sqrt((target_c**2).mean(axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (mean_c * target_c).mean(axis=1) / (sd_mean * sd_target)
        ratio = sd_mean / sd_target
    r = np.where(np.isfinite(r), r, 0.0)
    ratio = ratio[sd_target > 0]
    return float(r.mean()), float(ratio.mean()) if ratio.size else float("nan")


# --------------------------------------------------------------------------- all


def compute_all(
    preds: np.ndarray,
    listener: np.ndarray,
    speaker: np.ndarray,
    appropriate: np.ndarray,
    workers: int | None = None,
) -> dict[str, float]:
    """Every metric: FRCorr, FRDist, FRDiv, FRDvs, FRVar, FRSyn (first prediction, official),
    FRSyn_all (all α predictions), FRRea (our feature-space Fréchet distance), and
    `track_corr` / `track_sd_ratio` (`tracking`: does the α-mean follow the real listener).

    FRDist takes `workers` threads (default: all CPUs); the other metrics run meanwhile in one
    more thread (mostly single-threaded numpy, ~10 % of the CPU time at test size), so all
    cores stay busy until FRDist ends. FRSyn's offsets are those of FRSyn_all's first predictions,
    computed once.
    """
    preds = _check("preds", preds, 4)
    speaker = _check("speaker", speaker, 3)
    _check_pairing(preds, speaker, "speaker")
    _appropriate_sets(appropriate, preds.shape[0])  # fail before any work starts
    # Clips shorter than the official ±49-frame lag window (tests, short demos) use the widest
    # window they allow; REACT2024's 750-frame clips always get the official 49.
    max_lag = min(SYNC_MAX_LAG, preds.shape[2] - 2)

    def all_but_frdist() -> dict[str, float]:
        offsets = _sync_offsets(preds, speaker, preds.shape[1], max_lag, "zero")
        return {
            "FRCorr": frcorr(preds, listener, appropriate),
            "FRDiv": frdiv(preds),
            "FRDvs": frdvs(preds),
            "FRVar": frvar(preds),
            "FRSyn": float(offsets[:, 0].mean()),
            "FRSyn_all": float(offsets.mean()),
            "FRRea": frrea(preds, listener),
            **dict(zip(("track_corr", "track_sd_ratio"), tracking(preds, listener), strict=True)),
        }

    workers = workers or _usable_cpus()
    if workers <= 1:
        others = all_but_frdist()
        distance = frdist(preds, listener, appropriate, workers=1)
    else:
        with ThreadPoolExecutor(1) as side:
            others_future = side.submit(all_but_frdist)
            distance = frdist(preds, listener, appropriate, workers=workers)
            others = others_future.result()
    values = {**others, "FRDist": distance}
    return {name: values[name] for name in DIRECTIONS}
