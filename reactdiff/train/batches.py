"""A Ray Train worker's dataset shard as role-swapped sample tensors (`Batches`), one copy per stream."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from reactdiff.data.store import PERSONS, Manifest, column, feature_chunks, person_of, role_parts, sample_clips


def batch_crop(rng: np.random.Generator, frames: int, crop_frames: int) -> tuple[int, int]:
    """One batch's frame range: a random `crop_frames`-long span, or the whole clip when
    `crop_frames` is 0 or not shorter than it."""
    if 0 < crop_frames < frames:
        lo = int(rng.integers(0, frames - crop_frames + 1))
        return lo, lo + crop_frames
    return 0, frames


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
        self.wait_seconds = 0.0  # the training loop blocked on this iterator, first batch included
        # Of which the first batch: the epoch's start-up (Ray Data's execution, the first read).
        self.first_wait_seconds = 0.0
        self.rows_read: list[int] = []  # the dyads' pair_ids, in the order they came
        self._converter: ThreadPoolExecutor | None = None

    def start(self) -> Batches:
        """Starts reading now: the first batch is read and converted in the background from here on.

        The training loop starts the next epoch's batches before it validates, so that the
        epoch's start-up (Ray Data's execution, the first part read) overlaps validation.
        """
        if self._converter is None:
            # Ray hands over whole Arrow blocks (zero-copy, one fetched ahead); this class picks
            # each batch's rows and converts them to tensors in one background thread while the
            # previous batch trains. One thread keeps row order and crops in batch order, so a
            # seeded run repeats.
            blocks = self.shard.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=1)
            tables = self.batch_tables(blocks)

            def next_batch() -> dict[str, Any] | None:
                table = next(tables, None)
                return None if table is None else self.collate(table)

            self._next_batch = next_batch
            self._converter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="reactdiff-collate")
            self._upcoming = self._converter.submit(next_batch)
        return self

    def __iter__(self):
        self.start()
        try:
            first = True
            while True:
                start = time.perf_counter()
                batch = self._upcoming.result()
                if batch is None:
                    return
                self._upcoming = self._converter.submit(self._next_batch)
                batch = {
                    key: {k: v.to(self.device) for k, v in value.items()} if isinstance(value, dict) else value
                    for key, value in batch.items()
                }
                waited = time.perf_counter() - start
                if first:
                    self.first_wait_seconds, first = waited, False
                self.wait_seconds += waited
                yield batch
        finally:
            self._converter.shutdown(wait=True, cancel_futures=True)
            self._converter = None  # read once; a second iteration reads the shard again

    def batch_tables(self, blocks: Iterable[pa.Table]) -> Iterator[pa.Table]:
        """Each batch's dyad rows as an Arrow table of one-row slices: store order, or a seeded shuffle.

        The shuffle keeps at least `shuffle_rows` rows waiting and draws each batch at random from
        them, as Ray's local shuffle buffer does; but its rows stay zero-copy views into their
        blocks, where Ray's buffer copies every row it shuffles (14 MB per paper-profile sample),
        so that `collate`'s one copy per row is the only one.
        """
        order = np.random.default_rng([self.seed, 1]) if self.shuffle_rows > 0 else None
        waiting: list[pa.Table] = []
        for block in blocks:
            waiting.extend(block.slice(i, 1) for i in range(block.num_rows))
            while len(waiting) >= max(self.rows_per_batch, self.shuffle_rows):
                yield self._take(waiting, self.rows_per_batch, order)
        while waiting:
            yield self._take(waiting, self.rows_per_batch, order)

    @staticmethod
    def _take(waiting: list[pa.Table], rows: int, order: np.random.Generator | None) -> pa.Table:
        """Removes `rows` rows from `waiting` (the first ones, or random ones) and concatenates them."""
        rows = min(rows, len(waiting))
        picked = sorted(order.choice(len(waiting), rows, replace=False)) if order else range(rows)
        taken = [waiting[i] for i in picked]
        for i in reversed(picked):
            del waiting[i]
        return pa.concat_tables(taken)

    def collate(self, table) -> dict[str, Any]:
        """Role-swapped float32 sample tensors, cropped, straight from zero-copy views of the batch.

        One copy per stream: torch crops and widens float16 to float32 while it copies each Arrow
        chunk into the batch tensor. Combining chunks, concatenating the role-swapped halves,
        then `astype` in numpy took half of a paper-profile worker's step.
        """
        frames = self.manifest.frames
        lo, hi = batch_crop(self.rng, frames, self.crop_frames)
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


class LatentBatches:
    """One epoch of stage-2 batches drawn from latents a worker encoded once (`Stage2Task`): the
    same interface and accounting as `Batches`, with no data wait.

    `steps` batches of `samples` samples each, drawn without replacement from a permutation
    seeded by `seed` (reshuffled when the shard is used up), every batch cropped to `crop_frames`
    frames at one random start, as `Batches` crops features. Every rank draws the same number of
    batches, as DDP needs."""

    def __init__(
        self,
        speaker: torch.Tensor,
        listener: torch.Tensor,
        listener_ids: list[str],
        rows: list[int],
        steps: int,
        samples: int,
        crop_frames: int,
        seed: int,
    ):
        self.speaker, self.listener, self.listener_ids = speaker, listener, listener_ids
        self.steps, self.samples, self.crop_frames = steps, min(samples, len(listener_ids)), crop_frames
        self.rng = np.random.default_rng(seed)
        self.rows_read = rows  # the dyads the cache holds (read once, when it was encoded)
        self.wait_seconds = self.first_wait_seconds = 0.0

    def start(self) -> LatentBatches:
        return self

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order: list[int] = []
        frames = self.speaker.shape[1]
        for _ in range(self.steps):
            if len(order) < self.samples:
                order += self.rng.permutation(len(self.listener_ids)).tolist()
            picked, order = order[: self.samples], order[self.samples :]
            lo, hi = batch_crop(self.rng, frames, self.crop_frames)
            yield {
                "speaker": self.speaker[picked, lo:hi],
                "listener": self.listener[picked, lo:hi],
                "listener_id": [self.listener_ids[i] for i in picked],
            }
