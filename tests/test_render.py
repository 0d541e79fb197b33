"""`reactdiff render`: the drawn face is a function of the AUs and the pose only, each AU moves
its own region, and videos decode with PyAV at the expected frame count, size and audio length."""

from __future__ import annotations

import av
import numpy as np
import pytest
from test_generate import save_tiny_checkpoint

from reactdiff.commands.render import render
from reactdiff.data import corpus, layout
from reactdiff.render.face import draw_bars, draw_face, load_renderer

SIZE = 96
NEUTRAL = np.zeros(layout.EMOTION_DIM)
NEUTRAL[layout.EXPR_SLICE.start] = 1.0  # all "Neutral"
STILL = np.zeros(6)


def changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(rows, columns) of the pixels that differ."""
    return np.argwhere((a != b).any(axis=-1))


def with_channel(name: str, value: float) -> np.ndarray:
    emotion = NEUTRAL.copy()
    emotion[layout.EMOTION_COLUMNS.index(name)] = value
    return emotion


def test_the_same_inputs_draw_the_same_face():
    assert np.array_equal(draw_face(NEUTRAL, STILL, SIZE), draw_face(NEUTRAL.copy(), STILL.copy(), SIZE))
    assert draw_face(NEUTRAL, STILL, SIZE).shape == (SIZE, SIZE, 3)


@pytest.mark.parametrize(
    "au, rows",
    [
        ("AU1", (0.1, 0.45)),
        ("AU2", (0.1, 0.45)),
        ("AU4", (0.1, 0.45)),
        ("AU7", (0.35, 0.5)),
        ("AU12", (0.6, 0.9)),
        ("AU15", (0.6, 0.9)),
        ("AU25", (0.6, 0.9)),
        ("AU26", (0.5, 1.0)),
    ],
)
def test_one_au_changes_only_its_region(au, rows):
    before, after = draw_face(NEUTRAL, STILL, SIZE), draw_face(with_channel(au, 1.0), STILL, SIZE)
    pixels = changed(before, after)
    assert len(pixels) > 10, f"{au} moved nothing"
    top, bottom = pixels[:, 0].min() / SIZE, (pixels[:, 0].max() + 1) / SIZE
    assert rows[0] <= top and bottom <= rows[1], f"{au} changed rows {top:.2f}-{bottom:.2f}, expected within {rows}"


def test_every_au_and_every_pose_value_moves_the_face():
    neutral = draw_face(NEUTRAL, STILL, SIZE)
    for name in layout.AU_NAMES:
        assert len(changed(neutral, draw_face(with_channel(name, 1.0), STILL, SIZE))), name
    for k in range(6):
        pose = STILL.copy()
        pose[k] = 0.2
        assert len(changed(neutral, draw_face(NEUTRAL, pose, SIZE))) > 20, f"pose value {k}"


def test_valence_arousal_and_expressions_show_in_the_bars_not_the_face():
    neutral = draw_face(NEUTRAL, STILL, SIZE)
    for name in ("Valence", "Arousal", "Happy"):
        other = with_channel(name, 0.8)
        assert np.array_equal(draw_face(other, STILL, SIZE), neutral), name
        assert not np.array_equal(draw_bars(other, SIZE, 24), draw_bars(NEUTRAL, SIZE, 24)), name


def test_draw_face_refuses_wrong_shapes_and_renderers_are_hooks():
    with pytest.raises(ValueError, match=r"pose \(6,\)"):
        draw_face(NEUTRAL, np.zeros(58), SIZE)
    with pytest.raises(ValueError, match="package.module:function"):
        load_renderer("no-colon")
    with pytest.raises(ValueError, match="cannot import"):
        load_renderer("reactdiff.render.face:missing_function")
    assert load_renderer("reactdiff.render.face:drawn_face") is load_renderer("drawn")


def test_render_from_a_model_and_a_speaker_clip(tiny_corpus, tmp_path):
    pair = corpus.read_split(tiny_corpus, "val")[0]
    speaker = pair.speaker.file(tiny_corpus, "val", layout.AUDIO_DIR)
    checkpoint = save_tiny_checkpoint(tmp_path / "stage2.pt")
    alpha, frames = 2, 50  # the tiny corpus: 51 frames on disk, 50 used
    path = render(checkpoint, tmp_path / "video.mp4", speaker=speaker, alpha=alpha, face_size=64)

    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        assert video.codec_context.name == "h264" and audio.codec_context.name == "aac"
        decoded = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(decoded) == frames
    data = path.read_bytes()
    assert data.index(b"moov") < data.index(b"mdat")  # faststart: browsers play it while it loads
    # 3 faces (2 reactions + the real listener) in a 2 × 2 grid beside a square speaker panel.
    tile_height = 16 + 64 + 16
    assert decoded[0].shape == (2 * tile_height, (2 * tile_height - 16) + 4 + 2 * 64, 3)
    with av.open(str(path)) as container:
        seconds = sum(frame.samples for frame in container.decode(audio=0)) / container.streams.audio[0].rate
    assert seconds == pytest.approx(frames / layout.FPS, abs=0.05)
    # The faces move: the reaction tiles differ between the first and the last frame.
    assert not np.array_equal(decoded[0][:, -128:], decoded[-1][:, -128:])


def test_render_refuses_a_model_without_a_speaker(tmp_path):
    with pytest.raises(ValueError, match="needs --speaker"):
        render(tmp_path / "model.pt", tmp_path / "video.mp4")


def test_render_a_generate_folder_of_a_store_split(tiny_store, tiny_corpus, tmp_path):
    from reactdiff.generate import generate_to_dir

    generate_to_dir(
        save_tiny_checkpoint(tmp_path / "stage2.pt"), f"{tiny_store}:test", tmp_path / "out", alpha=1, seed=0
    )
    with pytest.raises(ValueError, match="pass --corpus ROOT"):
        render(tmp_path / "out", tmp_path / "video.mp4")
    clip = corpus.read_split(tiny_corpus, "test")[0].listener.path  # speaks in the role-swapped half
    path = render(tmp_path / "out", tmp_path / "still.png", clip=clip, corpus_root=tiny_corpus, face_size=32, still=10)
    # 1 reaction + the real listener side by side (tiles of 16 + 32 + 12 rows), beside the speaker panel.
    from matplotlib.image import imread

    assert imread(path).shape[:2] == (60, (60 - 16) + 4 + 2 * 32)
    with pytest.raises(ValueError, match="was not generated"):
        render(tmp_path / "out", tmp_path / "video.mp4", clip="NoXI/999_test/Expert_video/1", corpus_root=tiny_corpus)
