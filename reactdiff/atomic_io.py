"""Atomic file writes: a temporary file in the target folder, then `os.replace`.

Readers see the old file or the new one, never a partial one, and a process killed mid-write
leaves only a hidden `.<name>.<unique>.tmp` file, which `remove_leftovers` clears. Standard
library only, so that model code (`reactdiff.models`) may use it without Ray or MLflow.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

TEMPORARY_SUFFIX = ".tmp"


@contextmanager
def atomic_open(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file handle whose contents replace `path` only when the block ends without error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not tempfile.mkstemp: its 0600 mode would make stores and checkpoints unreadable to the
    # other users of shared storage; open(..., "xb") honours the umask.
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}{TEMPORARY_SUFFIX}"
    try:
        with open(temporary, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_open(path) as file:
        file.write(data)
    return Path(path)


def write_text(path: str | Path, text: str) -> Path:
    return write_bytes(path, text.encode())


def remove_leftovers(root: str | Path) -> int:
    """Delete the temporary files that killed writers left under `root`; returns how many."""
    leftovers = [p for p in Path(root).rglob(f".*{TEMPORARY_SUFFIX}") if p.is_file()]
    for path in leftovers:
        path.unlink(missing_ok=True)
    return len(leftovers)
