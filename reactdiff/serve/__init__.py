"""`reactdiff serve`: a Ray Serve application for a registered model alias (`app.py`), and what
configures it. This module imports neither Ray nor torch, so the command line's --help and
defaults come from here at no cost.
"""

from __future__ import annotations

from dataclasses import dataclass

from reactdiff.data import layout

APP_NAME = "reactdiff"
DEFAULT_MODEL = "models:/reactdiff@champion"


@dataclass(frozen=True)
class ServeOptions:
    """What a `reactdiff serve` deployment is configured with (the CLI's flags)."""

    model: str = DEFAULT_MODEL
    tracking_uri: str | None = None
    data_root: str | None = None  # requests may name speaker paths under it; None: no paths
    poll_s: float = 10.0
    # B of one /react request: models.reactdiff.GENERATION_BATCH (not imported: no torch here), so a
    # request is batched as `generate` batches and its reactions equal generate's.
    max_clips: int = 8
    max_frames: int = layout.FRAMES  # T of one /react request
    max_stream_frames: int = 5 * 60 * layout.FPS  # the listener frames one /stream generates
    max_body_mb: float = 64.0
    host: str = "127.0.0.1"
    port: int = 8000
    min_replicas: int = 1
    max_replicas: int = 2
    target_ongoing_requests: float = 4.0
    max_ongoing_requests: int = 16  # an open stream holds one of these for its lifetime
    num_cpus: float = 1.0  # per replica; torch uses as many threads
