"""`reactdiff prepare`: a Ray Data pipeline from a REACT2024-layout corpus to a Parquet feature store.

Each split CSV is cut into parts of `rows_per_part` dyads; a Ray Data actor pool extracts the
features of one part and writes `<split>/part-NNNNN.parquet` itself, so file names and contents
depend only on the corpus (a store written twice is byte-identical, which `write_parquet`'s
UUID file names and completion-order blocks would not give). A dyad with a bad clip is skipped and
reported in `rejected.json`; the rest of the corpus is kept.

Resuming: `prepare.json` records what decides a part's contents (profile, frames, rows per part,
splits, streams, the extractor files' fingerprints). Each finished part is recorded in
`progress/<split>/part-NNNNN.json` (its input rows, kept rows, rejections and statistics) after
its Parquet file is in place, both written atomically. A re-run with the same settings skips every
part whose record lists the same input rows, so an interrupted run resumes, and rows appended to a
split CSV only add parts (and redo its last, partly filled one). The manifest is written last,
from the records in part order, so a resumed store is byte-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from reactdiff import atomic_io, console
from reactdiff.data import corpus as corpus_reader
from reactdiff.data.appropriateness import DEFAULT_THRESHOLD, compute_matrix, load_matrix
from reactdiff.data.layout import FPS
from reactdiff.data.store import (
    SCHEMA_VERSION,
    TARGET_STREAMS,
    Location,
    Manifest,
    StreamSpec,
    column,
    fingerprint_files,
    read_parts,
    write_array,
    write_manifest,
    write_part,
)
from reactdiff.errors import UserError
from reactdiff.ray_runtime import ray_init

log = logging.getLogger(__name__)

SPEC_FILE = "prepare.json"
PROGRESS_DIR = "progress"
# Test hooks, read by the extraction actors. DELAY_ENV "<seed>:<max seconds>" sleeps a seeded random
# time before each part, so that parts finish in another order; CRASH_ENV "<marker file>:<split>:<part>"
# kills the actor once, after that part's Parquet file is written and before its record is.
DELAY_ENV = "REACTDIFF_PREPARE_DELAY"
CRASH_ENV = "REACTDIFF_PREPARE_CRASH_ONCE"
# Long enough for an autoscaling cluster to add a node; a pool that never fits fails instead of hanging.
ACTORS_START_TIMEOUT_S = 900


@dataclass
class PrepareOptions:
    corpus: Path
    out: str | Path  # a folder, or any pyarrow.fs URI (s3://bucket/prefix)
    profile: str = "lite"  # "lite" | "paper"
    splits: tuple[str, ...] = ("train", "val", "test")
    frames: int | None = None  # None: on-disk frames − 1 (750 for real clips)
    rows_per_part: int = 8
    wav2vec2_dir: Path | None = None
    facial_predictors: dict[str, Path] = field(default_factory=dict)  # va / au / fe TorchScript
    appropriate_dir: Path | None = None  # given matrices <dir>/<split>.npy; else computed
    threshold: float = DEFAULT_THRESHOLD
    workers: int = 2
    # GPU fraction per extraction actor (paper profile). None: the cluster's GPUs shared by the
    # workers (at most one each) when it has any, else CPU; 0: CPU.
    gpus_per_worker: float | None = None
    rebuild: bool = False  # delete `out` first instead of resuming it


class PrepareError(UserError, RuntimeError):
    """Nothing usable remained, or the options cannot work; the message says what to do."""


@dataclass(frozen=True)
class Placement:
    """Resources of each extraction actor and the device its networks run on."""

    concurrency: int
    num_cpus: float
    num_gpus: float
    device: str


def extraction_placement(options: PrepareOptions, parts: int, cluster_gpus: float) -> Placement:
    """Where the extraction actors run. Video decoding and MFCCs always take a CPU; the paper
    profile's networks (wav2vec2, facial predictors) take a GPU fraction when one is asked for or,
    by default, when the cluster has GPUs."""
    workers = max(1, min(options.workers, parts))
    gpus = options.gpus_per_worker
    if gpus is not None and gpus < 0:
        raise PrepareError(f"--gpus-per-worker {gpus}: expected a GPU fraction ≥ 0")
    if options.profile != "paper":
        if gpus:
            raise PrepareError(
                f"--gpus-per-worker {gpus}: the lite profile runs no network (MFCCs are "
                "computed on CPU); drop the flag or use --profile paper"
            )
        return Placement(workers, 1, 0, "cpu")
    if gpus is None:
        gpus = min(1.0, cluster_gpus / workers) if cluster_gpus else 0.0
    elif gpus > 0 and not cluster_gpus:
        raise PrepareError(
            f"--gpus-per-worker {gpus}: the Ray cluster has no GPU; drop the flag (or pass 0) to extract on CPU"
        )
    return Placement(workers, 1, gpus, "cuda" if gpus else "cpu")


def placement_shortfall(placement: Placement, cluster: dict[str, float]) -> str | None:
    """What the extraction actors ask for beyond the cluster's resources (`ray.cluster_resources()`),
    or None when they fit."""
    short = [
        f"{placement.concurrency * each:g} {name} ({each:g} each) where the cluster has {cluster.get(name, 0):g}"
        for name, each in (("CPU", placement.num_cpus), ("GPU", placement.num_gpus))
        if placement.concurrency * each > cluster.get(name, 0)
    ]
    return f"{placement.concurrency} extraction workers need {' and '.join(short)}" if short else None


def _stream_specs(options: PrepareOptions, afr_dim: int | None, facial_dims: dict[str, int]) -> dict[str, StreamSpec]:
    streams = {name: StreamSpec(dim, "float32", "target") for name, dim in TARGET_STREAMS.items()}
    streams["mfcc"] = StreamSpec(26, "float32", "audio")
    if options.profile == "paper":
        # Network activations are stored as fp16: halves the ~84 MB fp32 person-clip.
        streams["afr"] = StreamSpec(afr_dim, "float16", "audio")
        for name, dim in facial_dims.items():
            streams[name] = StreamSpec(dim, "float16", "facial")
    return streams


def _record(split: str, part: int) -> str:
    return f"{PROGRESS_DIR}/{split}/part-{part:05d}.json"


def _test_hooks(split: str, part: int, stage: str) -> None:
    if stage == "start" and (delay := os.environ.get(DELAY_ENV)):
        seed, max_s = delay.rsplit(":", 1)
        time.sleep(random.Random(f"{seed}:{split}:{part}").uniform(0, float(max_s)))
    if stage == "written" and (crash := os.environ.get(CRASH_ENV)):
        marker, at_split, at_part = crash.rsplit(":", 2)
        if (split, part) == (at_split, int(at_part)) and not Path(marker).exists():
            Path(marker).write_text(f"killed the actor writing {split} part {part}\n")
            os._exit(1)


class PartWriter:
    """Ray Data actor: extracts one part's features, writes its Parquet file, then its record."""

    def __init__(
        self, options: PrepareOptions, manifest_streams: dict[str, StreamSpec], frames: int, device: str = "cpu"
    ):
        from reactdiff.data import features

        self.options = options
        self.location = Location(options.out)
        self.frames = frames
        self.manifest = Manifest(profile=options.profile, frames=frames, fps=FPS, streams=manifest_streams)
        self.wav2vec2 = self.facial = None
        if options.profile == "paper":
            self.wav2vec2 = features.Wav2Vec2Features(options.wav2vec2_dir, device=device)
            self.facial = features.FacialFeatures(options.facial_predictors, device=device)
        self._mfcc = features.mfcc

    def _person_features(self, clip: corpus_reader.Clip) -> dict[str, np.ndarray]:
        audio, rate = clip.read_audio()
        feats = {"emotion": clip.emotion, "3dmm": clip.face3d, "mfcc": self._mfcc(audio, rate, self.frames)}
        if self.wav2vec2 is not None:
            feats["afr"] = self.wav2vec2(audio, rate, self.frames)
            feats.update(self.facial(clip.video_path, self.frames))
        return feats

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        import ray

        for split, part, rows_json in zip(batch["split"], batch["part"], batch["rows"], strict=True):
            part = int(part)
            _test_hooks(split, part, "start")
            rows = json.loads(rows_json)
            kept, rejected = [], []
            for pair_id, clip_a, clip_b in rows:
                pair = corpus_reader.Pair(
                    pair_id, corpus_reader.parse_clip_path(clip_a), corpus_reader.parse_clip_path(clip_b)
                )
                try:
                    speaker, listener = corpus_reader.validate_sample(self.options.corpus, split, pair, self.frames)
                    row = {"pair_id": pair_id, "clip_a": clip_a, "clip_b": clip_b}
                    row["a"] = self._person_features(speaker)
                    row["b"] = self._person_features(listener)
                    kept.append(row)
                except ValueError as err:  # ClipError and extractor errors name file and field
                    rejected.append(_rejection(split, pair_id, clip_a, clip_b, err))
            rel = f"{split}/part-{part:05d}.parquet"
            if kept:
                write_part(self.location, rel, kept, self.manifest)
            else:
                self.location.delete(rel)  # a redone part whose rows all failed now
                rel = ""
            _test_hooks(split, part, "written")
            face = np.concatenate([r[p]["3dmm"] for r in kept for p in "ab"]) if kept else np.zeros((0, 58))
            face = face.astype(np.float64)
            record = {
                "split": split,
                "part": part,
                "input": rows,
                "file": rel,
                "rows": [r["pair_id"] for r in kept],
                "rejected": rejected,
                "stats": {"n": int(face.shape[0]), "sum": face.sum(0).tolist(), "sumsq": (face**2).sum(0).tolist()},
            }
            self.location.write_bytes(_record(split, part), json.dumps(record, sort_keys=True).encode())
        # The node is reported to the driver, not recorded: the records are part of the store's bytes.
        return {
            "split": list(batch["split"]),
            "part": [int(p) for p in batch["part"]],
            "node": [ray.get_runtime_context().get_node_id()] * len(batch["part"]),
        }


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
    raise PrepareError(
        f"no clip of {corpus} could be read; check the layout against the README's section "
        "'Your REACT2024 copy and pretrained feature extractors'"
    )


def _appropriateness(
    options: PrepareOptions,
    manifest: Manifest,
    location: Location,
    parts: list[str],
    split: str,
    kept_pairs: list[int],
    total_rows: int,
) -> np.ndarray:
    """Given matrices are over all 2R samples of the CSV; keep the rows that survived."""
    if options.appropriate_dir is not None:
        full = load_matrix(options.appropriate_dir / f"{split}.npy", 2 * total_rows)
        index = np.array(kept_pairs + [total_rows + p for p in kept_pairs])
        return full[np.ix_(index, index)].astype(np.uint8)
    arrays = read_parts([location.path(p) for p in parts], manifest, ["emotion"], location.fs)
    speaker_emotion = np.concatenate([arrays[column("a", "emotion")], arrays[column("b", "emotion")]])
    return compute_matrix(speaker_emotion, threshold=options.threshold)


def _build_spec(options: PrepareOptions, frames: int, streams: dict[str, StreamSpec]) -> dict[str, Any]:
    """Everything that decides a part's bytes: parts are resumed only under an equal spec."""
    extractors = {}
    if options.profile == "paper":
        folder = Location(options.wav2vec2_dir)
        extractors["wav2vec2"] = fingerprint_files(folder, folder.files())
        for name, path in sorted(options.facial_predictors.items()):
            extractors[name] = fingerprint_files(Location(Path(path).parent), [Path(path).name])
    return {
        "schema_version": SCHEMA_VERSION,
        "profile": options.profile,
        "frames": frames,
        "rows_per_part": options.rows_per_part,
        "splits": list(options.splits),
        "streams": {name: asdict(spec) for name, spec in streams.items()},
        "extractors": extractors,
    }


def _flatten(spec: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in spec.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _open_store(location: Location, spec: dict[str, Any], rebuild: bool) -> None:
    """Start the store, or check that its finished parts were made under `spec` (else refuse)."""
    if rebuild:
        location.delete_all()
    if location.exists(SPEC_FILE):
        old, new = _flatten(json.loads(location.read_bytes(SPEC_FILE))), _flatten(spec)
        changed = [
            f"{key}: {old.get(key, '(none)')} → {new.get(key, '(none)')}"
            for key in sorted(old.keys() | new.keys())
            if old.get(key) != new.get(key)
        ]
        if changed:
            raise PrepareError(
                f"{location.shown} was prepared with other settings ({'; '.join(changed)}); its parts cannot be "
                "mixed with new ones: re-run with --rebuild to start it over, or choose another --out"
            )
    elif location.exists("manifest.json"):
        location.delete_all()  # a store from before prepare could resume: rebuilt whole, as it was then
    elif location.files():
        raise PrepareError(
            f"{location.shown} is not empty and holds no feature store; choose another --out, "
            "or re-run with --rebuild to delete its contents"
        )
    location.write_bytes(SPEC_FILE, json.dumps(spec, indent=2, sort_keys=True).encode())
    if location.local:
        atomic_io.remove_leftovers(location.base)  # of writers killed in an earlier run


def _pending_parts(location: Location, parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Parts without a record of the same input rows; drops records and files of parts that no
    longer exist (a split CSV that lost rows)."""
    wanted = {_record(p["split"], p["part"]) for p in parts}
    for record in location.files(PROGRESS_DIR):
        if record not in wanted:
            location.delete(record.removeprefix(f"{PROGRESS_DIR}/").removesuffix(".json") + ".parquet")
            location.delete(record)
    pending = []
    for p in parts:
        record = _record(p["split"], p["part"])
        if not (location.exists(record) and json.loads(location.read_bytes(record))["input"] == json.loads(p["rows"])):
            pending.append(p)
    return pending


def extraction_dataset(
    parts: list[dict[str, Any]],
    options: PrepareOptions,
    streams: dict[str, StreamSpec],
    frames: int,
    placement: Placement,
):
    """The (lazy) Ray Data pipeline that extracts and writes `parts`: one part per batch."""
    import ray

    hooks = {name: os.environ[name] for name in (DELAY_ENV, CRASH_ENV) if name in os.environ}
    dataset = ray.data.from_items(parts, override_num_blocks=max(1, len(parts)))
    # Parts go out only once every actor has started, and one at a time: a part is minutes of work
    # at full scale, so an actor that started first must not queue parts while others sit idle (on
    # other nodes). An actor pool the cluster cannot place fails after ACTORS_START_TIMEOUT_S.
    dataset.context.wait_for_min_actors_s = ACTORS_START_TIMEOUT_S
    return dataset.map_batches(
        PartWriter,
        fn_constructor_args=(options, streams, frames, placement.device),
        batch_size=1,
        compute=ray.data.ActorPoolStrategy(size=placement.concurrency, max_tasks_in_flight_per_actor=1),
        num_cpus=placement.num_cpus,
        num_gpus=placement.num_gpus,
        **({"runtime_env": {"env_vars": hooks}} if hooks else {}),  # the tests' hooks reach the actors
    )


def prepare(options: PrepareOptions) -> Manifest:
    """Build or resume the feature store; returns its manifest. Raises PrepareError when nothing is
    usable or when `out` holds parts made under other settings."""
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

    location = Location(options.out)
    _open_store(location, _build_spec(options, frames, streams), options.rebuild)

    parts = []
    for split, rows in split_rows.items():
        for start in range(0, len(rows), options.rows_per_part):
            chunk = [[p.row, p.speaker.path, p.listener.path] for p in rows[start : start + options.rows_per_part]]
            parts.append({"split": split, "part": start // options.rows_per_part, "rows": json.dumps(chunk)})
    pending = _pending_parts(location, parts)
    done = len(parts) - len(pending)
    if pending:
        location.delete("manifest.json")  # the store is incomplete until the end
        ray_init()
        cluster = ray.cluster_resources()
        placement = extraction_placement(options, len(pending), cluster.get("GPU", 0))
        clips = sum(len(json.loads(p["rows"])) for p in pending) * 2
        written = extraction_dataset(pending, options, streams, frames, placement)
        device = f", {placement.num_gpus:g} GPU per worker" if placement.num_gpus else ""
        shortfall = placement_shortfall(placement, cluster)
        if shortfall:  # an autoscaler may still add nodes, so this is no error yet
            console.say(
                f"prepare: {shortfall}; they wait up to {ACTORS_START_TIMEOUT_S} s for nodes to join. "
                "Lower --workers (or --gpus-per-worker) to start now"
            )
        parts_by_node: Counter[str] = Counter()
        try:
            for row in console.progress(
                written.iter_rows(),
                total=len(pending),
                unit="part",
                desc=f"prepare: {clips} person-clips in {len(pending)} parts ({done} already done{device})",
            ):
                parts_by_node[row["node"]] += 1
        except ray.exceptions.GetTimeoutError as error:
            raise PrepareError(
                f"the extraction workers did not all start within {ACTORS_START_TIMEOUT_S} s "
                f"({shortfall or 'the cluster could not place them'}): lower --workers (or --gpus-per-worker), "
                "or add nodes. Parts already written are kept, and a re-run resumes from them"
            ) from error
        console.say(
            f"prepare: parts written on {len(parts_by_node)} node(s): "
            + ", ".join(f"{count} on node {node[:8]}" for node, count in sorted(parts_by_node.items()))
        )
    else:
        console.say(f"prepare: all {len(parts)} parts already done")

    # Reduced from the records in part order, the statistics (and so the store and its
    # fingerprint) do not depend on which parts ran in which run, or in which order they finished.
    records = [json.loads(location.read_bytes(_record(p["split"], p["part"]))) for p in parts]
    manifest = Manifest(profile=options.profile, frames=frames, fps=FPS, streams=streams)
    rejected: list[dict[str, Any]] = []
    kept_by_split: dict[str, list[tuple[str, list[int]]]] = {s: [] for s in options.splits}
    face_n, face_sum, face_sumsq = 0, np.zeros(58), np.zeros(58)
    for r in records:
        rejected += r["rejected"]
        if r["file"]:
            kept_by_split[r["split"]].append((r["file"], r["rows"]))
        if r["split"] == "train":
            face_n += r["stats"]["n"]
            face_sum += np.array(r["stats"]["sum"])
            face_sumsq += np.array(r["stats"]["sumsq"])

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

    data_files = [f for files in kept_by_split.values() for f, _ in files]
    for split, files in kept_by_split.items():
        ids = [i for _, part_ids in files for i in part_ids]
        if ids:
            matrix = _appropriateness(
                options, manifest, location, [f for f, _ in files], split, ids, len(split_rows[split])
            )
            write_array(location, f"{split}/appropriate.npy", matrix)
            data_files.append(f"{split}/appropriate.npy")
        else:
            location.delete(f"{split}/appropriate.npy")  # of an earlier run's rows
    location.write_bytes("rejected.json", json.dumps(rejected, indent=2, sort_keys=True).encode())
    data_files.append("rejected.json")
    for item in rejected:
        log.warning("rejected %s: %s", item.get("dyad", item.get("file")), item["error"])

    manifest.store_fingerprint = fingerprint_files(location, data_files)
    write_manifest(location, manifest)  # last: a store with a manifest is complete
    return manifest
