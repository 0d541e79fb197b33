"""`synth`: layout, reproducibility and the learnable structure it promises."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from reactdiff.data import layout
from reactdiff.data.corpus import corpus_fingerprint, read_split
from reactdiff.data.synth import MODES, SAMPLES_PER_FRAME, generate_corpus, render_face_video, write_synthetic_corpus

SMALL = {"dyads": {"train": 2, "val": 1}, "frames_on_disk": 26, "video_size": 16, "clips_per_session": 2}


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())


def test_same_seed_same_bytes_and_fingerprint_other_seed_differs(tmp_path):
    a = write_synthetic_corpus(tmp_path / "a", seed=7, **SMALL)
    b = write_synthetic_corpus(tmp_path / "b", seed=7, **SMALL)
    c = write_synthetic_corpus(tmp_path / "c", seed=8, **SMALL)
    assert _files(tmp_path / "a") == _files(tmp_path / "b") == _files(tmp_path / "c")
    for rel in _files(tmp_path / "a"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert a.fingerprint == b.fingerprint == corpus_fingerprint(tmp_path / "b")
    assert c.fingerprint != a.fingerprint
    assert a.rows == {"train": 2, "val": 1} and a.person_clips == 6


def test_fingerprint_ignores_mtime_but_sees_content(tiny_corpus, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(tiny_corpus, root)
    before = corpus_fingerprint(root)
    some_csv = next((root / "train" / layout.EMOTION_DIR).rglob("*.csv"))
    os.utime(some_csv, (0, 0))
    assert corpus_fingerprint(root) == before
    some_csv.write_text(some_csv.read_text().replace("0.", "1.", 1))
    assert corpus_fingerprint(root) != before


def test_layout_and_split_lists(tiny_corpus):
    assert (tiny_corpus / "train.csv").read_text().splitlines()[0] == ",speaker_path,listener_path"
    pairs = read_split(tiny_corpus, "train")
    assert {(p.speaker.dataset, p.speaker.person, p.listener.person) for p in pairs} == {
        ("NoXI", "Expert_video", "Novice_video"),
        ("RECOLA", "P25", "P26"),
    }
    ref = pairs[0].listener
    for tree, suffix in layout.SUFFIX.items():
        assert ref.file(tiny_corpus, "train", tree).is_file()
        assert ref.file(tiny_corpus, "train", tree).suffix == suffix
    emotion = ref.file(tiny_corpus, "train", layout.EMOTION_DIR)
    assert emotion.read_text().splitlines()[0] == ",".join(layout.EMOTION_COLUMNS)
    assert np.load(ref.file(tiny_corpus, "train", layout.FACE3D_DIR)).shape == (51, 1, 58)


def test_written_values_are_well_formed(tiny_rows):
    for pair in tiny_rows:
        for clip in pair:
            au = clip.emotion[:, layout.AU_SLICE]
            assert set(np.unique(au)) <= {0.0, 1.0}
            assert np.abs(clip.emotion[:, layout.VA_SLICE]).max() <= 1
            np.testing.assert_allclose(clip.emotion[:, layout.EXPR_SLICE].sum(axis=1), 1, atol=5e-4)
            assert clip.face3d.shape == (51, 1, 58) and clip.audio.shape == (51 * SAMPLES_PER_FRAME,)


@pytest.fixture(scope="module")
def longer_rows():
    return list(generate_corpus({"train": 12}, frames_on_disk=301, seed=3, clips_per_session=3))


def test_listener_follows_speaker_with_lag_through_its_mode(longer_rows):
    checked = 0
    for a, b in longer_rows:
        for speaker, listener in ((a, b), (b, a)):
            lag, n = listener.lag, len(listener.emotion)
            # frames where the speaker spoke `lag` frames ago and the listener is listening now
            listening = speaker.speaking[: n - lag] & ~listener.speaking[lag:]
            if listening.sum() < 50:
                continue
            gains = MODES[listener.mode][:2]
            for channel, gain in zip((15, 16), gains, strict=True):  # valence, arousal
                r = np.corrcoef(
                    speaker.emotion[: n - lag, channel][listening], listener.emotion[lag:, channel][listening]
                )[0, 1]
                assert np.sign(gain) * r > 0.5, (listener.ref, listener.mode, channel, r)
            checked += 1
    assert checked >= 10
    assert {lis.mode for row in longer_rows for lis in row} == set(MODES)


def test_personal_style_persists_across_a_persons_clips(longer_rows):
    clips = [c for row in longer_rows for c in row]
    mean_face = np.stack([c.face3d[:, 0].mean(axis=0) for c in clips])
    person = [(c.ref.session, c.ref.person) for c in clips]
    dist = np.linalg.norm(mean_face[:, None] - mean_face[None], axis=2)
    np.fill_diagonal(dist, np.inf)
    nearest_is_same_person = [person[i] == person[j] for i, j in enumerate(dist.argmin(axis=1))]
    assert np.mean(nearest_is_same_person) >= 0.9


def test_audio_energy_and_pitch_follow_arousal_while_speaking(longer_rows):
    freqs = np.fft.rfftfreq(1 << 15, 1 / layout.AUDIO_RATE)
    band = (freqs > 60) & (freqs < 400)
    for clip in [c for row in longer_rows[:3] for c in row]:
        frames = clip.audio.reshape(-1, SAMPLES_PER_FRAME).astype(float)
        rms = np.sqrt((frames**2).mean(axis=1))
        speaking = clip.speaking
        assert rms[speaking].mean() > 5 * rms[~speaking].mean()
        # f0 per 4-frame window (100 ms) against the window's arousal, speaking windows only
        windows = clip.audio[: 300 * SAMPLES_PER_FRAME].reshape(75, -1).astype(float)
        spectrum = np.abs(np.fft.rfft(windows * np.hanning(windows.shape[1]), n=1 << 15, axis=1))
        f0 = freqs[band][spectrum[:, band].argmax(axis=1)]
        voiced = speaking[:300].reshape(75, 4).all(axis=1)
        arousal = clip.emotion[:300, 16].reshape(75, 4).mean(axis=1)
        assert voiced.sum() >= 10
        assert np.corrcoef(f0[voiced], arousal[voiced])[0, 1] > 0.9


def test_face_video_follows_aus():
    emotion = np.zeros((4, 25), np.float32)
    emotion[1, [13, 14]] = 1  # AU25 + AU26: mouth open
    emotion[2, [0, 1]] = 1  # AU1 + AU2: brows raised
    emotion[3, 7] = 1  # AU12: smile
    palette = np.array([[0, 0, 255], [255, 255, 255], [0, 0, 0]], np.uint8)
    frames = render_face_video(emotion, np.zeros((4, 1, 58), np.float32), palette, 64)
    dark = (frames == 0).all(axis=3)
    mouth, brows = slice(40, 56), slice(10, 24)
    assert dark[1, mouth].sum() > 1.5 * dark[0, mouth].sum()
    rows = np.arange(64)[brows, None]
    brow_height = [(rows * dark[i, brows]).sum() / dark[i, brows].sum() for i in (0, 2)]
    assert brow_height[1] < brow_height[0] - 1  # raised brows sit higher (smaller row index)
    assert not np.array_equal(dark[3, mouth], dark[0, mouth])


def test_arguments_are_checked(tmp_path):
    with pytest.raises(ValueError, match="dyads"):
        write_synthetic_corpus(tmp_path / "x", {"training": 2})
    with pytest.raises(ValueError, match="video_size"):
        write_synthetic_corpus(tmp_path / "x", 1, video_size=33)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError, match="not empty"):
        write_synthetic_corpus(tmp_path / "full", 1)
