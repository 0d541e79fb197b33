"""Shared fixtures: a tiny synthetic REACT2024 corpus written once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from reactdiff.data.synth import SynthClip, generate_corpus, write_synthetic_corpus

# 51 frames on disk → 50 used; train has a NoXI and a RECOLA session with 2 clips each.
TINY = {"dyads": {"train": 4, "val": 2, "test": 2}, "frames_on_disk": 51, "seed": 0, "clips_per_session": 2}
TINY_VIDEO_SIZE = 32


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Root of a tiny synthetic corpus (read-only: copy it before corrupting anything)."""
    root = tmp_path_factory.mktemp("tiny") / "corpus"
    write_synthetic_corpus(root, video_size=TINY_VIDEO_SIZE, **TINY)
    return root


@pytest.fixture(scope="session")
def tiny_rows() -> list[tuple[SynthClip, SynthClip]]:
    """The arrays `tiny_corpus` was written from: (CSV speaker, CSV listener) per row, CSV order."""
    return list(generate_corpus(**TINY))
