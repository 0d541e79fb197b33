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
    # B of one /react request: models.reactdiff.GENERATION_BATCH, so a request is batched as
    # `generate` batches and its reactions equal generate's (tests/test_serve.py checks the two agree).
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


@dataclass(frozen=True)
class ModelSource:
    """A model URI, split into what the registry knows: models:/<name>@<alias> (followed),
    models:/<name>/<version> (fixed); runs:/<run id>/<path> and checkpoint files are fixed too."""

    uri: str
    name: str | None = None
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, uri: str) -> "ModelSource":
        if not uri.startswith("models:/"):
            return cls(uri)
        rest = uri.removeprefix("models:/")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            return cls(uri, name=name, alias=alias)
        name, _, version = rest.rpartition("/")
        if not name or not version.isdigit():
            raise ValueError(f"model '{uri}': expected models:/<name>@<alias> or models:/<name>/<version>")
        return cls(uri, name=name, version=version)
