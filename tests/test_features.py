"""Feature extractors on real files: WAV via soundfile, MP4 via PyAV, models saved and reloaded."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile
import torch

from reactdiff.data.features import (
    MAX_PAD_FRAMES,
    MFCC_DIM,
    FacialFeatures,
    FeatureError,
    Wav2Vec2Features,
    decode_video,
    mfcc,
)
from reactdiff.data.tiny_models import make_tiny_facial_predictors, make_tiny_wav2vec2

pytestmark = pytest.mark.usefixtures("one_torch_thread")

RATE = 44_100
FPS = 25
HIDDEN = 16
VIDEO_FRAMES = 20
VIDEO_SIDE = 48
PREDICTOR_SIDE = 32


def tone(seconds: float, rate: int, amplitude: np.ndarray | float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.fixture(scope="module")
def quiet_then_loud_wav(tmp_path_factory) -> Path:
    """2 s of 440 Hz at 44.1 kHz: amplitude 0.05 for the first second, 0.5 for the second."""
    seconds = 2.0
    n = int(seconds * RATE)
    amplitude = np.where(np.arange(n) < n // 2, 0.05, 0.5)
    path = tmp_path_factory.mktemp("audio") / "clip.wav"
    soundfile.write(path, tone(seconds, RATE, amplitude), RATE)
    return path


@pytest.fixture(scope="module")
def grey_ramp_mp4(tmp_path_factory) -> Path:
    """20 frames of 48×48 H.264 at 25 fps; frame i is uniform grey of level 20 + 10·i."""
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width = stream.height = VIDEO_SIDE
        stream.pix_fmt = "yuv420p"
        for i in range(VIDEO_FRAMES):
            image = np.full((VIDEO_SIDE, VIDEO_SIDE, 3), 20 + 10 * i, dtype=np.uint8)
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))  # flush the encoder
    return path


@pytest.fixture(scope="module")
def tiny_wav2vec2_dir(tmp_path_factory) -> Path:
    return make_tiny_wav2vec2(tmp_path_factory.mktemp("w2v") / "tiny", hidden_size=HIDDEN)


@pytest.fixture(scope="module")
def tiny_predictors(tmp_path_factory) -> dict[str, Path]:
    return make_tiny_facial_predictors(tmp_path_factory.mktemp("facial"), input_size=PREDICTOR_SIDE)


# ---------------------------------------------------------------------------------------- MFCC


def test_mfcc_shape_and_loudness(quiet_then_loud_wav):
    audio, rate = soundfile.read(quiet_then_loud_wav, dtype="float32")
    feats = mfcc(audio, rate, frames=50)
    assert feats.shape == (50, MFCC_DIM) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    # Coefficient 0 follows log energy. 10x amplitude is +20 dB in the bands around 440 Hz; bands
    # far from the tone sit at the 80 dB floor in both halves, so c0 rises by less than 20·√26.
    quiet, loud = feats[2:23, 0].mean(), feats[27:48, 0].mean()
    assert loud - quiet > 10


def test_mfcc_resampling_matches_native_16k():
    at_44k = mfcc(tone(1.0, RATE, 0.3), RATE, frames=25)
    at_16k = mfcc(tone(1.0, 16_000, 0.3), 16_000, frames=25)
    # Edge frames see the resampling filter's start-up; compare the interior.
    np.testing.assert_allclose(at_44k[1:-1], at_16k[1:-1], atol=1.0)


def test_mfcc_alignment_pads_trims_and_refuses(quiet_then_loud_wav):
    audio, rate = soundfile.read(quiet_then_loud_wav, dtype="float32")
    exact = mfcc(audio, rate, frames=50)  # 2.0 s = 50 frames of 40 ms
    padded = mfcc(audio, rate, frames=53)
    np.testing.assert_array_equal(padded[:50], exact)
    np.testing.assert_array_equal(padded[50:], np.repeat(exact[-1:], 3, axis=0))
    np.testing.assert_array_equal(mfcc(audio, rate, frames=40), exact[:40])
    with pytest.raises(FeatureError, match="50 rows but 56"):
        mfcc(audio, rate, frames=50 + MAX_PAD_FRAMES + 1)


# ------------------------------------------------------------------------------------- wav2vec2


def test_wav2vec2_gives_two_states_per_frame(tiny_wav2vec2_dir, quiet_then_loud_wav):
    extractor = Wav2Vec2Features(tiny_wav2vec2_dir)
    assert extractor.dim == 2 * HIDDEN
    audio, rate = soundfile.read(quiet_then_loud_wav, dtype="float32")
    feats = extractor(audio, rate, frames=50)
    assert feats.shape == (50, 2 * HIDDEN) and feats.dtype == np.float32
    assert np.isfinite(feats).all()
    # 2.0 s gives 99 hidden states (receptive field 400, stride 320): the last frame's second
    # half is the padded copy of its first half, every earlier frame has two distinct states.
    np.testing.assert_array_equal(feats[-1, HIDDEN:], feats[-1, :HIDDEN])
    assert not np.allclose(feats[:-1, HIDDEN:], feats[:-1, :HIDDEN])


def test_wav2vec2_chunks_tile_without_gaps(tiny_wav2vec2_dir):
    # 16 kHz audio of exactly 30 frames plus the 80 samples the last state looks ahead: with
    # chunks of 7 frames every frame must get two real states, none padded.
    audio = np.random.default_rng(0).normal(0, 0.1, 30 * 640 + 80).astype(np.float32)
    extractor = Wav2Vec2Features(tiny_wav2vec2_dir, chunk_frames=7)
    feats = extractor(audio, 16_000, frames=30)
    assert feats.shape == (30, 2 * HIDDEN)
    assert not np.isclose(feats[:, HIDDEN:], feats[:, :HIDDEN]).all(axis=1).any()


def test_wav2vec2_without_preprocessor_config(tiny_wav2vec2_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_wav2vec2_dir, bare)
    (bare / "preprocessor_config.json").unlink()
    audio = tone(1.0, RATE, 0.3)
    with_config = Wav2Vec2Features(tiny_wav2vec2_dir)(audio, RATE, frames=25)
    without = Wav2Vec2Features(bare)(audio, RATE, frames=25)
    # The fallback is the same per-clip normalisation the saved extractor asks for.
    np.testing.assert_allclose(without, with_config, atol=1e-5)


def test_wav2vec2_refuses_a_folder_without_model(tmp_path):
    with pytest.raises(FeatureError, match="no config.json"):
        Wav2Vec2Features(tmp_path)


# ---------------------------------------------------------------------------------------- video


def test_decode_video_frames_and_resize(grey_ramp_mp4):
    video = decode_video(grey_ramp_mp4, VIDEO_FRAMES)
    assert video.shape == (VIDEO_FRAMES, VIDEO_SIDE, VIDEO_SIDE, 3) and video.dtype == np.uint8
    levels = video.reshape(VIDEO_FRAMES, -1).mean(axis=1)
    np.testing.assert_allclose(levels, 20 + 10 * np.arange(VIDEO_FRAMES), atol=4)
    small = decode_video(grey_ramp_mp4, 12, size=PREDICTOR_SIDE)
    assert small.shape == (12, PREDICTOR_SIDE, PREDICTOR_SIDE, 3)
    np.testing.assert_allclose(small.reshape(12, -1).mean(axis=1), levels[:12], atol=2)


def test_decode_video_errors_name_the_file(grey_ramp_mp4, tmp_path):
    missing = tmp_path / "missing.mp4"
    with pytest.raises(FeatureError, match="missing.mp4 does not exist"):
        decode_video(missing, 5)
    truncated = tmp_path / "truncated.mp4"
    data = grey_ramp_mp4.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(FeatureError, match="truncated.mp4"):
        decode_video(truncated, 5)
    with pytest.raises(FeatureError, match=f"has {VIDEO_FRAMES} decodable frames; expected at least 25"):
        decode_video(grey_ramp_mp4, 25)


# --------------------------------------------------------------------------------------- facial


def test_facial_features_dims_and_rows(tiny_predictors, grey_ramp_mp4):
    extractor = FacialFeatures(tiny_predictors, input_size=PREDICTOR_SIDE, chunk_frames=8)
    assert extractor.dims == {"va": 64, "au": 25088, "fe": 1408}
    feats = extractor(grey_ramp_mp4, VIDEO_FRAMES)
    # Rows must be the predictor applied to the matching frame, across chunk boundaries.
    images = torch.from_numpy(decode_video(grey_ramp_mp4, VIDEO_FRAMES, size=PREDICTOR_SIDE))
    images = images.permute(0, 3, 1, 2).float() / 255
    for name, dim in extractor.dims.items():
        assert feats[name].shape == (VIDEO_FRAMES, dim) and feats[name].dtype == np.float32
        expected = torch.jit.load(str(tiny_predictors[name]))(images).detach().numpy()
        np.testing.assert_allclose(feats[name], expected, rtol=1e-4, atol=1e-5)
        assert not np.allclose(feats[name][0], feats[name][-1])  # different frames, different rows


def test_facial_features_refuse_wrong_input_size(tiny_predictors):
    with pytest.raises(FeatureError, match=r"va\.pt is not a TorchScript module that accepts"):
        FacialFeatures({"va": tiny_predictors["va"]}, input_size=64)
