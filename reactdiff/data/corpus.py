"""Reader for the REACT2024 corpus layout: discovery, split lists, clips, validation.

The same reader serves the real corpus and the synthetic one written by `reactdiff synth`.

Frame counts. A clip stores F+1 frames on disk (751 for the real 30 s clips) and models use the
first F (750). `load_clip(frames=None)` derives F = (rows of the Emotion CSV) − 1, so short
synthetic clips (e.g. 51 frames on disk → F = 50) need no setting; `frames=F` fixes F and then
requires every modality to cover at least F frames. `scan_split` additionally requires all clips of
a split to share one F (the feature store has fixed-size rows): with `frames=None` the most common
F of the split wins and clips of another length are rejected.

Split-CSV paths. The canonical form is `<dataset>/<session>/<person>/<clip>`; copies of the lists
sometimes carry a leading `<split>/` and/or tree folder (`Video_files/`) and a file suffix
(`.mp4`), or Windows separators. `parse_clip_path` accepts those and normalises to the canonical
form; anything else is an error naming the CSV, row and column.

Validation raises `ClipError`, which names the file, the field and what was expected;
`scan_split` collects those per clip so corpus-wide jobs skip bad clips, report them and keep the rest.
"""

from __future__ import annotations

import csv
import hashlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
import soundfile as sf

from reactdiff.data import layout
from reactdiff.errors import UserError

TREES = (layout.VIDEO_DIR, layout.AUDIO_DIR, layout.EMOTION_DIR, layout.FACE3D_DIR)
SPLIT_COLUMNS = ("speaker_path", "listener_path")
# Audio may end this much short of F frames (container/resampling rounding in real recordings).
AUDIO_TOLERANCE_FRAMES = 1.0

_FIX_HINT = (
    "fix or re-extract this file, or drop the clip's row from the split CSV; "
    "corpus-wide jobs (prepare) skip such clips and list them in rejected.json"
)


class ClipError(UserError, ValueError):
    """A corpus file is missing or malformed. Carries `file`, `field`, `expected` and `got`."""

    def __init__(self, file: str | Path, field: str, expected: str, got: object, hint: str = _FIX_HINT):
        self.file, self.field, self.expected, self.got = str(file), field, expected, got
        super().__init__(f"{file}: field '{field}': expected {expected}, got {got}. To fix: {hint}")

    def as_record(self, clip: str) -> dict[str, str]:
        """The JSON-friendly record corpus-wide jobs report for a rejected clip."""
        return {"clip": clip, "file": self.file, "field": self.field, "expected": self.expected, "message": str(self)}


# --------------------------------------------------------------------------------------------
# Clip names and paths
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class ClipRef:
    """One person-clip: `<dataset>/<session>/<person>/<clip>` with the Video/Audio/3D person folder."""

    dataset: str
    session: str
    person: str
    clip: str

    @property
    def path(self) -> str:
        return f"{self.dataset}/{self.session}/{self.person}/{self.clip}"

    def person_dir(self, root: str | Path, split: str, tree: str) -> Path:
        # The Emotion tree names persons P1/P2; the other trees use the person folder itself.
        person = layout.emotion_person(self.dataset, self.person) if tree == layout.EMOTION_DIR else self.person
        return Path(root) / split / tree / self.dataset / self.session / person

    def file(self, root: str | Path, split: str, tree: str) -> Path:
        return self.person_dir(root, split, tree) / (self.clip + layout.SUFFIX[tree])


def parse_clip_path(text: str, source: str = "clip path") -> ClipRef:
    """Normalise a split-CSV path (tolerating `<split>/`, `<tree>/`, a file suffix, backslashes)."""
    parts = [p for p in text.strip().replace("\\", "/").split("/") if p]
    if parts and parts[0] in layout.SPLITS:
        parts = parts[1:]
    if parts and parts[0] in TREES:
        parts = parts[1:]
    if parts:
        stem, dot, suffix = parts[-1].rpartition(".")
        if dot and "." + suffix in layout.SUFFIX.values():
            parts[-1] = stem
    if len(parts) != 4 or parts[0] not in layout.DATASETS:
        raise ClipError(
            source,
            "clip path",
            f"'<dataset>/<session>/<person>/<clip>' with dataset in {layout.DATASETS}",
            repr(text),
            hint="correct the path in the split CSV",
        )
    return ClipRef(*parts)


def split_csv(root: str | Path, split: str) -> Path:
    return Path(root) / f"{split}.csv"


@dataclass(frozen=True)
class Pair:
    """One row of a split CSV: a dyad clip pair in the CSV's speaker/listener order."""

    row: int
    speaker: ClipRef
    listener: ClipRef


@dataclass(frozen=True)
class Sample:
    """A role-swapped sample. With R rows, sample s < R is row s as written, R + s is row s swapped."""

    index: int
    pair: Pair
    swapped: bool

    @property
    def speaker(self) -> ClipRef:
        return self.pair.listener if self.swapped else self.pair.speaker

    @property
    def listener(self) -> ClipRef:
        return self.pair.speaker if self.swapped else self.pair.listener


def locate_clip(path: str | Path) -> tuple[Path, str, ClipRef]:
    """`<root>/<split>/<tree>/<dataset>/<session>/<person>/<clip>.<ext>` → (root, split, clip)."""
    parts = Path(path).parts
    for i in range(len(parts) - 5):
        if parts[i] in layout.SPLITS and parts[i + 1] in TREES:
            if parts[i + 1] == layout.EMOTION_DIR:
                break  # P1/P2 folders do not name the person unambiguously (RECOLA)
            return Path(*parts[:i]), parts[i], parse_clip_path("/".join(parts[i + 2 :]), str(path))
    raise ValueError(
        f"speaker/listener clip '{path}': expected a file of a REACT2024-layout corpus outside the "
        "Emotion tree, <root>/<split>/{Audio_files,Video_files,3D_FV_files}/<dataset>/<session>/"
        "<person>/<clip>.<ext>, or a feature store split as <store dir>:<split>"
    )


def read_split(root: str | Path, split: str) -> list[Pair]:
    """Rows of `<root>/<split>.csv` (header `,speaker_path,listener_path`), in file order."""
    path = split_csv(root, split)
    if not path.is_file():
        raise ClipError(
            path,
            "file",
            f"the split list of '{split}'",
            "no such file",
            hint="point at the corpus root that holds train.csv/val.csv/test.csv",
        )
    with path.open(newline="") as f:
        rows = [r for r in csv.reader(f) if r]
    header = [h.strip() for h in rows[0]] if rows else []
    if any(c not in header for c in SPLIT_COLUMNS):
        raise ClipError(
            path,
            "header",
            "columns ',speaker_path,listener_path'",
            header,
            hint="restore the header row of the split CSV",
        )
    cols = [header.index(c) for c in SPLIT_COLUMNS]
    pairs = []
    for i, row in enumerate(rows[1:]):
        where = f"{path} line {i + 2}"
        if len(row) != len(header):
            raise ClipError(
                path, f"line {i + 2}", f"{len(header)} columns like the header", len(row), hint="correct the split CSV"
            )
        speaker, listener = (
            parse_clip_path(row[c], f"{where} {name}") for c, name in zip(cols, SPLIT_COLUMNS, strict=True)
        )
        pairs.append(Pair(i, speaker, listener))
    return pairs


def role_swap(pairs: list[Pair]) -> list[Sample]:
    """The role-swapped sample order of docs/architecture.md: all rows as written, then all swapped."""
    n = len(pairs)
    return [Sample(i, p, False) for i, p in enumerate(pairs)] + [Sample(n + i, p, True) for i, p in enumerate(pairs)]


def discover_clips(root: str | Path, split: str) -> list[ClipRef]:
    """Person-clips present on disk in the Video/Audio/3D trees of a split (union, sorted).

    The Emotion tree is not walked: its P1/P2 folders are reached from these refs through
    `layout.emotion_person`. Unknown person folders are listed too; `load_clip` rejects them.
    """
    refs = set()
    for tree in (layout.VIDEO_DIR, layout.AUDIO_DIR, layout.FACE3D_DIR):
        base = Path(root) / split / tree
        for f in base.glob(f"*/*/*/*{layout.SUFFIX[tree]}"):
            dataset, session, person = f.relative_to(base).parts[:3]
            if dataset in layout.DATASETS:
                refs.add(ClipRef(dataset, session, person, f.stem))
    return sorted(refs)


# --------------------------------------------------------------------------------------------
# Clip loading and validation
# --------------------------------------------------------------------------------------------


@dataclass
class Clip:
    """One person-clip: the first `frames` frames of its targets, and its media files (the video is
    decoded by `features.decode_video` / `iter_video`, where the facial extractors need it)."""

    ref: ClipRef
    split: str
    frames: int
    emotion: np.ndarray  # (frames, 25) float32
    face3d: np.ndarray  # (frames, 58) float32
    audio_path: Path
    video_path: Path

    def read_audio(self) -> tuple[np.ndarray, int]:
        """Mono float32 samples covering exactly `frames` video frames (zero-padded within the
        validated tolerance), and the sample rate."""
        samples, rate = sf.read(self.audio_path, dtype="float32", always_2d=True)
        mono = samples.mean(axis=1)
        n = round(self.frames * rate / layout.FPS)
        return np.pad(mono[:n], (0, max(0, n - len(mono)))), rate


def read_emotion(path: Path) -> np.ndarray:
    """Emotion CSV → (rows, 25) float64, with the offending line/column named on any error."""
    expected_cols = f"{layout.EMOTION_DIM} comma-separated columns ({', '.join(layout.EMOTION_COLUMNS)})"
    if not path.is_file():
        raise ClipError(path, "file", "an Emotion CSV", "no such file")
    with path.open() as f:
        header = f.readline().rstrip("\r\n").split(",")
    if len(header) != layout.EMOTION_DIM:
        raise ClipError(path, "columns (header, line 1)", expected_cols, f"{len(header)} columns")
    try:
        values = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    except ValueError:
        values = None  # numpy's message lacks the column name: find the first bad cell ourselves
    if values is None or values.shape[1] != layout.EMOTION_DIM:
        with path.open(newline="") as f:
            for line, row in enumerate(csv.reader(f), start=1):
                if line == 1 or not row:
                    continue
                if len(row) != layout.EMOTION_DIM:
                    raise ClipError(path, f"columns (line {line})", expected_cols, f"{len(row)} columns")
                for name, cell in zip(layout.EMOTION_COLUMNS, row, strict=True):
                    try:
                        float(cell)
                    except ValueError:
                        raise ClipError(path, f"{name} (line {line})", "a number", repr(cell)) from None
        raise ClipError(path, "file", "a readable Emotion CSV", "unparsable content")
    if len(values) < 2:
        raise ClipError(path, "frames", "a header then at least 2 frame rows", f"{len(values)} rows")
    bad = ~np.isfinite(values)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ClipError(path, f"{layout.EMOTION_COLUMNS[c]} (line {r + 2})", "a finite number", values[r, c])
    au = values[:, layout.AU_SLICE]
    bad = (au != 0) & (au != 1)
    if bad.any():
        r, c = np.argwhere(bad)[0]
        raise ClipError(path, f"{layout.AU_NAMES[c]} (line {r + 2})", "0 or 1 (AU occurrence)", au[r, c])
    return values


def read_face3d(path: Path, rows: int) -> np.ndarray:
    """3DMM .npy → (rows, 58) float32; the singleton axis of (rows, 1, 58) is squeezed."""
    if not path.is_file():
        raise ClipError(path, "file", "a 3DMM .npy", "no such file")
    try:
        values = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise ClipError(path, "file", "a readable .npy array", f"{type(exc).__name__}: {exc}") from None
    if values.ndim == 3 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 2 or values.shape[1] != layout.FACE3D_DIM:
        raise ClipError(
            path, "shape", f"(frames, {layout.FACE3D_DIM}) or (frames, 1, {layout.FACE3D_DIM})", values.shape
        )
    if len(values) != rows:
        raise ClipError(path, "frames", f"{rows} frames like the clip's Emotion CSV", len(values))
    if not np.isfinite(values).all():
        raise ClipError(path, "values", "finite 3DMM coefficients", "NaN or inf")
    return values.astype(np.float32)


def _check_audio(path: Path, frames: int) -> None:
    if not path.is_file():
        raise ClipError(path, "file", "a WAV file", "no such file")
    try:
        info = sf.info(str(path))
    except sf.SoundFileError as exc:
        raise ClipError(path, "file", "a readable WAV", str(exc)) from None
    needed = (frames - AUDIO_TOLERANCE_FRAMES) / layout.FPS
    if info.duration < needed:
        raise ClipError(
            path,
            "duration",
            f">= {needed:.3f} s of audio to cover {frames} frames at {layout.FPS} fps",
            f"{info.duration:.3f} s",
        )


def _check_video(path: Path, frames: int) -> None:
    """Cheap MP4 check: demux (no decoding) to count frames, decode only until the first frame."""
    if not path.is_file():
        raise ClipError(path, "file", "an MP4 video", "no such file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(path, "video stream", "one video stream", "none")
            stream = container.streams.video[0]
            packets, decoded = 0, False
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's end-of-stream marker
                    continue
                packets += 1
                if not decoded:
                    decoded = bool(stream.decode(packet))
            if not decoded:
                decoded = bool(stream.decode(None))  # flush: decoders with frame delay emit now
    except av.FFmpegError as exc:
        raise ClipError(path, "file", "a decodable MP4 (PyAV)", str(exc)) from None
    if not decoded:
        raise ClipError(path, "file", "a decodable MP4 (PyAV)", "no frame could be decoded")
    if packets < frames:
        raise ClipError(path, "frames", f">= {frames} video frames like the clip's Emotion CSV", packets)


def _check_person(root: str | Path, split: str, ref: ClipRef) -> None:
    known = layout.PERSON_TO_EMOTION.get(ref.dataset, {})
    if ref.person not in known:
        raise ClipError(
            ref.person_dir(root, split, layout.AUDIO_DIR),
            "person folder",
            f"one of {', '.join(sorted(known))} for {ref.dataset}",
            repr(ref.person),
            hint="rename the person folder in Video_files/Audio_files/3D_FV_files, or "
            "drop the clip's row from the split CSV",
        )


def load_clip(root: str | Path, split: str, clip_path: str | ClipRef, frames: int | None = None) -> Clip:
    """Load and validate one person-clip; raise ClipError naming the first problem found.

    frames=None uses F = (Emotion CSV rows) − 1; an int uses the first `frames` frames and requires
    every modality to cover them. Emotion and 3DMM must have the same number of rows.
    """
    ref = clip_path if isinstance(clip_path, ClipRef) else parse_clip_path(clip_path)
    _check_person(root, split, ref)
    emotion_file = ref.file(root, split, layout.EMOTION_DIR)
    emotion = read_emotion(emotion_file)
    if frames is None:
        frames = len(emotion) - 1
    elif len(emotion) < frames:
        raise ClipError(emotion_file, "frames", f">= {frames} frame rows", len(emotion))
    face3d = read_face3d(ref.file(root, split, layout.FACE3D_DIR), len(emotion))
    audio_path, video_path = ref.file(root, split, layout.AUDIO_DIR), ref.file(root, split, layout.VIDEO_DIR)
    _check_audio(audio_path, frames)
    _check_video(video_path, frames)
    return Clip(ref, split, frames, emotion[:frames].astype(np.float32), face3d[:frames], audio_path, video_path)


def validate_sample(
    root: str | Path, split: str, sample: Sample | Pair, frames: int | None = None
) -> tuple[Clip, Clip]:
    """Load both clips of a sample (speaker, listener); their frame counts must agree."""
    speaker = load_clip(root, split, sample.speaker, frames)
    listener = load_clip(root, split, sample.listener, frames)
    if listener.frames != speaker.frames:
        raise ClipError(
            listener.ref.file(root, split, layout.EMOTION_DIR),
            "frames",
            f"{speaker.frames + 1} frame rows like its partner {speaker.ref.path}",
            listener.frames + 1,
        )
    return speaker, listener


class ScanResult(NamedTuple):
    samples: list[Sample]  # role-swapped samples of the good rows (order of `role_swap`)
    rejected: list[dict[str, str]]  # one record per bad clip: clip, file, field, expected, message


def scan_split(root: str | Path, split: str, frames: int | None = None) -> ScanResult:
    """Validate every clip a split CSV names; drop the rows that use a bad clip, keep the rest.

    Each rejected clip is reported once. The surviving rows keep their `Pair.row` (the CSV row)
    and are role-swapped afresh, so sample s < R' is the s-th good row.
    """
    pairs = read_split(root, split)
    clips = list(dict.fromkeys(ref for p in pairs for ref in (p.speaker, p.listener)))
    errors: dict[ClipRef, ClipError] = {}
    lengths: dict[ClipRef, int] = {}
    for ref in clips:
        try:
            _check_person(root, split, ref)
            if not any(ref.file(root, split, tree).exists() for tree in TREES):
                raise ClipError(
                    split_csv(root, split),
                    ref.path,
                    f"files of this clip under {Path(root) / split}/{{{','.join(TREES)}}}",
                    "none on disk",
                    hint="restore the clip's files or drop its row from the split CSV",
                )
            lengths[ref] = load_clip(root, split, ref, frames).frames
        except ClipError as err:
            errors[ref] = err
    if frames is None and lengths:
        common = Counter(lengths.values()).most_common(1)[0][0]
        for ref, n in lengths.items():
            if n != common:
                errors[ref] = ClipError(
                    ref.file(root, split, layout.EMOTION_DIR),
                    "frames",
                    f"{common + 1} frame rows like most clips of split '{split}'",
                    n + 1,
                    hint="re-extract the clip, or pass an explicit frame count",
                )
    good = [p for p in pairs if p.speaker not in errors and p.listener not in errors]
    return ScanResult(role_swap(good), [errors[ref].as_record(ref.path) for ref in clips if ref in errors])


# --------------------------------------------------------------------------------------------
# Fingerprint
# --------------------------------------------------------------------------------------------

# Files up to this size are hashed whole; larger media files by size plus their first and last
# block (hashing every byte of ~100 GB of video would dominate a prepare run).
_FULL_HASH_BYTES = 1 << 20
_EDGE_BYTES = 1 << 16


def corpus_fingerprint(root: str | Path) -> str:
    """A stable hash of a corpus: relative paths, sizes and content (not mtimes).

    Covers the split CSVs and every file in the four trees of each split. Files up to 1 MiB
    (CSV, NPY, short media) are hashed whole, larger ones by size and first/last 64 KiB.
    MP4 bytes depend on the encoder build, so a synthetic corpus written by another PyAV/x264
    version gets another fingerprint.
    """
    root = Path(root)
    files = [split_csv(root, s) for s in layout.SPLITS if split_csv(root, s).is_file()]
    for split in layout.SPLITS:
        for tree in TREES:
            files += [f for f in (root / split / tree).rglob("*") if f.is_file()]
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
        size = f.stat().st_size
        digest.update(f"{f.relative_to(root).as_posix()}\0{size}\0".encode())
        with f.open("rb") as fh:
            if size <= _FULL_HASH_BYTES:
                digest.update(hashlib.sha256(fh.read()).digest())
            else:
                head = fh.read(_EDGE_BYTES)
                fh.seek(size - _EDGE_BYTES)
                digest.update(hashlib.sha256(head + fh.read()).digest())
    return digest.hexdigest()
