"""Naive baselines: interface, reproducibility, and analytic metric values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reactdiff.evaluate import metrics
from reactdiff.evaluate.baselines import (
    MeanFrameBaseline,
    MeanSeqBaseline,
    MimeBaseline,
    RandomBaseline,
    RidgeBaseline,
)


def speaker_feats(batch=3, frames=20, seed=0):
    rng = np.random.default_rng(seed)
    return {"emotion": rng.random((batch, frames, 25)), "3dmm": rng.standard_normal((batch, frames, 58))}


def fitted_means(seed=1, n=6, frames=20):
    rng = np.random.default_rng(seed)
    return rng.random((n, frames, 25)), rng.standard_normal((n, frames, 58))


def all_baselines():
    listener_emotion, listener_3dmm = fitted_means()
    return [
        RandomBaseline(mean_face=listener_3dmm.mean(axis=(0, 1))),
        MimeBaseline(),
        MeanSeqBaseline.fit(listener_emotion, listener_3dmm),
        MeanFrameBaseline.fit(listener_emotion, listener_3dmm),
        RidgeBaseline.fit(speaker_feats(batch=6, seed=2), listener_emotion, listener_3dmm),
    ]


@pytest.mark.parametrize("baseline", all_baselines(), ids=lambda b: b.name)
def test_generation_interface(baseline):
    feats = speaker_feats()
    out = baseline.generate(feats, alpha=4, mode="online", seed=3)
    assert set(out) == {"3dmm", "emotion"}
    assert out["emotion"].shape == (3, 4, 20, 25) and out["3dmm"].shape == (3, 4, 20, 58)
    assert out["emotion"].dtype == np.float32 and out["3dmm"].dtype == np.float32
    # Torch input gives the same numbers as numpy input.
    torch_out = baseline.generate({k: torch.from_numpy(v) for k, v in feats.items()}, alpha=4, seed=3)
    np.testing.assert_array_equal(torch_out["emotion"], out["emotion"])
    out["emotion"][0, 0, 0, 0] = 99.0  # outputs are owned arrays, not views of the baseline's state
    assert baseline.generate(feats, alpha=4, seed=3)["emotion"][0, 0, 0, 0] != 99.0


def test_names():
    assert [b.name for b in all_baselines()] == ["B_Random", "B_Mime", "B_MeanSeq", "B_MeanFr", "B_Ridge"]


def test_bad_inputs_name_the_stream():
    with pytest.raises(ValueError, match="missing stream '3dmm'"):
        MimeBaseline().generate({"emotion": np.zeros((1, 5, 25))})
    with pytest.raises(ValueError, match=r"speaker_feats\['emotion'\]: expected \(B, T, 25\)"):
        MimeBaseline().generate({"emotion": np.zeros((1, 5, 24)), "3dmm": np.zeros((1, 5, 58))})
    with pytest.raises(ValueError, match="mode"):
        MimeBaseline().generate(speaker_feats(), mode="causal")


def test_random_is_seeded_and_uses_the_mean_face():
    mean_face = np.linspace(-1, 1, 58)
    baseline = RandomBaseline(mean_face)
    a = baseline.generate(speaker_feats(), alpha=2, seed=7)
    b = baseline.generate(speaker_feats(), alpha=2, seed=7)
    c = baseline.generate(speaker_feats(), alpha=2, seed=8)
    np.testing.assert_array_equal(a["emotion"], b["emotion"])
    assert not np.array_equal(a["emotion"], c["emotion"])
    np.testing.assert_allclose(a["3dmm"], np.broadcast_to(mean_face, a["3dmm"].shape).astype(np.float32))
    assert 0.0 <= a["emotion"].min() and a["emotion"].max() < 1.0


def test_random_baseline_analytic_diversity_and_variance():
    # U[0, 1]: variance σ² = 1/12, so E‖u − v‖² per element = 2σ² = 1/6 for FRDiv and FRDvs.
    # All values are i.i.d., so each estimator's spread is known exactly: with n values per group,
    # Var(s²) = σ⁴ (2/(n−1) + κ/n), κ = −6/5 the excess kurtosis of the uniform. Tolerances are
    # 5 standard deviations of each estimator (a false failure ~1 in 10⁶ runs).
    n, alpha, frames = 8, 4, 50
    preds = RandomBaseline(np.zeros(58)).generate(speaker_feats(n, frames), alpha=alpha, seed=0)["emotion"]
    sigma4, kurtosis = (1 / 12) ** 2, -6 / 5

    def sd_of_mean_variance(group_size, groups):
        return np.sqrt(sigma4 * (2 / (group_size - 1) + kurtosis / group_size) / groups)

    assert metrics.frvar(preds) == pytest.approx(1 / 12, abs=5 * sd_of_mean_variance(frames, n * alpha * 25))
    assert metrics.frdiv(preds) == pytest.approx(1 / 6, abs=5 * 2 * sd_of_mean_variance(alpha, n * frames * 25))
    assert metrics.frdvs(preds) == pytest.approx(1 / 6, abs=5 * 2 * sd_of_mean_variance(n, alpha * frames * 25))


def test_mime_copies_the_speaker_and_its_frcorr_is_the_speaker_listener_ccc():
    feats = speaker_feats(batch=4, frames=30)
    out = MimeBaseline().generate(feats, alpha=3)
    np.testing.assert_array_equal(out["emotion"][:, 2], feats["emotion"].astype(np.float32))
    np.testing.assert_array_equal(out["3dmm"][:, 0], feats["3dmm"].astype(np.float32))
    listener = np.random.default_rng(5).random((4, 30, 25))
    # Each sample's own listener is its only appropriate reaction: FRCorr = α · mean CCC(speaker, listener).
    appropriate = np.eye(4)

    def ccc(a, b):
        r = np.corrcoef(a, b)[0, 1]
        return 2 * r * a.std() * b.std() / (a.var() + b.var() + (a.mean() - b.mean()) ** 2 + 1e-8)

    speaker = out["emotion"][:, 0].astype(np.float64)
    expected = 3 * np.mean([np.mean([ccc(listener[k, :, c], speaker[k, :, c]) for c in range(25)]) for k in range(4)])
    assert metrics.frcorr(out["emotion"], listener, appropriate) == pytest.approx(expected, rel=1e-5)


def test_mean_baselines_are_the_training_means():
    listener_emotion, listener_3dmm = fitted_means()
    seq = MeanSeqBaseline.fit(listener_emotion, listener_3dmm).generate(speaker_feats(frames=20), alpha=2)
    np.testing.assert_allclose(seq["emotion"][1, 1], listener_emotion.mean(0), rtol=1e-6)
    np.testing.assert_allclose(seq["3dmm"][0, 0], listener_3dmm.mean(0), rtol=1e-5, atol=1e-6)
    fr = MeanFrameBaseline.fit(listener_emotion, listener_3dmm).generate(speaker_feats(frames=20), alpha=2)
    np.testing.assert_allclose(fr["emotion"][2, 0, 7], listener_emotion.mean((0, 1)), rtol=1e-6)
    # Deterministic, so no diversity; B_MeanFr is also flat in time.
    assert metrics.frdiv(seq["emotion"]) == 0.0 and metrics.frdvs(seq["emotion"]) == 0.0
    assert metrics.frvar(fr["emotion"]) == pytest.approx(0.0, abs=1e-12)
    assert metrics.frvar(seq["emotion"]) > 0.01


def test_mean_sequence_shorter_than_the_speaker_is_refused():
    listener_emotion, listener_3dmm = fitted_means(frames=10)
    with pytest.raises(ValueError, match="fitted on 10"):
        MeanSeqBaseline.fit(listener_emotion, listener_3dmm).generate(speaker_feats(frames=20))


def lagged_corpus(n: int, frames: int, lag: int, seed: int):
    """Speakers with slow random V/A (and AUs/expressions driven by them); listeners copy the
    speaker `lag` frames later with gain 0.8 and a little noise."""
    rng = np.random.default_rng(seed)
    steps = rng.standard_normal((n, frames + lag, 25)) * 0.2
    slow = np.cumsum(steps, axis=1)
    slow = 0.5 + 0.4 * np.tanh(slow - slow.mean(axis=1, keepdims=True))
    speaker = slow[:, lag:]
    listener = 0.5 + 0.8 * (slow[:, :frames] - 0.5) + 0.02 * rng.standard_normal((n, frames, 25))
    return speaker.astype(np.float32), listener.astype(np.float32)


def test_ridge_learns_a_lagged_copy_and_beats_mime_on_frcorr():
    train_speaker, train_listener = lagged_corpus(24, 120, lag=8, seed=0)
    test_speaker, test_listener = lagged_corpus(6, 120, lag=8, seed=1)
    zeros = np.zeros(train_listener.shape[:2] + (58,), np.float32)
    ridge = RidgeBaseline.fit({"emotion": train_speaker}, train_listener, zeros, lags=(0, 4, 8, 12))
    feats = {"emotion": test_speaker, "3dmm": np.zeros(test_speaker.shape[:2] + (58,), np.float32)}
    appropriate = np.eye(6)
    scores = {
        b.name: metrics.frcorr(b.generate(feats, alpha=2)["emotion"], test_listener, appropriate)
        for b in (ridge, MimeBaseline())
    }
    assert scores["B_Ridge"] > scores["B_Mime"] + 0.2, scores
    # The lag-8 input carries the copy: its weights on the matching channel dominate.
    lag8 = ridge.weights[2 * 25 : 3 * 25, :25]
    assert np.all(np.diag(lag8) > 0.5) and np.abs(lag8 - np.diag(np.diag(lag8))).max() < 0.2


def test_ridge_reads_ahead_with_a_negative_lag():
    # The listener leads: it shows now what the speaker shows 8 frames later. Only a negative lag sees that.
    speaker, listener = lagged_corpus(24, 120, lag=8, seed=0)
    zeros = np.zeros(speaker.shape[:2] + (58,), np.float32)
    ahead = RidgeBaseline.fit({"emotion": listener}, speaker, zeros, lags=(0, -8))
    assert np.all(np.diag(ahead.weights[25:50, :25]) > 0.5)
    design = RidgeBaseline.design({"emotion": speaker[:1, :10]}, (-3,), ("emotion",))
    assert np.array_equal(design[0, -4:, :25], np.repeat(speaker[:1, 9], 4, axis=0))  # the last frame repeats


def test_ridge_is_fitted_on_train_only_and_deterministic():
    train_speaker, train_listener = lagged_corpus(10, 60, lag=3, seed=3)
    zeros = np.zeros(train_listener.shape[:2] + (58,), np.float32)
    ridge = RidgeBaseline.fit({"emotion": train_speaker}, train_listener, zeros)
    weights = ridge.weights.copy()
    test_speaker, _ = lagged_corpus(4, 60, lag=3, seed=4)
    first = ridge.generate({"emotion": test_speaker, "3dmm": zeros[:4]}, alpha=3)["emotion"]
    changed = test_speaker.copy()
    changed[1:] = 1.0 - changed[1:]  # other test speakers: the weights and sample 0's reaction stay
    second = ridge.generate({"emotion": changed, "3dmm": zeros[:4]}, alpha=3)["emotion"]
    np.testing.assert_array_equal(ridge.weights, weights)
    np.testing.assert_array_equal(first[0], second[0])
    assert not np.array_equal(first[1], second[1])
    assert metrics.frdiv(first) == 0.0  # the same reaction α times
    again = RidgeBaseline.fit({"emotion": train_speaker}, train_listener, zeros)
    np.testing.assert_array_equal(again.weights, weights)
    # Rescaled to the training listeners' spread, inside their range.
    fitted = ridge.predict({"emotion": train_speaker})[..., :25]
    np.testing.assert_allclose(fitted.std(axis=(0, 1)), train_listener.std(axis=(0, 1)), rtol=0.1)
    assert fitted.min() >= train_listener.min() - 1e-6 and fitted.max() <= train_listener.max() + 1e-6
