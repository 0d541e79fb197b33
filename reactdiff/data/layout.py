"""Facts of the REACT2024 corpus layout, shared by the reader, `synth` and metrics."""

from __future__ import annotations

SPLITS = ("train", "val", "test")
DATASETS = ("NoXI", "RECOLA")

# Sub-trees of <root>/<split>/ and the file suffix of each.
VIDEO_DIR, AUDIO_DIR, EMOTION_DIR, FACE3D_DIR = "Video_files", "Audio_files", "Emotion", "3D_FV_files"
SUFFIX = {VIDEO_DIR: ".mp4", AUDIO_DIR: ".wav", EMOTION_DIR: ".csv", FACE3D_DIR: ".npy"}

FPS = 25
FRAMES_ON_DISK = 751  # a 30 s clip
FRAMES = 750  # models and metrics use the first 750
AUDIO_RATE = 44_100
VIDEO_SIZE = 256

AU_NAMES = (
    "AU1",
    "AU2",
    "AU4",
    "AU6",
    "AU7",
    "AU9",
    "AU10",
    "AU12",
    "AU14",
    "AU15",
    "AU17",
    "AU23",
    "AU24",
    "AU25",
    "AU26",
)
EXPRESSION_NAMES = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
EMOTION_COLUMNS = AU_NAMES + ("Valence", "Arousal") + EXPRESSION_NAMES
EMOTION_DIM = len(EMOTION_COLUMNS)  # 25
AU_SLICE, VA_SLICE, EXPR_SLICE = slice(0, 15), slice(15, 17), slice(17, 25)

FACE3D_DIM = 58  # FaceVerse v2
FACE3D_EXPR, FACE3D_ROT, FACE3D_TRANS = slice(0, 52), slice(52, 55), slice(55, 58)

# Person folders of Video/Audio/3D trees → the Emotion tree's names.
PERSON_TO_EMOTION = {
    "NoXI": {"Expert_video": "P1", "Novice_video": "P2"},
    "RECOLA": {"P25": "P1", "P41": "P1", "P45": "P1", "P26": "P2", "P42": "P2", "P46": "P2"},
}


def emotion_person(dataset: str, person: str) -> str:
    """Map a Video/Audio/3D person folder to its Emotion-tree name, or raise a clear error."""
    try:
        return PERSON_TO_EMOTION[dataset][person]
    except KeyError:
        known = ", ".join(sorted(PERSON_TO_EMOTION.get(dataset, {}))) or "none"
        raise ValueError(
            f"unknown person folder '{person}' for dataset '{dataset}' (expected one of: {known})"
        ) from None


# What `generate` writes under its output folder, read back by `render` and `score`.
REACTIONS_DIR = "reactions"  # reactions/<dataset>/<session>/<person>/<clip>/<k>.csv and <k>.npy
EMOTION_FILE, FACE3D_FILE = "emotion.npy", "3dmm.npy"  # (N, α, T, 25) / (N, α, T, 58), clip i in row i
SUMMARY_FILE = "generation.json"  # model, options and the clips, in row order
