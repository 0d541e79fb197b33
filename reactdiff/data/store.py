"""The Parquet feature store written by `prepare` and read by training and evaluation.

Layout (see docs/architecture.md): one row per dyad, both persons in the row, so Ray Data can
shard a split by rows with no join; the role swap happens at read time (`to_samples`).
"""

from __future__ import annotations

import hashlib
import io
import json
import posixpath
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from reactdiff import atomic_io
from reactdiff.errors import UserError

SCHEMA_VERSION = 1
PERSONS = ("a", "b")
TARGET_STREAMS = {"emotion": 25, "3dmm": 58}
READ_TASK_BYTES = 64 * 2**20  # Parquet bytes per Ray Data read task (Store.ray_dataset)
SCHEMA_READERS = 16  # Parquet footers read at once when a store is opened (round trips on object storage)


class StoreError(UserError, ValueError):
    """The feature store is missing, incomplete or does not match its manifest."""


@dataclass(frozen=True)
class StreamSpec:
    dim: int
    dtype: str  # "float16" | "float32"
    role: str  # "facial" | "audio" | "target"


@dataclass
class Manifest:
    profile: str
    frames: int
    fps: int
    streams: dict[str, StreamSpec]
    splits: dict[str, dict[str, Any]] = field(default_factory=dict)
    normalisation: dict[str, list[float]] = field(default_factory=dict)
    corpus_fingerprint: str = ""
    store_fingerprint: str = ""
    rejected_count: int = 0
    schema_version: int = SCHEMA_VERSION

    # ---- model-facing views -------------------------------------------------------------------
    def model_streams(self) -> dict[str, int]:
        """Streams the MMT consumes ({name: dim}): facial and audio inputs, targets in `lite`."""
        return {
            name: spec.dim for name, spec in self.streams.items() if spec.role != "target" or self.profile == "lite"
        }

    # ---- (de)serialisation --------------------------------------------------------------------
    def to_json(self) -> str:
        data = asdict(self)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str) -> "Manifest":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise StoreError(f"{source}: not valid JSON ({exc}); re-run `reactdiff prepare`") from None
        version = data.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(
                f"{source}: schema_version {version!r}, this reactdiff reads {SCHEMA_VERSION}; "
                "re-run `reactdiff prepare` to rebuild the store"
            )
        try:
            data["streams"] = {k: StreamSpec(**v) for k, v in data["streams"].items()}
            return cls(**data)
        except (KeyError, TypeError) as exc:
            raise StoreError(f"{source}: malformed manifest ({exc}); re-run `reactdiff prepare`") from None


class Location:
    """A folder on local or shared disk, or under any `pyarrow.fs` URI (`s3://bucket/prefix`, `gs://…`).

    Paths inside it are relative, '/'-separated. Local writes go through `reactdiff.atomic_io`; an
    object store's single PUT is atomic already. Credentials come from the environment as the
    SDK reads them (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION, an instance
    role); pyarrow 25 ignores AWS_ENDPOINT_URL, so another S3 endpoint goes in the URI:
    `s3://bucket/prefix?endpoint_override=http://host:port`. `uri` keeps the query, so that any
    process can reopen the location from it; `shown` (for messages) drops it.
    """

    def __init__(self, root: str | Path):
        text = str(root)
        self.local = "://" not in text
        if self.local:
            self.fs, self.base = pafs.LocalFileSystem(), str(Path(text).absolute())
            self.uri = self.shown = self.base
        else:
            self.fs, self.base = pafs.FileSystem.from_uri(text)
            self.base, self.uri, self.shown = self.base.rstrip("/"), text, text.split("?", 1)[0].rstrip("/")

    def path(self, rel: str) -> str:
        """The path in `self.fs` (what pyarrow and Ray Data readers take with `filesystem=`)."""
        return f"{self.base}/{rel}"

    def name(self, rel: str) -> str:
        """The path or URI to show people."""
        return f"{self.shown}/{rel}"

    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type == pafs.FileType.File

    def size(self, rel: str) -> int:
        return self.fs.get_file_info(self.path(rel)).size

    def read_bytes(self, rel: str) -> bytes:
        with self.fs.open_input_stream(self.path(rel)) as file:
            return file.read()

    @contextmanager
    def open_output(self, rel: str) -> Iterator[BinaryIO]:
        if self.local:
            with atomic_io.atomic_open(self.path(rel)) as file:
                yield file
        else:
            with self.fs.open_output_stream(self.path(rel)) as file:
                yield file

    def write_bytes(self, rel: str, data: bytes) -> None:
        with self.open_output(rel) as file:
            file.write(data)

    def delete(self, rel: str) -> None:
        if self.exists(rel):
            self.fs.delete_file(self.path(rel))

    def files(self, rel: str = "") -> list[str]:
        """Relative paths of the files under `rel` (all levels), sorted."""
        selector = pafs.FileSelector(self.path(rel).rstrip("/"), allow_not_found=True, recursive=True)
        return sorted(
            info.path[len(self.base) + 1 :]
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        )

    def delete_all(self) -> None:
        self.fs.delete_dir_contents(self.base, missing_dir_ok=True)


def column(person: str, stream: str) -> str:
    return f"{person}__{stream}"


def arrow_schema(manifest: Manifest) -> pa.Schema:
    fields = [pa.field("pair_id", pa.int64()), pa.field("clip_a", pa.string()), pa.field("clip_b", pa.string())]
    for person in PERSONS:
        for name, spec in manifest.streams.items():
            value_type = pa.float16() if spec.dtype == "float16" else pa.float32()
            fields.append(pa.field(column(person, name), pa.list_(value_type, manifest.frames * spec.dim)))
    return pa.schema(fields)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def write_part(location: Location, rel: str, rows: list[dict[str, Any]], manifest: Manifest) -> None:
    """Write one part file atomically. Each row: pair_id, clip_a, clip_b, a/b: {stream: (F, D)}."""
    schema = arrow_schema(manifest)
    arrays: list[pa.Array] = [
        pa.array([r["pair_id"] for r in rows], pa.int64()),
        pa.array([r["clip_a"] for r in rows], pa.string()),
        pa.array([r["clip_b"] for r in rows], pa.string()),
    ]
    for person in PERSONS:
        for name, spec in manifest.streams.items():
            flat = np.stack([np.asarray(r[person][name], dtype=spec.dtype).reshape(-1) for r in rows])
            values = pa.array(flat.reshape(-1))
            arrays.append(pa.FixedSizeListArray.from_arrays(values, manifest.frames * spec.dim))
    table = pa.Table.from_arrays(arrays, schema=schema)
    # One row per row group keeps paper-profile reads streaming (~42 MB per person-clip in fp16).
    # Dictionary encoding only for the clip names: on feature values it decoded fp16 ~7x slower
    # than plain, float32 ~1.1-1.3x, and grew a random-valued lite store by half (923 vs 600 MB).
    with location.open_output(rel) as file:
        pq.write_table(
            table, file, row_group_size=1 if manifest.profile == "paper" else 64, use_dictionary=["clip_a", "clip_b"]
        )


def write_manifest(location: Location, manifest: Manifest) -> None:
    location.write_bytes("manifest.json", manifest.to_json().encode())


def write_array(location: Location, rel: str, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array)
    location.write_bytes(rel, buffer.getvalue())


def fingerprint_files(location: Location, rels: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for rel in sorted(rels):
        digest.update(rel.encode())
        with location.fs.open_input_stream(location.path(rel)) as file:
            for chunk in iter(lambda: file.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def _column_types(schema: pa.Schema) -> dict[str, str]:
    """Column → type, ignoring order and the list item's name (Parquet renames it 'element')."""
    out = {}
    for f in schema:
        t = f.type
        out[f.name] = f"{t.value_type}[{t.list_size}]" if pa.types.is_fixed_size_list(t) else str(t)
    return out


# --------------------------------------------------------------------------------------------
# Store
# --------------------------------------------------------------------------------------------


class Store:
    """A prepared feature store on local or shared storage, or object storage (see `Location`)."""

    def __init__(self, root: str | Path):
        self.location = Location(root)
        self.root = self.location.uri  # an absolute path, or the URI
        if not self.location.exists("manifest.json"):
            raise StoreError(
                f"no feature store at {self.root} (missing manifest.json); "
                f"create one with `reactdiff prepare --corpus <dir> --out {self.root}`"
            )
        self.manifest = Manifest.from_json(
            self.location.read_bytes("manifest.json").decode(), self.location.name("manifest.json")
        )
        self._check_parts()

    def _check_parts(self) -> None:
        """Every part the manifest lists exists and holds the manifest's columns. One listing per
        folder, then the Parquet footers read in parallel: on object storage each is a round trip,
        and a full store has hundreds of parts."""
        parts = [rel for split in self.manifest.splits for rel in self._parts(split)]
        present = {f for folder in {posixpath.dirname(rel) for rel in parts} for f in self.location.files(folder)}
        for rel in parts:
            if rel not in present:
                raise StoreError(
                    f"{self.location.name(rel)}: listed in the manifest but missing; re-run `reactdiff prepare`"
                )
        with ThreadPoolExecutor(max_workers=SCHEMA_READERS) as pool:
            schemas = list(
                pool.map(lambda rel: pq.read_schema(self.location.path(rel), filesystem=self.location.fs), parts)
            )
        expected = arrow_schema(self.manifest)
        for rel, actual in zip(parts, schemas, strict=True):
            if _column_types(actual) != _column_types(expected):
                missing = set(expected.names) - set(actual.names)
                extra = set(actual.names) - set(expected.names)
                detail = []
                if missing:
                    detail.append(f"missing columns {sorted(missing)}")
                if extra:
                    detail.append(f"unexpected columns {sorted(extra)}")
                for name in sorted(set(expected.names) & set(actual.names)):
                    if _column_types(expected)[name] != _column_types(actual)[name]:
                        detail.append(
                            f"column {name}: {actual.field(name).type}, manifest says {expected.field(name).type}"
                        )
                raise StoreError(
                    f"{self.location.name(rel)} does not match manifest.json ({'; '.join(detail)}); "
                    "the store was modified or written by another version: re-run `reactdiff prepare`"
                )

    def _parts(self, split: str) -> list[str]:
        if split not in self.manifest.splits:
            raise StoreError(
                f"split '{split}' is not in the store at {self.root} "
                f"(it has: {', '.join(self.manifest.splits) or 'none'})"
            )
        return list(self.manifest.splits[split]["files"])

    def files(self, split: str) -> list[str]:
        """A split's part files as paths in `self.location.fs`."""
        return [self.location.path(rel) for rel in self._parts(split)]

    def split_bytes(self, split: str) -> int:
        """Size of a split's Parquet parts."""
        return sum(self.location.size(rel) for rel in self._parts(split))

    def read_tasks(self, split: str) -> int:
        """Ray Data read tasks for a split: one per ~READ_TASK_BYTES of Parquet, at most one per file."""
        return max(1, min(len(self._parts(split)), -(-self.split_bytes(split) // READ_TASK_BYTES)))

    def appropriate(self, split: str) -> np.ndarray:
        rel = f"{split}/appropriate.npy"
        if not self.location.exists(rel):
            raise StoreError(f"{self.location.name(rel)} is missing; re-run `reactdiff prepare`")
        return np.load(io.BytesIO(self.location.read_bytes(rel)))

    def read_split(self, split: str, streams: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Read a whole split into arrays (evaluation sizes; training streams through Ray Data)."""
        return read_parts(self.files(split), self.manifest, streams, self.location.fs)

    def ray_dataset(self, split: str, streams: Iterable[str] | None = None):
        """A Ray Data dataset over a split's part files (imported lazily: model code stays Ray-free).

        Only the wanted columns are read. Two read-path choices, measured by bench/bench_prepare.py:
        - one read task per ~READ_TASK_BYTES of Parquet, not one per file: each task costs tens of
          ms of scheduling, which for a lite store of 5 MB parts was most of the read time;
        - Ray Data's file-based Parquet datasource, not the V2 one Ray >= 2.5x defaults to: V2
          lists files through a footer-reader actor pool started anew on every execution (every
          epoch), which cost 5-15 s per pass on a 2-core machine, whatever the store size.
        """
        import ray.data

        columns = read_columns(self.manifest, streams)
        files = self.files(split)
        context = ray.data.DataContext.get_current()
        v2 = getattr(context, "use_datasource_v2", None)
        if v2:
            context.use_datasource_v2 = False  # read_parquet picks the datasource at call time
        try:
            dataset = ray.data.read_parquet(
                files, columns=columns, filesystem=self.location.fs, override_num_blocks=self.read_tasks(split)
            )
        finally:
            if v2:
                context.use_datasource_v2 = v2
        # Rows in store order whichever read task finishes first, so that seeded runs repeat
        # exactly (Ray Train's streaming_split takes its options from train.trainer instead).
        dataset.context.execution_options.preserve_order = True
        return dataset


def read_columns(manifest: Manifest, streams: Iterable[str] | None) -> list[str]:
    """The Parquet columns holding `streams` (all of the manifest's when None) of both persons."""
    wanted = list(streams) if streams is not None else list(manifest.streams)
    return ["pair_id", "clip_a", "clip_b"] + [column(p, s) for p in PERSONS for s in wanted]


def read_parts(
    files: Iterable[str],
    manifest: Manifest,
    streams: Iterable[str] | None = None,
    filesystem: pafs.FileSystem | None = None,
) -> dict[str, np.ndarray]:
    """Read part files whole into arrays (`Store.read_split`; `prepare` before its manifest exists)."""
    columns = read_columns(manifest, streams)
    table = pa.concat_tables(pq.read_table(f, columns=columns, filesystem=filesystem) for f in files)
    return table_to_arrays(table, manifest)


def feature_chunks(col: pa.Array | pa.ChunkedArray, frames: int, dim: int) -> list[np.ndarray]:
    """Zero-copy (rows, frames, dim) views of a feature column, one per Arrow chunk."""
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    return [c.flatten().to_numpy(zero_copy_only=False).reshape(len(c), frames, dim) for c in chunks if len(c)]


def table_to_arrays(table: pa.Table, manifest: Manifest) -> dict[str, np.ndarray]:
    """Arrow table → {column: array}; features become (n, F, D)."""
    out: dict[str, np.ndarray] = {}
    for name in table.column_names:
        if "__" in name:
            spec = manifest.streams[name.split("__", 1)[1]]
            chunks = feature_chunks(table[name], manifest.frames, spec.dim)
            out[name] = (
                chunks[0]
                if len(chunks) == 1
                else np.concatenate(chunks)
                if chunks
                else np.empty((0, manifest.frames, spec.dim), spec.dtype)
            )
        else:
            out[name] = np.asarray(table[name].to_pylist())
    return out


# Which person of a dyad row plays each role: rows first as A→B, then as B→A (role swap).
ROLE_PERSONS = {"speaker": ("a", "b"), "listener": ("b", "a")}


def role_parts(arrays: dict[str, Any], role: str, stream: str) -> list[Any]:
    """The column values (arrays, or lists of chunk views) that, in this order, are `role`'s `stream`
    over all samples."""
    return [arrays[column(person, stream)] for person in ROLE_PERSONS[role]]


def sample_clips(arrays: dict[str, np.ndarray]) -> tuple[list[str], list[str]]:
    """(speaker clips, listener clips) of the role-swapped samples, in sample order."""
    clip_a, clip_b = list(arrays["clip_a"]), list(arrays["clip_b"])
    return clip_a + clip_b, clip_b + clip_a


def to_samples(
    arrays: dict[str, np.ndarray], streams: Iterable[str], roles: Iterable[str] = ("speaker", "listener")
) -> dict[str, Any]:
    """Role-swap dyad rows into samples: first every row as A→B, then every row as B→A.

    Returns {"speaker": {stream: (2n, F, D)}, "listener": {...}, "speaker_clip": [...],
    "listener_clip": [...]} in the store's sample order (the appropriateness matrix's order).
    `roles` limits the feature groups built; the clip lists are always there.
    """
    streams = list(streams)
    out: dict[str, Any] = {role: {s: np.concatenate(role_parts(arrays, role, s)) for s in streams} for role in roles}
    out["speaker_clip"], out["listener_clip"] = sample_clips(arrays)
    return out


def person_of(clip: str) -> str:
    """The listener identity LRS keys styles by: `<dataset>/<session>/<person>` of a clip path."""
    return clip.rsplit("/", 1)[0]
