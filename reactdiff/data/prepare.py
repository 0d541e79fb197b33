"""`reactdiff prepare`: a Ray Data pipeline from a REACT2024-layout corpus to a Parquet feature store.

Each split CSV is cut into parts of `rows_per_part` dyads; a Ray Data actor pool extracts the
features of one part and writes `<split>/part-NNNNN.parquet` itself, so file names and contents
depend only on the corpus (a store written twice is byte-identical, which `write_parquet`'s
UUID file names and completion-order blocks would not give). A dyad with a bad clip is skipped and
reported in `rejected.json`; the rest of the corpus is kept.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reactdiff.data import corpus as corpus_reader
from reactdiff.data.appropriateness import DEFAULT_THRESHOLD, compute_matrix, load_matrix
from reactdiff.data.layout import FPS
from reactdiff import console
from reactdiff.ray_runtime import ray_init
from reactdiff.data.store import (
    Manifest,
    StreamSpec,
    Store,
    TARGET_STREAMS,
    column,
    fingerprint_files,
    write_manifest,
    write_part,
)

log = logging.getLogger(__name__)



@dataclass
class PrepareOptions:
    corpus: Path
    out: Path
    profile: str = "lite"  # "lite" | "paper"
    splits: tuple[str, ...] = ("train", "val", "test")
    frames: int | None = None  # None: on-disk frames − 1 (750 for real clips)
    rows_per_part: int = 8
    wav2vec2_dir: Path | None = None
    facial_predictors: dict[str, Path] = field(default_factory=dict)  # va / au / fe TorchScript
    appropriate_dir: Path | None = None  # given matrices <dir>/<split>.npy; else computed
    threshold: float = DEFAULT_THRESHOLD
    workers: int = 2


class PrepareError(RuntimeError):
    """Nothing usable remained, or the options cannot work; the message says what to do."""


def _stream_specs(options: PrepareOptions, afr_dim: int | None, facial_dims: dict[str, int]) -> dict[str, StreamSpec]:
    streams = {name: StreamSpec(dim, "float32", "target") for name, dim in TARGET_STREAMS.items()}
    streams["mfcc"] = StreamSpec(26, "float32", "audio")
    if options.profile == "paper":
        # Network activations are stored as fp16: halves the ~84 MB fp32 person-clip.
        streams["afr"] = StreamSpec(afr_dim, "float16", "audio")
        for name, dim in facial_dims.items():
            streams[name] = StreamSpec(dim, "float16", "facial")
    return streams


class PartWriter:
    """Ray Data actor: extracts one part's features and writes its Parquet file."""

    def __init__(self, options: PrepareOptions, manifest_streams: dict[str, StreamSpec], frames: int):
        from reactdiff.data import features

        self.options = options
        self.frames = frames
        self.manifest = Manifest(profile=options.profile, frames=frames, fps=FPS, streams=manifest_streams)
        self.wav2vec2 = self.facial = None
        if options.profile == "paper":
            self.wav2vec2 = features.Wav2Vec2Features(options.wav2vec2_dir)
            self.facial = features.FacialFeatures(options.facial_predictors)
        self._mfcc = features.mfcc

    def _person_features(self, clip: corpus_reader.Clip) -> dict[str, np.ndarray]:
        audio, rate = clip.read_audio()
        feats = {"emotion": clip.emotion, "3dmm": clip.face3d, "mfcc": self._mfcc(audio, rate, self.frames)}
        if self.wav2vec2 is not None:
            feats["afr"] = self.wav2vec2(audio, rate, self.frames)
            feats.update(self.facial(clip.video_path, self.frames))
        return feats

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        results: dict[str, list] = {"split": [], "part": [], "file": [], "rows": [], "rejected": [], "stats": []}
        for split, part, rows_json in zip(batch["split"], batch["part"], batch["rows"], strict=True):
            kept, rejected = [], []
            for pair_id, clip_a, clip_b in json.loads(rows_json):
                pair = corpus_reader.Pair(pair_id, corpus_reader.parse_clip_path(clip_a),
                                          corpus_reader.parse_clip_path(clip_b))
                try:
                    speaker, listener = corpus_reader.validate_sample(self.options.corpus, split, pair, self.frames)
                    row = {"pair_id": pair_id, "clip_a": clip_a, "clip_b": clip_b}
                    row["a"] = self._person_features(speaker)
                    row["b"] = self._person_features(listener)
                    kept.append(row)
                except ValueError as err:  # ClipError and extractor errors name file and field
                    rejected.append(_rejection(split, pair_id, clip_a, clip_b, err))
            rel = ""
            if kept:
                rel = f"{split}/part-{int(part):05d}.parquet"
                write_part(self.options.out / rel, kept, self.manifest)
            face = np.concatenate([r[p]["3dmm"] for r in kept for p in "ab"]) if kept else np.zeros((0, 58))
            face = face.astype(np.float64)
            stats = {"n": int(face.shape[0]), "sum": face.sum(0).tolist(), "sumsq": (face**2).sum(0).tolist()}
            results["split"].append(split)
            results["part"].append(int(part))
            results["file"].append(rel)
            results["rows"].append(json.dumps([r["pair_id"] for r in kept]))
            results["rejected"].append(json.dumps(rejected))
            results["stats"].append(json.dumps(stats))
        return results


def _rejection(split: str, pair_id: int, clip_a: str, clip_b: str, err: Exception) -> dict[str, Any]:
    return {
        "split": split,
        "pair_id": int(pair_id),
        "dyad": [clip_a, clip_b],
        "file": str(getattr(err, "file", "")),
        "field": str(getattr(err, "field", "")),
        "expected": str(getattr(err, "expected", "")),
        "error": str(err),
    }


def _detect_frames(corpus: Path, split_rows: dict[str, list]) -> int:
    """Frames used per clip: on-disk frames − 1 of the first clip that loads (750 for REACT2024)."""
    for split, rows in split_rows.items():
        for pair in rows:
            try:
                return corpus_reader.load_clip(corpus, split, pair.speaker).frames
            except ValueError:
                continue
    raise PrepareError(f"no clip of {corpus} could be read; check the layout against the README's section "
                       "'Your REACT2024 copy and pretrained feature extractors'")


def _appropriateness(options: PrepareOptions, store: Store, split: str, kept_pairs: list[int], total_rows: int) -> np.ndarray:
    """Given matrices are over all 2R samples of the CSV; keep the rows that survived."""
    if options.appropriate_dir is not None:
        full = load_matrix(options.appropriate_dir / f"{split}.npy", 2 * total_rows)
        index = np.array(kept_pairs + [total_rows + p for p in kept_pairs])
        return full[np.ix_(index, index)].astype(np.uint8)
    arrays = store.read_split(split, streams=["emotion"])
    speaker_emotion = np.concatenate([arrays[column("a", "emotion")], arrays[column("b", "emotion")]])
    return compute_matrix(speaker_emotion, threshold=options.threshold)


def prepare(options: PrepareOptions) -> Manifest:
    """Build the feature store; returns its manifest. Raises PrepareError when nothing is usable."""
    import ray

    if options.profile not in ("lite", "paper"):
        raise PrepareError(f"unknown profile '{options.profile}' (expected lite or paper)")
    if options.profile == "paper":
        missing = [k for k in ("va", "au", "fe") if k not in options.facial_predictors]
        if options.wav2vec2_dir is None or missing:
            raise PrepareError(
                "the paper profile needs --wav2vec2 <dir saved with save_pretrained> and "
                f"--facial va=<.pt> au=<.pt> fe=<.pt> (missing: {', '.join(missing + (['wav2vec2'] if options.wav2vec2_dir is None else []))})"
            )
    corpus = Path(options.corpus)
    split_rows = {s: corpus_reader.read_split(corpus, s) for s in options.splits}
    frames = options.frames or _detect_frames(corpus, split_rows)

    afr_dim, facial_dims = None, {}
    if options.profile == "paper":
        from reactdiff.data import features

        afr_dim = features.Wav2Vec2Features(options.wav2vec2_dir).dim
        facial_dims = features.FacialFeatures(options.facial_predictors).dims
    streams = _stream_specs(options, afr_dim, facial_dims)

    out = Path(options.out)
    if out.exists():
        shutil.rmtree(out)  # a store is rebuilt whole: stale parts must not survive
    for split in options.splits:
        (out / split).mkdir(parents=True)

    parts = []
    for split, rows in split_rows.items():
        for start in range(0, len(rows), options.rows_per_part):
            chunk = [[p.row, p.speaker.path, p.listener.path] for p in rows[start : start + options.rows_per_part]]
            parts.append({"split": split, "part": start // options.rows_per_part, "rows": json.dumps(chunk)})

    ray_init()
    dataset = ray.data.from_items(parts, override_num_blocks=max(1, len(parts)))
    written = dataset.map_batches(
        PartWriter,
        fn_constructor_args=(options, streams, frames),
        batch_size=1,
        concurrency=max(1, min(options.workers, len(parts))),
        num_cpus=1,
    )
    clips = sum(len(json.loads(p["rows"])) for p in parts) * 2
    results = list(console.progress(written.iter_rows(), total=len(parts),
                                    desc=f"prepare: {clips} person-clips in {len(parts)} parts", unit="part"))
    # Parts finish in any order; reduced in part order, the statistics (and so the store and
    # its fingerprint) do not depend on scheduling.
    results.sort(key=lambda r: (options.splits.index(r["split"]), r["part"]))

    manifest = Manifest(profile=options.profile, frames=frames, fps=FPS, streams=streams)
    rejected: list[dict[str, Any]] = []
    kept_by_split: dict[str, list[tuple[str, list[int]]]] = {s: [] for s in options.splits}
    face_n, face_sum, face_sumsq = 0, np.zeros(58), np.zeros(58)
    for r in results:
        rejected += json.loads(r["rejected"])
        if r["file"]:
            kept_by_split[r["split"]].append((r["file"], json.loads(r["rows"])))
        if r["split"] == "train":
            stats = json.loads(r["stats"])
            face_n += stats["n"]
            face_sum += np.array(stats["sum"])
            face_sumsq += np.array(stats["sumsq"])

    total_kept = sum(len(ids) for files in kept_by_split.values() for _, ids in files)
    if total_kept == 0:
        raise PrepareError(
            f"no usable dyad in {corpus}: {len(rejected)} rejected (see the log); "
            "check the corpus layout against the README's section 'Your REACT2024 copy and pretrained feature extractors' or run `reactdiff synth` for a demo corpus"
        )
    for split, files in kept_by_split.items():
        files.sort()
        ids = [i for _, part_ids in files for i in part_ids]
        manifest.splits[split] = {"rows": len(ids), "samples": 2 * len(ids), "files": [f for f, _ in files]}
    if face_n:
        mean = face_sum / face_n
        std = np.sqrt(np.maximum(face_sumsq / face_n - mean**2, 0.0)) + 1e-6
        manifest.normalisation = {"3dmm_mean": mean.tolist(), "3dmm_std": std.tolist()}
    manifest.corpus_fingerprint = corpus_reader.corpus_fingerprint(corpus)
    manifest.rejected_count = len(rejected)
    write_manifest(out, manifest)  # provisional: lets Store read the parts for the matrices

    store = Store(out)
    for split, files in kept_by_split.items():
        ids = [i for _, part_ids in files for i in part_ids]
        if ids:
            matrix = _appropriateness(options, store, split, ids, len(split_rows[split]))
            np.save(out / split / "appropriate.npy", matrix)
    (out / "rejected.json").write_text(json.dumps(rejected, indent=2, sort_keys=True))
    for item in rejected:
        log.warning("rejected %s: %s", item.get("dyad", item.get("file")), item["error"])

    data_files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != "manifest.json")
    manifest.store_fingerprint = fingerprint_files(out, data_files)
    write_manifest(out, manifest)
    return manifest
