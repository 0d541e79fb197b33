"""Corpus reader and appropriateness matrix on real files written by `synth`."""

from __future__ import annotations

import numpy as np
import pytest

from reactdiff.data import layout
from reactdiff.data.appropriateness import compute_matrix, load_matrix
from reactdiff.data.corpus import (
    ClipError,
    ClipRef,
    discover_clips,
    load_clip,
    parse_clip_path,
    read_split,
    role_swap,
    scan_split,
    validate_sample,
)
from reactdiff.data.features import decode_video
from reactdiff.data.synth import SAMPLES_PER_FRAME, render_face_video, write_synthetic_corpus

USED = 50  # the tiny corpus has 51 frames on disk


def test_round_trip_every_field(tiny_corpus, tiny_rows):
    for pair in tiny_rows:
        for written in pair:
            clip = load_clip(tiny_corpus, written.split, written.ref.path)
            assert clip.frames == USED
            np.testing.assert_array_equal(clip.emotion, written.emotion[:USED])
            np.testing.assert_array_equal(clip.face3d, written.face3d[:USED, 0])
            assert clip.emotion.dtype == clip.face3d.dtype == np.float32
            samples, rate = clip.read_audio()
            assert rate == layout.AUDIO_RATE and samples.dtype == np.float32
            np.testing.assert_array_equal(samples, written.audio[: USED * SAMPLES_PER_FRAME] / np.float32(32768))
            video = decode_video(clip.video_path, clip.frames)
            size = video.shape[1]
            assert video.shape == (USED, size, size, 3)
            drawn = render_face_video(written.emotion[:USED], written.face3d[:USED], written.palette, size)
            assert np.abs(video.astype(float) - drawn).mean() < 15  # H.264 is lossy; another face gives ~80


def test_split_rows_and_role_swap_order(tiny_corpus, tiny_rows):
    train = [r for r in tiny_rows if r[0].split == "train"]
    pairs = read_split(tiny_corpus, "train")
    assert [(p.speaker, p.listener) for p in pairs] == [(a.ref, b.ref) for a, b in train]
    assert {p.speaker.dataset for p in pairs} == {"NoXI", "RECOLA"}
    samples = role_swap(pairs)
    n = len(pairs)
    assert [s.index for s in samples] == list(range(2 * n))
    for s in range(n):
        assert (samples[s].speaker, samples[s].listener) == (pairs[s].speaker, pairs[s].listener)
        assert (samples[n + s].speaker, samples[n + s].listener) == (pairs[s].listener, pairs[s].speaker)
        assert samples[n + s].pair.row == s and samples[n + s].swapped


def test_parse_clip_path_tolerates_prefix_suffix_and_backslashes():
    ref = ClipRef("NoXI", "001_x", "Expert_video", "3")
    for text in [
        "NoXI/001_x/Expert_video/3",
        "train/NoXI/001_x/Expert_video/3.mp4",
        " NoXI\\001_x\\Expert_video\\3 ",
        "val/Audio_files/NoXI/001_x/Expert_video/3.wav",
    ]:
        assert parse_clip_path(text) == ref
    for text in ["NoXI/001_x/3", "CMU/001_x/Expert_video/3", "NoXI/a/b/c/d"]:
        with pytest.raises(ClipError) as err:
            parse_clip_path(text, "train.csv line 2")
        assert err.value.field == "clip path" and "<dataset>/<session>/<person>/<clip>" in err.value.expected


def test_emotion_tree_maps_person_folders_to_p1_p2(tiny_corpus, tiny_rows):
    cases = {
        ("NoXI", "Expert_video"): "P1",
        ("NoXI", "Novice_video"): "P2",
        ("RECOLA", "P25"): "P1",
        ("RECOLA", "P26"): "P2",
        ("RECOLA", "P42"): "P2",
        ("RECOLA", "P45"): "P1",
    }
    for (dataset, person), emotion_name in cases.items():
        path = ClipRef(dataset, "s", person, "7").file("/r", "train", layout.EMOTION_DIR)
        assert path.as_posix() == f"/r/train/Emotion/{dataset}/s/{emotion_name}/7.csv"
        assert ClipRef(dataset, "s", person, "7").file("/r", "train", layout.AUDIO_DIR).parent.name == person
    # The reader picks P1 for the speaker and P2 for the listener, whose data differ.
    speaker, listener = tiny_rows[2]  # a RECOLA row: P25 / P26
    assert (speaker.ref.person, listener.ref.person) == ("P25", "P26")
    np.testing.assert_array_equal(load_clip(tiny_corpus, "train", listener.ref).emotion, listener.emotion[:USED])
    assert not np.array_equal(speaker.emotion, listener.emotion)


def test_frames_on_disk_vs_used(tiny_corpus):
    ref = read_split(tiny_corpus, "train")[0].speaker
    assert load_clip(tiny_corpus, "train", ref).frames == USED
    clip = load_clip(tiny_corpus, "train", ref, frames=30)
    assert clip.emotion.shape == (30, 25) and clip.face3d.shape == (30, 58)
    assert clip.read_audio()[0].shape == (30 * SAMPLES_PER_FRAME,)
    assert decode_video(clip.video_path, clip.frames).shape[0] == 30
    with pytest.raises(ClipError) as err:
        load_clip(tiny_corpus, "train", ref, frames=60)
    assert err.value.field == "frames"


def test_real_length_clip_uses_first_750_of_751(tmp_path):
    write_synthetic_corpus(tmp_path / "c", {"test": 1}, frames_on_disk=layout.FRAMES_ON_DISK, video_size=16)
    speaker, listener = validate_sample(tmp_path / "c", "test", read_split(tmp_path / "c", "test")[0])
    assert speaker.frames == listener.frames == layout.FRAMES
    assert speaker.emotion.shape == (layout.FRAMES, layout.EMOTION_DIM)
    assert speaker.face3d.shape == (layout.FRAMES, layout.FACE3D_DIM)


def test_discover_clips_matches_split_list(tiny_corpus):
    for split in layout.SPLITS:
        named = {ref for p in read_split(tiny_corpus, split) for ref in (p.speaker, p.listener)}
        assert set(discover_clips(tiny_corpus, split)) == named


def test_scan_clean_split_keeps_everything(tiny_corpus):
    samples, rejected = scan_split(tiny_corpus, "train")
    assert rejected == []
    assert samples == role_swap(read_split(tiny_corpus, "train"))


# --------------------------------------------------------------------------------------------
# Appropriateness matrix
# --------------------------------------------------------------------------------------------


def _speaker_emotion(seed: int = 0, n: int = 12, frames: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(rng.normal(0, 1, (n, 1, 25)), rng.uniform(0.2, 1, (n, 1, 25)), (n, frames, 25))


def test_compute_matrix_diagonal_symmetry_and_threshold_monotonicity():
    speakers = _speaker_emotion()
    previous = None
    for threshold in [-1.0, 0.0, 0.2, 0.5, 0.9, 1.01]:
        m = compute_matrix(speakers, threshold)
        assert m.dtype == np.uint8 and m.shape == (12, 12)
        assert (np.diag(m) == 1).all() and (m == m.T).all()
        if previous is not None:
            assert (m <= previous).all()  # a stricter threshold only removes ones
        previous = m
    assert compute_matrix(speakers, -1.0).all()
    assert (compute_matrix(speakers, 1.01) == np.eye(12)).all()


def test_compute_matrix_marks_alike_speakers():
    speakers = _speaker_emotion(n=6)
    speakers[3] = speakers[0] + 0.01  # speaker 3 behaves like speaker 0
    m = compute_matrix(speakers, 0.9)
    assert m[0, 3] == m[3, 0] == 1
    assert m[0].sum() < 6


def test_load_matrix_npy_csv_and_errors(tmp_path):
    m = compute_matrix(_speaker_emotion(), 0.3)
    np.save(tmp_path / "m.npy", m)
    np.savetxt(tmp_path / "m.csv", m, delimiter=",", fmt="%d")
    for name in ["m.npy", "m.csv"]:
        loaded = load_matrix(tmp_path / name, 12)
        assert loaded.dtype == np.uint8 and (loaded == m).all()
    with pytest.raises(ValueError, match=r"m.npy: field 'shape': expected \(10, 10\)"):
        load_matrix(tmp_path / "m.npy", 10)
    bad = m.astype(float)
    bad[2, 5] = 2
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match=r"field 'value \[2, 5\]': expected 0 or 1"):
        load_matrix(tmp_path / "bad.npy", 12)
    empty = m.copy()
    empty[4] = 0
    np.save(tmp_path / "empty.npy", empty)
    with pytest.raises(ValueError, match="field 'row 4'"):
        load_matrix(tmp_path / "empty.npy", 12)
    with pytest.raises(ValueError, match="not found"):
        load_matrix(tmp_path / "missing.npy", 12)
