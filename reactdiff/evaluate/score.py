"""`reactdiff score`: the REACT2024 metrics for predictions made anywhere, with the same table,
JSON and plots as `evaluate` (`metrics.compute_all`, `report.write_results`).

Predictions (`load_predictions`), one of:
    <file>.npy / <file>.pt   emotion (N, α, T, 25) in the split's sample order (below); a `.pt`
                             holds a tensor or array, or a dict with an "emotion" entry
    <folder>                 written by `reactdiff generate` (its `emotion.npy`, rows matched to
                             the split by the clip names in `generation.json`), or any folder of
                             per-clip CSVs `[reactions/]<dataset>/<session>/<person>/<clip>/<k>.csv`
                             (k = 0..α-1, the REACT2024 Emotion format), matched by clip name
3DMM (N, α, T, 58) is optional (`threedmm`): it is checked for shape and finite values only, as
the REACT2024 metrics are computed on emotion.

Ground truth (`truth_from_corpus`, `truth_from_store`): a corpus split, read by the corpus reader
(the speaker and listener Emotion CSVs, the first T = rows − 1 frames), or a feature-store split.
The appropriateness matrix: the store's, or a given (N, N) `.npy`/`.csv` (the organisers'
`neighbour_emotion_<split>.npy`), or for a corpus without one, computed from speaker similarity
as `prepare` does.

Sample order (the order of N, and of the matrix's rows and columns): with R rows in
`<split>.csv` (header `,speaker_path,listener_path`), sample s < R is row s as written (its
speaker_path speaks, its listener_path listens) and sample R + s is row s role-swapped (the
listener_path speaks). Predictions for sample s are reactions to the speaker of sample s.
`--clips FILE` (one speaker clip `<dataset>/<session>/<person>/<clip>` per line, in the array's row
order) lets `score` match an array in another order, and check one in this order.

Refused with the file, the field and what was expected: a shape or sample count other than the
split's, NaN or infinite values, an AU or expression probability outside [0, 1], a valence or
arousal outside [-1, 1], a matrix of the wrong size, clips that do not match the split's speakers.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from reactdiff import predict
from reactdiff.data import corpus, layout
from reactdiff.data.appropriateness import compute_matrix, load_matrix
from reactdiff.errors import UserError
from reactdiff.evaluate import baselines, metrics, report

PREDICTIONS_LABEL = "predictions"
# Valid range of each emotion channel, in layout order.
RANGES = [(0.0, 1.0)] * len(layout.AU_NAMES) + [(-1.0, 1.0)] * 2 + [(0.0, 1.0)] * len(layout.EXPRESSION_NAMES)
CHECK_SAMPLES = 64
_CLIP_FOLDER = re.compile(r"^[^/]+/[^/]+/[^/]+/[^/]+$")


class ScoreError(UserError, ValueError):
    """Predictions or ground truth that cannot be scored: names the file, the field and the fix."""

    def __init__(self, path: str | Path, field: str, expected: str, got: object, hint: str):
        super().__init__(f"{path}: field '{field}': expected {expected}, got {got}; {hint}")


@dataclass
class GroundTruth:
    """A split's samples in the order above: emotion (N, T, 25) and the (N, N) matrix."""

    speaker_clips: list[str]
    listener: np.ndarray
    speaker: np.ndarray
    appropriate: np.ndarray
    source: str


@dataclass
class Predictions:
    emotion: np.ndarray  # (N, α, T, 25), in the split's sample order
    threedmm: np.ndarray | None
    source: str


# --------------------------------------------------------------------------------------------
# Ground truth
# --------------------------------------------------------------------------------------------


def truth_from_corpus(
    root: str | Path, split: str, appropriate: str | Path | None = None, with_matrix: bool = True
) -> GroundTruth:
    """A corpus split, in the role-swapped order of `corpus.role_swap`, read by the corpus reader
    (`with_matrix=False`: an empty matrix, for a split that only fits B_Ridge)."""
    samples = corpus.role_swap(corpus.read_split(root, split))
    emotion: dict[corpus.ClipRef, np.ndarray] = {}
    for sample in samples:
        for ref in (sample.speaker, sample.listener):
            if ref not in emotion:
                emotion[ref] = corpus.read_emotion(ref.file(root, split, layout.EMOTION_DIR))[:-1]
    frames = {len(values) for values in emotion.values()}
    if len(frames) != 1:
        raise ScoreError(
            corpus.split_csv(root, split),
            "frames",
            "one frame count for every clip of the split",
            sorted(frames),
            "re-extract the clips whose Emotion CSV is shorter",
        )
    speaker = np.stack([emotion[s.speaker] for s in samples]).astype(np.float32)
    listener = np.stack([emotion[s.listener] for s in samples]).astype(np.float32)
    matrix = (
        (load_matrix(appropriate, len(samples)) if appropriate else compute_matrix(speaker))
        if with_matrix
        else np.zeros((0, 0))
    )
    return GroundTruth([s.speaker.path for s in samples], listener, speaker, matrix, f"corpus {root} split '{split}'")


def truth_from_store(
    store_root: str | Path, split: str, appropriate: str | Path | None = None, with_matrix: bool = True
) -> GroundTruth:
    """A feature-store split: its samples and matrix exactly as `evaluate` reads them."""
    from reactdiff.data.store import Store, to_samples

    store = Store(store_root)
    samples = to_samples(store.read_split(split, ["emotion"]), ["emotion"])
    n = len(samples["speaker_clip"])
    matrix = (
        (load_matrix(appropriate, n) if appropriate else store.appropriate(split)) if with_matrix else np.zeros((0, 0))
    )
    return GroundTruth(
        samples["speaker_clip"],
        samples["listener"]["emotion"],
        samples["speaker"]["emotion"],
        matrix,
        f"store {store_root} split '{split}'",
    )


# --------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------


def _load_array(path: Path, key: str) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path, mmap_mode="r", allow_pickle=False)
    if path.suffix == ".pt":
        import torch

        value = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(value, dict):
            if key not in value:
                raise ScoreError(
                    path,
                    "keys",
                    f"a tensor, or a dict with an '{key}' entry",
                    sorted(value),
                    f"save the {key} predictions under '{key}'",
                )
            value = value[key]
        return value.numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    raise ScoreError(
        path,
        "suffix",
        "a .npy or .pt file, or a folder of per-clip CSVs",
        repr(path.suffix),
        "convert the predictions, e.g. np.save('emotion.npy', predictions)",
    )


def _csv_folder(folder: Path) -> tuple[list[str], np.ndarray]:
    """(clips, emotion (clips, α, T, 25)) of per-clip CSV folders `<clip>/<k>.csv`."""
    base = folder / layout.REACTIONS_DIR if (folder / layout.REACTIONS_DIR).is_dir() else folder
    clips = sorted(p.parent.relative_to(base).as_posix() for p in base.rglob("0.csv"))
    clips = [c for c in clips if _CLIP_FOLDER.match(c)]
    if not clips:
        raise ScoreError(
            folder,
            "files",
            "per-clip CSVs <dataset>/<session>/<person>/<clip>/<k>.csv "
            "(k = 0..α-1), as `reactdiff generate` writes them",
            "none",
            "point at the folder that holds the <dataset> folders",
        )
    alpha = len(list((base / clips[0]).glob("*.csv")))
    per_clip = []
    for clip in clips:
        files = sorted((base / clip).glob("*.csv"))
        if [f.name for f in files] != [f"{k}.csv" for k in range(alpha)]:
            raise ScoreError(
                base / clip,
                "files",
                f"0.csv .. {alpha - 1}.csv like {clips[0]}",
                [f.name for f in files],
                "give every clip the same number of reactions",
            )
        per_clip.append(np.stack([corpus.read_emotion(f) for f in files]))
    frames = {p.shape[1] for p in per_clip}
    if len(frames) != 1:
        raise ScoreError(
            folder,
            "frames",
            "the same number of frame rows in every CSV",
            sorted(frames),
            "write every reaction over the whole clip",
        )
    return clips, np.stack(per_clip).astype(np.float32)


def load_predictions(
    path: str | Path, truth: GroundTruth, threedmm: str | Path | None = None, clips_file: str | Path | None = None
) -> Predictions:
    """Predictions in the split's sample order, checked against `truth` (module doc)."""
    path = Path(path)
    if not path.exists():
        raise ScoreError(
            path, "file", "predictions (.npy, .pt, or a folder)", "no such file or folder", "check the path"
        )
    clips: list[str] | None = None
    if path.is_dir() and (path / layout.SUMMARY_FILE).is_file() and (path / layout.EMOTION_FILE).is_file():
        clips = list(json.loads((path / layout.SUMMARY_FILE).read_text())["clips"])
        emotion, source = np.load(path / layout.EMOTION_FILE, mmap_mode="r"), path / layout.EMOTION_FILE
        if threedmm is None and (path / layout.FACE3D_FILE).is_file():
            threedmm = path / layout.FACE3D_FILE
    elif path.is_dir():
        clips, emotion = _csv_folder(path)
        source = path
    else:
        emotion, source = _load_array(path, "emotion"), path
    if clips_file is not None:
        clips = [line.strip() for line in Path(clips_file).read_text().splitlines() if line.strip()]
        source_of_clips = Path(clips_file)
    else:
        source_of_clips = source
    order = None if clips is None else _match_order(clips, truth, source_of_clips)
    emotion = _checked(np.asarray(emotion), source, "emotion", layout.EMOTION_DIM, truth, order)
    _check_ranges(emotion, source, truth, order)
    face3d = None
    if threedmm is not None:
        face3d = _checked(
            np.asarray(_load_array(Path(threedmm), "3dmm")), Path(threedmm), "3dmm", layout.FACE3D_DIM, truth, order
        )
    return Predictions(emotion, face3d, str(source))


def _match_order(clips: list[str], truth: GroundTruth, source: Path) -> np.ndarray:
    """Row of the predictions for each sample of the split, matched by speaker clip name."""
    row = {clip: i for i, clip in enumerate(clips)}
    if len(row) != len(clips):
        repeated = sorted({c for c in clips if clips.count(c) > 1})
        raise ScoreError(
            source,
            "clips",
            "each speaker clip once",
            f"{repeated[:3]} more than once",
            "keep one row of predictions per speaker clip",
        )
    missing = [c for c in dict.fromkeys(truth.speaker_clips) if c not in row]
    unknown = sorted(set(clips) - set(truth.speaker_clips))
    if missing or unknown:
        raise ScoreError(
            source,
            "clips",
            f"the speaker clips of {truth.source} ({len(set(truth.speaker_clips))})",
            f"{len(missing)} missing (e.g. {missing[:3]}) and {len(unknown)} not in the split (e.g. {unknown[:3]})",
            "generate for this split's speakers, or score against the split they were made for",
        )
    return np.array([row[c] for c in truth.speaker_clips])


def _first(values: np.ndarray, is_bad) -> tuple[int, ...] | None:
    """Index of the first element `is_bad` marks, testing CHECK_SAMPLES samples at a time (a test
    split's predictions are 1.2 GB; whole-array masks would add as much again per test)."""
    for start in range(0, len(values), CHECK_SAMPLES):
        bad = is_bad(values[start : start + CHECK_SAMPLES])
        if bad.any():
            first = np.argwhere(bad)[0]
            return (start + int(first[0]),) + tuple(int(i) for i in first[1:])
    return None


def _checked(
    values: np.ndarray, source: Path, name: str, dim: int, truth: GroundTruth, order: np.ndarray | None
) -> np.ndarray:
    """(N, α, T, dim) float32 in sample order, or a ScoreError naming what differs."""
    n, frames = truth.listener.shape[:2]
    rows = n if order is None else int(order.max()) + 1
    expected = f"(N={rows}, α, T={frames}, {dim})"
    if values.ndim != 4 or values.shape[0] != rows or values.shape[2] != frames or values.shape[3] != dim:
        hint = (
            f"the split has {n} samples (2 × {n // 2} rows of its CSV, role-swapped; see 'Sample order' in "
            "docs/scoring.md) of {frames} frames".format(frames=frames)
            if order is None
            else "write one row per speaker clip, every reaction over the whole clip"
        )
        raise ScoreError(source, f"{name} shape", expected, values.shape, hint)
    values = np.asarray(values if order is None else values[order], dtype=np.float32)
    bad = _first(values, lambda chunk: ~np.isfinite(chunk))
    if bad is not None:
        s, k, t, c = bad
        raise ScoreError(
            source,
            f"{name} [sample {s}, reaction {k}, frame {t}, channel {c}]",
            "a finite number",
            values[s, k, t, c],
            "replace NaN/inf predictions before scoring",
        )
    return values


def _check_ranges(emotion: np.ndarray, source: Path, truth: GroundTruth, order: np.ndarray | None) -> None:
    low = np.array([lo for lo, _ in RANGES], np.float32)
    high = np.array([hi for _, hi in RANGES], np.float32)
    bad = _first(emotion, lambda chunk: (chunk < low) | (chunk > high))
    if bad is not None:
        s, k, t, c = bad
        lo, hi = RANGES[c]
        kind = (
            "an AU occurrence probability"
            if c < layout.VA_SLICE.start
            else "valence/arousal"
            if c < layout.EXPR_SLICE.start
            else "an expression probability"
        )
        raise ScoreError(
            source,
            f"{layout.EMOTION_COLUMNS[c]} [sample {s} (speaker {truth.speaker_clips[s]}), reaction {k}, frame {t}]",
            f"{kind} in [{lo:g}, {hi:g}]",
            f"{emotion[s, k, t, c]:.6g}",
            "predict channels in the REACT2024 ranges (columns of docs/scoring.md)",
        )


# --------------------------------------------------------------------------------------------
# Scoring
# --------------------------------------------------------------------------------------------


def score(
    predictions: Predictions,
    truth: GroundTruth,
    out_dir: str | Path,
    label: str = PREDICTIONS_LABEL,
    with_baselines: bool = False,
    seed: int = 0,
    train: GroundTruth | None = None,
) -> tuple[dict[str, dict[str, float]], str, list[Path]]:
    """REACT2024 metrics of the predictions (and with `with_baselines` of B_Random and B_Mime,
    which need nothing but the split, and of B_Ridge fitted on `train`'s emotion when given)
    → (rows, markdown table, files written to `out_dir`)."""
    rows = {label: metrics.compute_all(predictions.emotion, truth.listener, truth.speaker, truth.appropriate)}
    if with_baselines:
        # Seeded and batched as in `evaluate`; the baselines' 3DMM is not scored, so no face is needed.
        speaker = {
            "emotion": truth.speaker,
            "3dmm": np.broadcast_to(np.float32(0), truth.speaker.shape[:2] + (layout.FACE3D_DIM,)),
        }
        references = [baselines.RandomBaseline(np.zeros(layout.FACE3D_DIM)), baselines.MimeBaseline()]
        if train is not None:
            no_face = np.zeros(train.listener.shape[:2] + (layout.FACE3D_DIM,), np.float32)
            references.append(baselines.RidgeBaseline.fit({"emotion": train.speaker}, train.listener, no_face))
        for baseline in references:
            (out,) = predict.reactions(
                baseline, speaker, predictions.emotion.shape[1], "offline", seed, keys=("emotion",)
            )
            emotion = out["emotion"]
            rows[baseline.name] = metrics.compute_all(emotion, truth.listener, truth.speaker, truth.appropriate)
    markdown, files = report.write_results(out_dir, rows)
    for k in range(min(report.PLOTTED_SAMPLES, len(truth.listener))):
        files.append(
            report.plot_sample(
                Path(out_dir) / f"sample_{k}.png",
                truth.speaker[k],
                truth.listener[k],
                predictions.emotion[k],
                title=f"{label} | sample {k}: speaker {truth.speaker_clips[k]}",
            )
        )
    return rows, markdown, files
