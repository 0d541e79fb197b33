"""One terminal line per training epoch: losses, val metrics and an ETA.

Ray Train calls `UserCallback.after_report` in its controller actor, not in the driver that holds
the terminal, so the callback forwards each epoch's report through a `ray.util.queue.Queue` (an
actor, so it works across nodes), and a thread of the driver prints it with `console.say`.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import ray.train
from ray.util.queue import Empty, Queue

from reactdiff import console

# What an epoch line shows, in this order, when the report has it.
SHOWN = (
    "train_loss",
    "val_loss",
    "val_recon_FRDist",
    "val_FRCorr",
    "val_FRDist",
    "val_FRDiv",
    "val_track_corr",
    "data_wait_fraction",
)


class _ForwardReports(ray.train.UserCallback):
    def __init__(self, queue: Queue):
        self.queue = queue

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        self.queue.put(dict(metrics[0]))  # rank 0's report; every rank reports the same scores


def format_metrics(metrics: dict[str, Any]) -> list[str]:
    """`key value` for each SHOWN metric the report has a finite value for (NaN: not scored yet)."""
    parts = []
    for key in SHOWN:
        value = metrics.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            parts.append(f"{key} {value:.1%}" if key.endswith("fraction") else f"{key} {value:.4g}")
    return parts


class EpochClock:
    """Formats epoch lines with the time per epoch and an ETA, for one run or several (sweep trials),
    from when their reports arrive."""

    def __init__(self):
        self.started = time.perf_counter()
        self.first: dict[str, tuple[int, float]] = {}  # label → (epoch, time) of its first report

    def line(self, label: str, metrics: dict[str, Any], epochs: int) -> str:
        epoch, now = int(metrics.get("epoch", 0)), time.perf_counter()
        first = self.first.get(label)
        parts = [f"{label} epoch {epoch + 1}/{epochs}", *format_metrics(metrics)]
        if first is None or epoch <= first[0]:  # a resumed run's first report is a later epoch
            self.first[label] = (epoch, now)
            # The first report also waited for the workers to start: no rate to project yet.
            parts.append(f"{console.duration(now - self.started)} with start-up")
        else:
            per_epoch = (now - first[1]) / (epoch - first[0])
            remaining = max(0, epochs - epoch - 1)
            parts.append(f"{console.duration(per_epoch)}/epoch, ETA {console.duration(remaining * per_epoch)}")
        return "  ".join(parts)


class EpochLines:
    """Context manager around `trainer.fit()`; `callback` goes into the Train RunConfig."""

    def __init__(self, label: str, epochs: int):
        self.label, self.epochs = label, epochs
        self.queue = Queue(actor_options={"num_cpus": 0})  # must not wait behind the training workers
        self.callback = _ForwardReports(self.queue)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._print, name="reactdiff-epoch-lines", daemon=True)

    def _print(self) -> None:
        clock = EpochClock()
        while not (self._stop.is_set() and self.queue.empty()):
            try:
                metrics = self.queue.get(timeout=0.5)
            except Empty:
                continue
            console.say(clock.line(self.label, metrics, self.epochs))

    def __enter__(self) -> "EpochLines":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
        ray.kill(self.queue.actor)
