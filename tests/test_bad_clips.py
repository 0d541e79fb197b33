"""Each kind of bad input in a copy of the tiny corpus: scan_split rejects exactly that clip, says
which file and field and what was expected, and keeps every other row."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import numpy as np
import pytest

from reactdiff.data import layout
from reactdiff.data.corpus import ClipError, ClipRef, load_clip, read_split, scan_split, split_csv

TARGET = ClipRef("NoXI", "001_train", "Novice_video", "2")  # listener of train row 1


def _set_cell(path: Path, line: int, column: str, value: str) -> None:
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    cells[layout.EMOTION_COLUMNS.index(column)] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _replace_in_split_csv(root: Path, old: str, new: str) -> None:
    path = split_csv(root, "train")
    path.write_text(path.read_text().replace(old, new))


def _file(root: Path, tree: str, ref: ClipRef = TARGET) -> Path:
    return ref.file(root, "train", tree)


def emotion_wrong_column_count(root):
    path = _file(root, layout.EMOTION_DIR)
    lines = path.read_text().splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0]  # line 5 loses its last cell
    path.write_text("\n".join(lines) + "\n")
    return path, "columns (line 5)"


def emotion_nan_cell(root):
    _set_cell(_file(root, layout.EMOTION_DIR), 6, "Valence", "nan")
    return _file(root, layout.EMOTION_DIR), "Valence (line 6)"


def emotion_non_numeric_cell(root):
    _set_cell(_file(root, layout.EMOTION_DIR), 7, "Arousal", "high")
    return _file(root, layout.EMOTION_DIR), "Arousal (line 7)"


def au_value_two(root):
    _set_cell(_file(root, layout.EMOTION_DIR), 4, "AU12", "2")
    return _file(root, layout.EMOTION_DIR), "AU12 (line 4)"


def face3d_wrong_shape(root):
    np.save(_file(root, layout.FACE3D_DIR), np.zeros((51, 57), np.float32))
    return _file(root, layout.FACE3D_DIR), "shape"


def wav_missing(root):
    _file(root, layout.AUDIO_DIR).unlink()
    return _file(root, layout.AUDIO_DIR), "file"


def wav_truncated(root):
    _truncate(_file(root, layout.AUDIO_DIR))
    return _file(root, layout.AUDIO_DIR), "duration"


def mp4_missing(root):
    _file(root, layout.VIDEO_DIR).unlink()
    return _file(root, layout.VIDEO_DIR), "file"


def mp4_truncated(root):
    _truncate(_file(root, layout.VIDEO_DIR))
    return _file(root, layout.VIDEO_DIR), "file"


def face3d_fewer_frames(root):
    np.save(_file(root, layout.FACE3D_DIR), np.zeros((40, 1, 58), np.float32))
    return _file(root, layout.FACE3D_DIR), "frames"


def video_fewer_frames(root):
    path = _file(root, layout.VIDEO_DIR)
    with av.open(str(path), "w", format="mp4") as container:  # a valid 20-frame video
        stream = container.add_stream("libx264", rate=layout.FPS)
        stream.width = stream.height = 32
        stream.pix_fmt = "yuv420p"
        for _ in range(20):
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="rgb24")))
        container.mux(stream.encode())
    return path, "frames"


def clip_shorter_than_rest_of_split(root):
    # Emotion and 3DMM agree with each other (40 frames used) but not with the other clips (50).
    path = _file(root, layout.EMOTION_DIR)
    path.write_text("\n".join(path.read_text().splitlines()[:42]) + "\n")  # header + 41 rows
    face3d = np.load(_file(root, layout.FACE3D_DIR))
    np.save(_file(root, layout.FACE3D_DIR), face3d[:41])
    return path, "frames"


def unknown_person_folder(root):
    moved = ClipRef(TARGET.dataset, TARGET.session, "Learner_video", TARGET.clip)
    for tree in (layout.VIDEO_DIR, layout.AUDIO_DIR, layout.FACE3D_DIR):
        moved.person_dir(root, "train", tree).mkdir(parents=True)
        _file(root, tree).rename(_file(root, tree, moved))
    _replace_in_split_csv(root, TARGET.path, moved.path)
    return moved.person_dir(root, "train", layout.AUDIO_DIR), "person folder", moved


def split_names_absent_clip(root):
    absent = ClipRef(TARGET.dataset, TARGET.session, TARGET.person, "9")
    _replace_in_split_csv(root, TARGET.path, absent.path)
    return split_csv(root, "train"), absent.path, absent


CASES = [
    emotion_wrong_column_count,
    emotion_nan_cell,
    emotion_non_numeric_cell,
    au_value_two,
    face3d_wrong_shape,
    wav_missing,
    wav_truncated,
    mp4_missing,
    mp4_truncated,
    face3d_fewer_frames,
    video_fewer_frames,
    clip_shorter_than_rest_of_split,
    unknown_person_folder,
    split_names_absent_clip,
]


@pytest.mark.parametrize("corrupt", CASES, ids=[c.__name__ for c in CASES])
def test_scan_split_rejects_exactly_the_bad_clip(tiny_corpus, tmp_path, corrupt):
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    file, field, *bad = corrupt(root)
    bad_ref = bad[0] if bad else TARGET

    samples, rejected = scan_split(root, "train")

    assert len(rejected) == 1
    record = rejected[0]
    assert record["clip"] == bad_ref.path
    assert (record["file"], record["field"]) == (str(file), field)
    assert record["expected"] and record["expected"] in record["message"]
    assert str(file) in record["message"] and field in record["message"] and "To fix:" in record["message"]
    # Rows 0, 2, 3 survive, role-swapped among themselves; nothing of row 1 is used.
    assert [s.pair.row for s in samples] == [0, 2, 3, 0, 2, 3]
    assert all(bad_ref not in (s.speaker, s.listener) for s in samples)
    # The other splits are untouched.
    assert scan_split(root, "val").rejected == []


def test_clip_error_carries_file_field_expected(tiny_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    au_value_two(root)
    with pytest.raises(ClipError) as err:
        load_clip(root, "train", TARGET)
    e = err.value
    assert (e.file, e.field, e.expected, e.got) == (
        str(_file(root, layout.EMOTION_DIR)),
        "AU12 (line 4)",
        "0 or 1 (AU occurrence)",
        2.0,
    )
    assert isinstance(e, ValueError)


def test_split_csv_errors_name_the_line(tiny_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    _replace_in_split_csv(root, TARGET.path, "NoXI/001_train/2")
    with pytest.raises(ClipError, match=r"train.csv line 3 listener_path"):
        read_split(root, "train")
    split_csv(root, "train").write_text("a,b\n0,x\n")
    with pytest.raises(ClipError) as err:
        read_split(root, "train")
    assert err.value.field == "header"


def test_explicit_frame_count_keeps_clips_that_cover_it(tiny_corpus, tmp_path):
    root = tmp_path / "corpus"
    shutil.copytree(tiny_corpus, root)
    clip_shorter_than_rest_of_split(root)  # 40 frames used instead of 50
    samples, rejected = scan_split(root, "train", frames=40)
    assert rejected == [] and len(samples) == 8
    assert load_clip(root, "train", TARGET, frames=40).emotion.shape == (40, 25)
