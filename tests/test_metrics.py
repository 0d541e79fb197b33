"""REACT2024 metrics: hand-computed cases, an independent plain-loop reference, degenerate inputs."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from dtaidistance import dtw_ndim

from reactdiff.evaluate import dtw, metrics

GROUPS = ((0, 15, 1 / 15), (15, 17, 1.0), (17, 25, 1 / 8))
# FRDist sums each DTW cell's squared differences in float32 (dtw._BOUND_SLACK): a DTW is within
# ~1e-6 relative of the float64 value of the float32-rounded inputs. The challenge asks for 1e-5.
FRDIST_REL = 1e-5


# --------------------------------------------------------------------------- plain-loop reference
# Written from the official REACT2024 definitions, one pair / one lag / one channel at a time.


def ref_ccc(target: np.ndarray, pred: np.ndarray) -> float:
    r = np.corrcoef(target, pred)[0, 1] if target.std() > 0 and pred.std() > 0 else np.nan
    r = 0.0 if np.isnan(r) else r
    num = 2 * r * target.std() * pred.std()
    return num / (target.var() + pred.var() + (target.mean() - pred.mean()) ** 2 + 1e-8)


def ref_dtw(x: np.ndarray, y: np.ndarray) -> float:
    cost = np.full((len(x) + 1, len(y) + 1), np.inf)
    cost[0, 0] = 0.0
    for i in range(len(x)):
        for j in range(len(y)):
            step = ((x[i] - y[j]) ** 2).sum()
            cost[i + 1, j + 1] = step + min(cost[i, j], cost[i, j + 1], cost[i + 1, j])
    return float(np.sqrt(cost[-1, -1]))


def ref_distance(x: np.ndarray, y: np.ndarray) -> float:
    return sum(w * ref_dtw(x[:, a:b], y[:, a:b]) for a, b, w in GROUPS)


def ref_frcorr(preds, listener, appropriate):
    scores = []
    for k in range(len(preds)):
        total = 0.0
        for pred in preds[k]:
            total += max(
                np.mean([ref_ccc(listener[j][:, c], pred[:, c]) for c in range(25)])
                for j in np.flatnonzero(appropriate[k])
            )
        scores.append(total)
    return np.mean(scores)


def ref_frdist(preds, listener, appropriate):
    return np.mean(
        [
            sum(min(ref_distance(pred, listener[j]) for j in np.flatnonzero(appropriate[k])) for pred in preds[k])
            for k in range(len(preds))
        ]
    )


def ref_frdiv(preds):
    n, alpha, t, c = preds.shape
    per_sample = []
    for k in range(n):
        total = sum(((preds[k, i] - preds[k, j]) ** 2).sum() for i in range(alpha) for j in range(alpha) if i != j)
        per_sample.append(total / (alpha * (alpha - 1) * t * c))
    return np.mean(per_sample)


def ref_frdvs(preds):
    n, alpha, t, c = preds.shape
    total = 0.0
    for i in range(alpha):
        pairs = sum(((preds[a, i] - preds[b, i]) ** 2).sum() for a in range(n) for b in range(n) if a != b)
        total += pairs / (n * (n - 1) * alpha * t * c)
    return total


def ref_frvar(preds):
    return np.mean(
        [
            np.var(preds[k, i, :, c], ddof=1)
            for k in range(preds.shape[0])
            for i in range(preds.shape[1])
            for c in range(25)
        ]
    )


def ref_offset(pred, speaker, max_lag, official):
    means = []
    for lag in range(-max_lag, max_lag + 1):
        if lag > 0:
            x, y = pred[lag:], speaker[:-lag]
        elif lag < 0:
            x, y = pred[:lag], speaker[-lag:]
        else:
            x, y = pred, speaker
        rs = []
        for c in range(25):
            constant = (x[:, c] == x[0, c]).all() or (y[:, c] == y[0, c]).all()
            r = np.nan if constant else np.corrcoef(x[:, c], y[:, c])[0, 1]
            rs.append(0.0 if (np.isnan(r) and not official) else r)
        means.append(np.mean(rs))
    return abs(max_lag - int(np.argmax(means)))


def ref_frsyn(preds, speaker, max_lag, official=False, all_predictions=False):
    used = preds.shape[1] if all_predictions else 1
    return np.mean(
        [ref_offset(preds[k, i], speaker[k], max_lag, official) for k in range(len(preds)) for i in range(used)]
    )


# --------------------------------------------------------------------------- data


def emotion_like(rng, shape, binary_aus=False):
    """Smooth random 25-d emotion: AUs (binary or probabilities), VA in [-1, 1], softmax expressions."""
    latent = np.cumsum(rng.standard_normal(shape), axis=-2) * 0.4
    latent -= latent.mean(axis=-2, keepdims=True)
    aus = 1 / (1 + np.exp(-3 * (latent[..., :15] - 0.3)))
    if binary_aus:
        aus = (aus > 0.5).astype(float)
    expr = np.exp(latent[..., 17:])
    return np.concatenate([aus, np.tanh(latent[..., 15:17]), expr / expr.sum(-1, keepdims=True)], axis=-1)


def random_case(seed, n=5, alpha=3, frames=16):
    rng = np.random.default_rng(seed)
    preds = emotion_like(rng, (n, alpha, frames, 25))
    listener = emotion_like(rng, (n, frames, 25), binary_aus=True)
    speaker = emotion_like(rng, (n, frames, 25), binary_aus=True)
    appropriate = (rng.random((n, n)) < 0.5).astype(np.uint8)
    np.fill_diagonal(appropriate, 1)
    return preds, listener, speaker, appropriate


# --------------------------------------------------------------------------- agreement with the reference


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_metrics_match_plain_loop_reference(seed):
    preds, listener, speaker, appropriate = random_case(seed)
    assert metrics.frcorr(preds, listener, appropriate) == pytest.approx(
        ref_frcorr(preds, listener, appropriate), rel=1e-9
    )
    assert metrics.frdist(preds, listener, appropriate, workers=1) == pytest.approx(
        ref_frdist(preds, listener, appropriate), rel=FRDIST_REL
    )
    assert metrics.frdiv(preds) == pytest.approx(ref_frdiv(preds), rel=1e-9)
    assert metrics.frdvs(preds) == pytest.approx(ref_frdvs(preds), rel=1e-9)
    assert metrics.frvar(preds) == pytest.approx(ref_frvar(preds), rel=1e-9)
    for official in (False, True):
        mode = "official" if official else "zero"
        for all_predictions in (False, True):
            assert metrics.frsyn(
                preds, speaker, all_predictions=all_predictions, max_lag=6, constant_channels=mode
            ) == pytest.approx(ref_frsyn(preds, speaker, 6, official, all_predictions), rel=1e-9)


def test_dtaidistance_is_the_sqrt_of_summed_squared_distances_dtw():
    rng = np.random.default_rng(3)
    for d in (2, 8, 15):
        x, y = rng.random((14, d)), rng.random((19, d))
        assert dtw_ndim.distance_fast(x, y) == pytest.approx(ref_dtw(x, y), rel=1e-12)


def kernel_dtw_sq(x: np.ndarray, y: np.ndarray, limit_sq: float = np.inf) -> float:
    """The compiled kernel on (T, d) series, in its float32, channel-major, y-reversed layout."""
    return dtw._make_dtw_sq(x.shape[1])(
        np.ascontiguousarray(x.T, dtype=np.float32),
        np.ascontiguousarray(y[::-1].T, dtype=np.float32),
        limit_sq,
        np.empty((3, len(x) + 2)),
    )


def as_float32(*arrays: np.ndarray) -> list[np.ndarray]:
    """The float64 values of the float32-rounded series: what the kernel sees."""
    return [a.astype(np.float32).astype(np.float64) for a in arrays]


@pytest.mark.parametrize("d", [1, 2, 8, 15])
def test_dtw_kernel_matches_plain_loop_reference(d):
    rng = np.random.default_rng(12 + d)
    for n, m in ((17, 17), (9, 23), (23, 9), (1, 6), (6, 1), (1, 1)):
        x, y = as_float32(rng.random((n, d)), rng.random((m, d)))
        # Cell costs summed in float32: ≤ (d + 2)·2⁻²⁴ relative on DTW², half that on DTW.
        assert np.sqrt(kernel_dtw_sq(x, y)) == pytest.approx(ref_dtw(x, y), rel=1e-6)
    x = rng.random((30, d))
    assert kernel_dtw_sq(x, x) == 0.0  # identical series: exactly 0, no rounding residue


def test_dtw_kernel_abandons_only_above_the_limit():
    """At, just below and well below the kernel's value: a finite result is always that DTW², and
    inf only ever means the DTW² exceeds the limit (near-ties must never turn into a wrong value)."""
    rng = np.random.default_rng(13)
    for _ in range(20):
        x, y = as_float32(rng.random((25, 8)), rng.random((31, 8)))
        exact = kernel_dtw_sq(x, y)
        assert exact == pytest.approx(ref_dtw(x, y) ** 2, rel=1e-6)
        assert kernel_dtw_sq(x, y, exact) == exact  # the limit itself is allowed
        assert kernel_dtw_sq(x, y, np.nextafter(exact, np.inf)) == exact
        assert kernel_dtw_sq(x, y, np.nextafter(exact, 0.0)) in (exact, np.inf)
        assert kernel_dtw_sq(x, y, 0.25 * exact) == np.inf  # abandoned long before the end


def far_warped_copy(x: np.ndarray, hold: int) -> np.ndarray:
    """x with its first frame held `hold` extra frames and its end squeezed to keep the length:
    the optimal path against x runs `hold` cells off the diagonal."""
    stretched = np.concatenate([np.repeat(x[:1], hold, axis=0), x])
    return stretched[np.linspace(0, len(stretched) - 1, len(x)).round().astype(int)]


@pytest.mark.parametrize("d", [2, 8, 15])
def test_dtw_kernel_pruning_keeps_paths_far_from_the_diagonal(d):
    """x = z then its last frame held, y = z's first frame held then z: the optimal path runs
    `hold` cells off the diagonal. A limit at or just above the DTW² prunes every cell away from
    that path's neighbourhood, so the alive rows must drift with it and never lose it."""
    rng = np.random.default_rng(16 + d)
    for hold, frames in ((15, 45), (40, 20), (3, 57)):
        z = emotion_like(rng, (frames, 25))[:, :d]
        x = np.concatenate([z, np.repeat(z[-1:], hold, axis=0)])
        y = np.concatenate([np.repeat(z[:1], hold, axis=0), z])
        assert kernel_dtw_sq(x, y, 0.0) == 0.0  # a limit of 0: only the zero-cost path survives
        assert kernel_dtw_sq(x, y[::-1], 0.0) == np.inf
        x, y = as_float32(x, y + 0.01 * rng.standard_normal(y.shape))
        exact = kernel_dtw_sq(x, y)
        assert exact == pytest.approx(ref_dtw(x, y) ** 2, rel=1e-6)
        # Only cells > limit are skipped, so the alive cells' values are bit-identical.
        assert kernel_dtw_sq(x, y, exact) == exact
        assert kernel_dtw_sq(x, y, exact * (1 + 1e-9)) == exact
        assert kernel_dtw_sq(x, y, np.nextafter(exact, 0.0)) in (exact, np.inf)
        assert kernel_dtw_sq(x[:-5], y, exact) in (kernel_dtw_sq(x[:-5], y), np.inf)  # n ≠ m


def test_dtw_kernel_pruning_at_random_limits():
    """Many small random pairs (smooth 1-d series make the alive band's edges jump), each at limits
    around its DTW²: a finite result is always the unpruned DTW², inf only below it. Catches cells
    next to the pruned range reading values left over from earlier anti-diagonals."""
    rng = np.random.default_rng(18)
    for _ in range(300):
        d = int(rng.choice([1, 2, 8]))
        n, m = rng.integers(2, 40, size=2)
        x, y = as_float32(emotion_like(rng, (n, 25))[:, :d], emotion_like(rng, (m, 25))[:, :d])
        exact = kernel_dtw_sq(x, y)
        for factor in (0.7, 0.95, 1.0, 1.05, 1.5):
            assert kernel_dtw_sq(x, y, exact * factor) in ((exact, np.inf) if factor < 1 else (exact,))


def test_frdist_is_exact_under_heavy_pruning():
    """A prediction identical to one candidate makes the best-so-far ~0, so the far candidates are
    pruned down to a few cells; warped copies make the winning path leave the diagonal far."""
    rng = np.random.default_rng(17)
    n, alpha, frames = 6, 3, 50
    listener = emotion_like(rng, (n, frames, 25), binary_aus=True)
    listener[5] = far_warped_copy(listener[0], 20)
    preds = emotion_like(rng, (n, alpha, frames, 25))
    preds[0, 0] = listener[3]  # identical candidate: the limit for all others is ~0
    preds[1, 0] = far_warped_copy(listener[2], 25)  # distance 0 only along a path far off the diagonal
    preds[2, 0] = far_warped_copy(listener[4], 18) + 0.01 * rng.standard_normal((frames, 25))
    preds[3, 1] = listener[0]  # 5 is a warped copy of 0: two near candidates, met in either order
    appropriate = np.ones((n, n), dtype=np.uint8)
    expected = ref_frdist(preds, listener, appropriate)
    assert metrics.frdist(preds, listener, appropriate, workers=1) == pytest.approx(expected, rel=FRDIST_REL)


def test_frdist_is_exact_with_exact_ties_and_warped_copies():
    """Duplicate candidates (exactly tied distances), a prediction that is a warped copy of two
    candidates (distance 0 to both) and one a hair away from a candidate: the search must return
    the plain-loop minimum every time, whatever order ties are met in."""
    rng = np.random.default_rng(14)
    n, alpha, frames = 6, 3, 12
    listener = emotion_like(rng, (n, frames, 25), binary_aus=True)
    listener[4] = listener[1]  # exact tie between candidates 1 and 4
    listener[5] = np.concatenate([listener[2][:1], listener[2][:-1]])  # 2 with its first frame held
    preds = emotion_like(rng, (n, alpha, frames, 25))
    preds[0, 0] = np.concatenate([listener[2][:4], listener[2][3:-1]])  # 2 with frame 3 held, last dropped
    preds[1, 2] = listener[1] + 1e-9
    preds[2, 1] = 0.5 * (listener[1] + listener[3])  # equidistant-ish from two candidates
    appropriate = (rng.random((n, n)) < 0.7).astype(np.uint8)
    appropriate[:, [1, 2, 4, 5]] = 1
    expected = ref_frdist(preds, listener, appropriate)
    assert metrics.frdist(preds, listener, appropriate, workers=1) == pytest.approx(expected, rel=FRDIST_REL)
    assert metrics.frdist(preds, listener, appropriate, workers=2) == pytest.approx(expected, rel=FRDIST_REL)


def test_frdist_pruning_is_exact_with_many_close_candidates():
    """Many candidates, some identical or near-identical to a prediction: the bounds must skip and
    abandon without ever losing the true minimum. Compared with an unpruned dtaidistance search."""
    rng = np.random.default_rng(7)
    n, alpha, frames = 8, 3, 40
    listener = emotion_like(rng, (n, frames, 25), binary_aus=True)
    preds = emotion_like(rng, (n, alpha, frames, 25))
    preds[0, 0] = listener[3]  # distance exactly 0 to one candidate
    preds[1, 1] = listener[1] + 1e-7  # within rounding of one candidate
    preds[2] = listener[2] + 0.05 * rng.standard_normal((alpha, frames, 25))
    appropriate = np.ones((n, n), dtype=np.uint8)

    def unpruned(x, y):
        return sum(w * dtw_ndim.distance_fast(x[:, a:b].copy(), y[:, a:b].copy()) for a, b, w in GROUPS)

    expected = np.mean([sum(min(unpruned(p, listener[j]) for j in range(n)) for p in preds[k]) for k in range(n)])
    assert metrics.frdist(preds, listener, appropriate, workers=1) == pytest.approx(expected, rel=FRDIST_REL)
    # Two threads give the same number.
    assert metrics.frdist(preds, listener, appropriate, workers=2) == pytest.approx(expected, rel=FRDIST_REL)


@pytest.mark.parametrize("scale", [1.0, 100.0])
def test_frdist_float32_costs_match_reference_on_wide_value_ranges(scale):
    """Binary AUs against AU probabilities, every value ×scale: large cells next to near-zero ones.
    The float32 cell costs must keep FRDist within 1e-5 of the float64 plain-loop reference."""
    rng = np.random.default_rng(15)
    n, alpha, frames = 5, 3, 40
    listener = scale * emotion_like(rng, (n, frames, 25), binary_aus=True)
    preds = scale * emotion_like(rng, (n, alpha, frames, 25))
    preds[0, 0, :, :15] = listener[0, :, :15]  # AU group identical: exactly 0 there
    preds[1, 1] = listener[1] + scale * 1e-4  # within a hair of one candidate
    appropriate = (rng.random((n, n)) < 0.6).astype(np.uint8)
    np.fill_diagonal(appropriate, 1)
    expected = ref_frdist(preds, listener, appropriate)
    assert metrics.frdist(preds, listener, appropriate, workers=1) == pytest.approx(expected, rel=1e-5)
    assert metrics.frdist(preds.astype(np.float32), listener.astype(np.float32), appropriate, workers=2) == (
        pytest.approx(expected, rel=1e-5)
    )


def cover_bound_sq(x: np.ndarray, y: np.ndarray) -> float:
    """The multivariate cover bound of DTW² by brute force: every frame of x and of y is on the path."""
    cost = ((x[:, None] - y[None]) ** 2).sum(-1)
    return max(cost.min(1).sum(), cost.min(0).sum())


@pytest.mark.parametrize("frames", [40, 200])
def test_au_frame_boxes_bound_the_dtw_from_below(frames):
    """The AU lower bound of the FRDist search. With at most 75 (predictions) / 150 (listeners)
    distinct frames the boxes are those frames and the bound is the exact cover bound; with more
    (200 smooth frames) they are blocks of frames and the bound is looser. Either way it stays
    below the kernel's DTW² once shrunk by the search's slack."""
    rng = np.random.default_rng(19)
    x = as_float32(emotion_like(rng, (3, frames, 25)))[0][..., :15]
    y = as_float32(emotion_like(rng, (3, frames, 25), binary_aus=True))[0][..., :15]
    y[2] = x[0, ::-1]  # a continuous listener too: blocks on the listener side as well
    x_boxes = dtw._frame_boxes(x.astype(np.float32), 0, 15, dtw._PRED_BOXES)
    y_boxes = dtw._frame_boxes(y.astype(np.float32), 0, 15, dtw._TARGET_BOXES)

    def zero_width(boxes, k):  # the boxes are single frames: the bound is exact on that side
        lo, hi, _, used = boxes
        return (lo[k, :, : used[k]] == hi[k, :, : used[k]]).all()

    assert all(zero_width(x_boxes, i) == (frames <= dtw._PRED_BOXES) for i in range(3))
    assert zero_width(y_boxes, 0) and zero_width(y_boxes, 2) == (frames <= dtw._TARGET_BOXES)
    for i in range(3):
        for j in range(3):
            bound = dtw._box_cover_sq(x_boxes, i, y_boxes, j)
            assert bound * (1 - dtw._BOUND_SLACK) <= kernel_dtw_sq(x[i], y[j])
            if zero_width(x_boxes, i) and zero_width(y_boxes, j):
                assert bound == pytest.approx(cover_bound_sq(x[i], y[j]), rel=1e-6)
            else:
                assert bound <= cover_bound_sq(x[i], y[j]) * (1 + 1e-6)


def test_frdist_is_exact_on_series_longer_than_the_box_limits():
    """200 frames: more distinct frames than the AU boxes hold, for the predictions and for one
    continuous listener, so the blocked bounds are the ones that prune. Compared with an
    unpruned dtaidistance search."""
    rng = np.random.default_rng(20)
    n, alpha, frames = 4, 2, 200
    listener = emotion_like(rng, (n, frames, 25), binary_aus=True)
    listener[3, :, :15] = emotion_like(rng, (frames, 25))[:, :15]
    preds = emotion_like(rng, (n, alpha, frames, 25))
    preds[1, 0] = far_warped_copy(listener[2], 30) + 0.01 * rng.standard_normal((frames, 25))
    appropriate = np.ones((n, n), dtype=np.uint8)

    def unpruned(x, y):
        return sum(w * dtw_ndim.distance_fast(x[:, a:b].copy(), y[:, a:b].copy()) for a, b, w in GROUPS)

    expected = np.mean([sum(min(unpruned(p, listener[j]) for j in range(n)) for p in preds[k]) for k in range(n)])
    assert metrics.frdist(preds, listener, appropriate, workers=2) == pytest.approx(expected, rel=FRDIST_REL)


def test_frrea_matches_independent_frechet_formula():
    preds, listener, _, _ = random_case(4, n=6, alpha=2, frames=30)
    gen, real = preds.reshape(-1, 25), listener.reshape(-1, 25)
    cov_g, cov_r = np.cov(gen, rowvar=False), np.cov(real, rowvar=False)
    # Tr((Σ_g Σ_r)^½) from the eigenvalues of the (non-symmetric) product.
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvals(cov_g @ cov_r).real, 0, None)).sum()
    expected = ((gen.mean(0) - real.mean(0)) ** 2).sum() + np.trace(cov_g + cov_r) - 2 * trace_sqrt
    assert metrics.frrea(preds, listener) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------- hand-computed cases


def test_ccc_of_a_doubled_signal_by_hand():
    # x = 0,1,0,1 (mean .5, var .25) and 2x (mean 1, var 1): CCC = 2·1·.5·1 / (.25 + 1 + .25) = 2/3.
    listener = np.tile(np.array([0.0, 1.0, 0.0, 1.0])[:, None], (1, 25))[None]
    preds = 2 * listener[:, None]
    expected = 1.0 / (1.5 + 1e-8)
    assert metrics.frcorr(preds, listener, np.ones((1, 1))) == pytest.approx(expected, rel=1e-12)


def test_frcorr_takes_the_best_appropriate_reaction_and_sums_predictions():
    rng = np.random.default_rng(0)
    listener = rng.random((2, 12, 25))
    preds = np.stack([listener[1], listener[1]])[None].repeat(2, axis=0)  # both samples predict listener 1
    # Sample 0 may use listener 1 (CCC ≈ 1 per prediction), sample 1 only listener 0.
    appropriate = np.array([[1, 1], [1, 0]])
    per_pred_best = 2 * listener[1].var(0) / (2 * listener[1].var(0) + 1e-8)
    sample0 = 2 * per_pred_best.mean()
    sample1 = 2 * np.mean([ref_ccc(listener[0][:, c], listener[1][:, c]) for c in range(25)])
    assert metrics.frcorr(preds, listener, appropriate) == pytest.approx((sample0 + sample1) / 2, rel=1e-9)


def test_frdist_of_constant_offsets_by_hand():
    # Every channel 0 vs 1: any warping path has at least T cells of cost d (group width), and the
    # diagonal has exactly T, so DTW_g = sqrt(T·d): FRDist = sqrt(15T)/15 + sqrt(2T) + sqrt(8T)/8.
    frames = 10
    preds = np.zeros((1, 1, frames, 25))
    listener = np.ones((1, frames, 25))
    expected = np.sqrt(15 * frames) / 15 + np.sqrt(2 * frames) + np.sqrt(8 * frames) / 8
    assert metrics.frdist(preds, listener, np.ones((1, 1)), workers=1) == pytest.approx(expected, rel=1e-12)


def test_frdist_warping_absorbs_repeated_frames():
    # Listener and prediction are one 11-frame motion, each with a different frame held twice:
    # warping aligns them exactly (DTW 0), while the lock-step distance is positive.
    base = np.random.default_rng(1).random((11, 25))
    listener = np.concatenate([base[:9], base[8:]])[None]  # frame 8 held
    pred = np.concatenate([base[:3], base[2:]])[None, None]  # frame 2 held
    assert metrics.frdist(pred, listener, np.ones((1, 1)), workers=1) == pytest.approx(0.0, abs=1e-12)
    assert ref_distance(pred[0, 0], listener[0]) == pytest.approx(0.0, abs=1e-12)
    assert np.abs(pred[0, 0] - listener[0]).sum() > 1.0


def test_frdiv_frdvs_frvar_by_hand():
    frames = 6
    preds = np.zeros((2, 2, frames, 25))
    preds[:, 1] = 1.0  # within each sample the two predictions differ by 1 everywhere
    # FRDiv: 2 ordered pairs × T·25 / (2·1·T·25) = 1. FRDvs: samples are identical → 0.
    assert metrics.frdiv(preds) == pytest.approx(1.0)
    assert metrics.frdvs(preds) == 0.0
    alternating = np.zeros((1, 1, frames, 25))
    alternating[0, 0, 1::2] = 1.0
    # Σ(x − ½)² = T/4 over T − 1 degrees of freedom.
    assert metrics.frvar(alternating) == pytest.approx(frames / 4 / (frames - 1))


def test_frsyn_finds_a_known_lag_by_hand():
    rng = np.random.default_rng(2)
    frames, lag = 60, 3
    speaker = emotion_like(rng, (1, frames, 25))
    pred = np.empty((1, 1, frames, 25))
    pred[0, 0, lag:] = speaker[0, :-lag]  # the prediction repeats the speaker 3 frames later
    pred[0, 0, :lag] = rng.random((lag, 25))
    assert metrics.frsyn(pred, speaker, max_lag=10) == lag


def test_frrea_of_a_shifted_copy_is_the_squared_shift():
    rng = np.random.default_rng(5)
    listener = rng.random((3, 20, 25))
    shift = np.linspace(-0.2, 0.2, 25)
    assert metrics.frrea((listener + shift)[:, None], listener) == pytest.approx((shift**2).sum(), rel=1e-9)


# --------------------------------------------------------------------------- degenerate inputs


def test_constant_channels():
    preds, listener, speaker, appropriate = random_case(6, frames=20)
    preds[:, :, :, 0] = 0.5  # AU1 never changes in any prediction
    speaker[:, :, 3] = 0.0  # nor AU6 in any speaker
    # FRCorr: the constant channel's CCC is 0, exactly like the reference's NaN → 0.
    assert metrics.frcorr(preds, listener, appropriate) == pytest.approx(
        ref_frcorr(preds, listener, appropriate), rel=1e-9
    )
    # FRSyn default: the flat channel has r = 0 and the other 24 channels decide.
    assert metrics.frsyn(preds, speaker, max_lag=5) == pytest.approx(ref_frsyn(preds, speaker, 5), rel=1e-9)
    # FRSyn official: a channel flat over the whole clip makes every offset max_lag.
    assert metrics.frsyn(preds, speaker, max_lag=5, constant_channels="official") == 5.0
    # FRDist still exact with a zero-width value range.
    assert metrics.frdist(preds, listener, appropriate, workers=1) == pytest.approx(
        ref_frdist(preds, listener, appropriate), rel=FRDIST_REL
    )
    # A fully constant prediction correlates with nothing: FRCorr 0.
    assert metrics.frcorr(np.full_like(preds, 0.3), listener, appropriate) == pytest.approx(0.0, abs=1e-12)


def test_sample_without_appropriate_reaction_raises():
    preds, listener, speaker, appropriate = random_case(8)
    appropriate[2] = 0
    with pytest.raises(ValueError, match=r"samples \[2\].*no appropriate reaction"):
        metrics.frcorr(preds, listener, appropriate)
    with pytest.raises(ValueError, match="no appropriate reaction"):
        metrics.compute_all(preds, listener, speaker, appropriate, workers=1)


def test_single_prediction_and_single_sample():
    preds, listener, speaker, appropriate = random_case(9, n=4, alpha=1, frames=60)
    assert metrics.frdiv(preds) == 0.0  # α = 1: no pairs of predictions
    assert metrics.frdvs(preds) > 0.0
    single = metrics.compute_all(preds[:1], listener[:1], speaker[:1], appropriate[:1, :1], workers=1)
    assert single["FRDvs"] == 0.0  # N = 1: no pairs of samples
    assert single["FRDiv"] == 0.0
    assert np.isfinite(list(single.values())).all()


def test_bad_inputs_name_the_field():
    preds, listener, speaker, appropriate = random_case(10)
    with pytest.raises(ValueError, match="listener: expected shape"):
        metrics.frcorr(preds, listener[:, :-1], appropriate)
    with pytest.raises(ValueError, match="preds: expected a 4-d array"):
        metrics.frdiv(preds[..., :24])
    bad = preds.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="preds: contains NaN"):
        metrics.frvar(bad)
    with pytest.raises(ValueError, match="max_lag"):
        metrics.frsyn(preds, speaker)  # 49 lags need more than 16 frames


def test_compute_all_keys_and_values():
    preds, listener, speaker, appropriate = random_case(11, frames=60)
    result = metrics.compute_all(preds, listener, speaker, appropriate, workers=1)
    assert list(result) == [
        "FRCorr", "FRDist", "FRDiv", "FRDvs", "FRVar", "FRSyn", "FRSyn_all", "FRRea", "track_corr", "track_sd_ratio"
    ]  # fmt: skip
    assert (result["track_corr"], result["track_sd_ratio"]) == metrics.tracking(preds, listener)
    assert result["FRSyn"] == metrics.frsyn(preds, speaker)
    assert result["FRSyn_all"] == metrics.frsyn(preds, speaker, all_predictions=True)
    assert result["FRDist"] == pytest.approx(ref_frdist(preds, listener, appropriate), rel=FRDIST_REL)
    # FRDist on two threads with the other metrics beside it: the same numbers.
    assert metrics.compute_all(preds, listener, speaker, appropriate, workers=2) == result


def test_kernels_are_compiled_at_import_for_every_input_kind(tmp_path):
    """Every numba kernel is compiled for its declared signatures when `dtw` is imported (a kernel
    compiled lazily has none before its first call), and FRDist on float64, float32 and read-only
    memory-mapped inputs compiles nothing more: no first call pays a compilation."""
    kernels = {name: value for name, value in vars(dtw).items() if isinstance(value, numba.core.dispatcher.Dispatcher)}
    assert len(kernels) == 13 and all(kernel.signatures for kernel in kernels.values())
    compiled = {name: len(kernel.signatures) for name, kernel in kernels.items()}
    preds, listener, _, appropriate = random_case(20, frames=40)
    np.save(tmp_path / "listener.npy", listener.astype(np.float32))
    mapped = np.load(tmp_path / "listener.npy", mmap_mode="r")
    assert not mapped.flags.writeable
    expected = metrics.frdist(preds, listener, appropriate, workers=1)
    assert metrics.frdist(preds.astype(np.float32), mapped, appropriate, workers=2) == pytest.approx(
        expected, rel=FRDIST_REL
    )
    assert {name: len(kernel.signatures) for name, kernel in kernels.items()} == compiled


def test_tracking_follows_the_listener_and_sees_flat_means():
    rng = np.random.default_rng(0)
    t = np.linspace(0, 6 * np.pi, 200)
    listener = np.zeros((2, 200, 25))
    listener[:, :, 15] = np.sin(t)
    listener[:, :, 16] = np.cos(t)
    following = listener[:, None] + 0.1 * rng.standard_normal((2, 5, 200, 25))
    corr, ratio = metrics.tracking(following, listener)
    assert corr > 0.95 and 0.95 < ratio < 1.05
    # Reactions that each move as much but ignore the listener: their α-mean is flat and uncorrelated.
    jitter = rng.standard_normal((2, 5, 200, 25)) * 0.7
    corr, ratio = metrics.tracking(jitter, listener)
    assert abs(corr) < 0.2 and ratio < 0.5
    # A constant prediction counts as r = 0; a constant listener channel is left out of the ratio.
    corr, _ = metrics.tracking(np.zeros((2, 5, 200, 25)), listener)
    assert corr == 0.0
    assert np.isnan(metrics.tracking(following, np.zeros_like(listener))[1])
