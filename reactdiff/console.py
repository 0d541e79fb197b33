"""What a person at the terminal sees, and where everything else goes.

By default the `reactdiff` command gives the terminal one line per pipeline stage, one per epoch
(losses, val metrics, an ETA), warnings the user can act on, and its results. Everything else
that the process and its children print — Ray's worker and driver logs, Ray Data's execution
plans, Tune's status tables, MLflow's messages, Python warnings — goes to a log file, whose path is
printed first. The redirection is at the file-descriptor level, because Ray's forwarded worker
output, its C++ core and the processes it starts write to fds 1 and 2, not to `sys.stdout`.

`-v` leaves the terminal as it is: everything is printed, nothing is redirected.

Results meant for scripts (e.g. the model URI of `reactdiff train`) go to stdout; progress lines go
to stderr, so `uri=$(reactdiff train stage1 …)` captures the result and still shows the progress.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Iterable, Iterator, TypeVar

from tqdm import tqdm

T = TypeVar("T")

# The streams of the terminal, and the log, while a session redirects fds 1 and 2 (None: not redirected).
_progress: IO[str] | None = None
_results: IO[str] | None = None
_log: IO[str] | None = None
LOG_TAIL_LINES = 30  # shown with the log's path when a command fails


def say(message: str) -> None:
    """One line of progress for the person at the terminal (and the log, when there is one)."""
    if _progress is None:
        print(message, file=sys.stderr, flush=True)
        return
    print(message, file=_progress, flush=True)
    print(message, file=_log, flush=True)  # keeps the log self-contained


def progress(iterable: Iterable[T], total: int, desc: str, unit: str = "it") -> Iterator[T]:
    """A progress bar on the terminal (with the rate and an ETA); a line in the log when it ends."""
    # delay: loops that end within 2 s draw no bar at all.
    bar = tqdm(
        iterable,
        total=total,
        desc=desc,
        file=_progress or sys.stderr,
        dynamic_ncols=True,
        mininterval=1.0,
        delay=2.0,
        unit=unit,
    )
    yield from bar
    if _log is not None:
        print(f"{desc}: {bar.n}/{total} in {duration(bar.format_dict['elapsed'])}", file=_log, flush=True)


def result(text: str) -> None:
    """A result for scripts and people: stdout, always."""
    print(text, file=_results or sys.stdout, flush=True)


def _tail(path: Path, lines: int) -> str:
    with path.open(errors="replace") as handle:
        return "".join(deque(handle, maxlen=lines))


@contextmanager
def session(
    log_dir: Path, command: str, verbose: bool, expected: tuple[type[BaseException], ...] = ()
) -> Iterator[Path | None]:
    """Redirect fds 1 and 2 to `<log_dir>/<command>-<time>.log` for the block (unless verbose);
    yields the log's path. A failure prints the log's last lines and its path to the terminal,
    unless it is `expected` (its message says what to do, and the caller prints it)."""
    global _progress, _results, _log
    if verbose or _progress is not None:  # nested (the demo runs other commands' code): one log
        yield None
        return
    log_dir.mkdir(parents=True, exist_ok=True)
    log = (log_dir / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log").resolve()
    sys.stdout.flush()
    sys.stderr.flush()
    ray_started_here = not _ray_is_up()
    saved_out, saved_err = os.dup(1), os.dup(2)
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _results = os.fdopen(os.dup(saved_out), "w", buffering=1)
    _progress = os.fdopen(os.dup(saved_err), "w", buffering=1)
    _log = os.fdopen(log_fd, "a", buffering=1)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    say(f"log: {log}  (Ray, MLflow and library output; `reactdiff -v {command}` prints it here instead)")
    failed: BaseException | None = None
    try:
        yield log
    except BaseException as err:
        failed = err
        raise
    finally:
        if ray_started_here and _ray_is_up():  # Ray prints its buffered worker lines as it shuts down
            sys.modules["ray"].shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_out, 1)
        os.dup2(saved_err, 2)
        os.close(saved_out)
        os.close(saved_err)
        for stream in (_progress, _results, _log):
            stream.close()
        _progress = _results = _log = None
        if failed is not None and not isinstance(failed, expected):
            print(
                f"--- the last {LOG_TAIL_LINES} lines of {log} ---\n{_tail(log, LOG_TAIL_LINES)}"
                f"--- full log: {log} ---",
                file=sys.stderr,
                flush=True,
            )


def _ray_is_up() -> bool:
    ray = sys.modules.get("ray")
    return ray is not None and ray.is_initialized()


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s`, `1 h 02 min`."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"
