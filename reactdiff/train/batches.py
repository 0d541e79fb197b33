"""A Ray Train worker's dataset shard as role-swapped sample tensors (`Batches`), one copy per stream."""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
from ray.data.collate_fn import ArrowBatchCollateFn

from reactdiff.data.store import PERSONS, Manifest, column, feature_chunks, person_of, role_parts, sample_clips


class Batches:
    """Iterates a worker's dataset shard as role-swapped sample tensors, timing the data wait."""

    def __init__(
        self,
        shard,
        manifest: Manifest,
        streams: list[str],
        roles: tuple[str, ...],
        rows_per_batch: int,
        crop_frames: int,
        seed: int,
        device: torch.device,
        shuffle_rows: int = 0,
    ):
        self.shard, self.manifest, self.streams, self.roles = shard, manifest, streams, roles
        self.rows_per_batch, self.crop_frames, self.device = rows_per_batch, crop_frames, device
        self.seed, self.shuffle_rows = seed, shuffle_rows
        self.rng = np.random.default_rng(seed)
        self.wait_seconds = 0.0
        self.rows_read: list[int] = []  # the dyads' pair_ids, in the order they came

    def __iter__(self):
        # The store is in corpus order (a session's clips together); a seeded local shuffle
        # buffer mixes sessions within each batch and differs every epoch.
        shuffle = (
            {"local_shuffle_buffer_size": self.shuffle_rows, "local_shuffle_seed": self.seed}
            if self.shuffle_rows > 0
            else {}
        )
        # Ray converts the next batch to tensors in a background thread while this one trains.
        # One batch ahead means one conversion thread, so the crops are drawn in batch order and
        # a seeded run repeats.
        iterator = iter(
            self.shard.iter_torch_batches(
                batch_size=self.rows_per_batch, prefetch_batches=1, collate_fn=_ArrowCollate(self.collate), **shuffle
            )
        )
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            batch = {
                key: {k: v.to(self.device) for k, v in value.items()} if isinstance(value, dict) else value
                for key, value in batch.items()
            }
            self.wait_seconds += time.perf_counter() - start
            yield batch

    def collate(self, table) -> dict[str, Any]:
        """Role-swapped float32 sample tensors, cropped, straight from zero-copy views of the batch.

        One copy per stream: torch crops and widens float16 to float32 while it copies each Arrow
        chunk into the batch tensor. Combining chunks, concatenating the role-swapped halves,
        then `astype` in numpy took half of a paper-profile worker's step.
        """
        frames = self.manifest.frames
        lo, hi = 0, frames
        if 0 < self.crop_frames < frames:  # one random crop per batch
            lo = int(self.rng.integers(0, frames - self.crop_frames + 1))
            hi = lo + self.crop_frames
        views = {
            column(person, stream): feature_chunks(
                table[column(person, stream)], frames, self.manifest.streams[stream].dim
            )
            for person in PERSONS
            for stream in self.streams
        }

        def convert(role: str, stream: str) -> torch.Tensor:
            chunks = [chunk for part in role_parts(views, role, stream) for chunk in part]
            out = torch.empty((sum(len(c) for c in chunks), hi - lo, chunks[0].shape[2]), dtype=torch.float32)
            offset = 0
            for chunk in chunks:
                out[offset : offset + len(chunk)].copy_(torch.from_numpy(chunk[:, lo:hi]))
                offset += len(chunk)
            return out

        clips = {name: table[name].to_pylist() for name in ("clip_a", "clip_b")}
        self.rows_read.extend(table["pair_id"].to_pylist())
        return {
            **{role: {stream: convert(role, stream) for stream in self.streams} for role in self.roles},
            "listener_id": [person_of(c) for c in sample_clips(clips)[1]],
        }


class _ArrowCollate(ArrowBatchCollateFn):
    """A collate function that receives Arrow tables: Ray picks the batch format from the class."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, table) -> dict[str, Any]:
        return self.collate(table)
