"""A real `mlflow server` on loopback with a SQLite store, started and stopped by process id.

Used by `reactdiff demo` (several processes log at once: Ray workers, Tune trials) and by the tests:

    with mlflow_server(Path("demo_out/mlflow")) as uri:   # http://127.0.0.1:<free port>
        ...
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

STARTUP_TIMEOUT_S = 90.0  # a cold start on a busy 2-core machine takes ~10-30 s


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a server this process starts next)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_answering(url: str, process: subprocess.Popen, log: Path, timeout_s: float = STARTUP_TIMEOUT_S) -> None:
    """Poll `url` until it answers 200; fail with the server's log if the process exits or time runs out.
    (`mlflow server` answers /health, `mlflow models serve` /ping.)"""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"the server exited with {process.returncode}; its log ({log}):\n{log.read_text()[-4000:]}"
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not answered after {timeout_s:.0f} s; log:\n{log.read_text()[-4000:]}")


@contextmanager
def mlflow_server(tmp_dir: str | Path) -> Iterator[str]:
    """Start `mlflow server` on 127.0.0.1 with its store under `tmp_dir`; yield its URL.

    The server runs in its own process group (it forks workers), which is killed on exit.
    """
    tmp_dir = Path(tmp_dir)
    tmp_dir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_dir / "mlflow-server.log"
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"sqlite:///{tmp_dir / 'mlflow.db'}",
        "--default-artifact-root",
        str(tmp_dir / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",  # tests share two CPU cores
    ]
    # The job runner (8 huey worker processes, for MLflow's GenAI jobs) is not needed here.
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True, cwd=tmp_dir, env=env
        )
    try:
        wait_until_answering(f"{url}/health", process, log)
        yield url
    finally:
        _kill_group(process, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        _kill_group(process, signal.SIGKILL)  # the server's workers, should any outlive it
        process.wait()


def _kill_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)  # start_new_session=True: the group id is the server's pid
    except ProcessLookupError:
        pass  # the whole group has already exited
