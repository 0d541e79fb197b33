"""The jobs/ entrypoints' own checks. The jobs themselves run end to end, submitted with `ray job
submit` to a two-node cluster/local_cluster.sh, in tests/test_readme.py (the README's "On a
cluster" section)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_submitted_job_refuses_relative_data_paths():
    """Inside a submitted job (the supervisor's variable set), relative stores are refused."""
    # jobs.SUBMITTED_JOB_ENV (the repo root, where `jobs` lives, is not on the test's sys.path).
    env = {**os.environ, "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobs.train_stage1",
            "--config",
            "configs/tiny.yaml",
            "tracking.tracking_uri=http://127.0.0.1:5000",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "data.store=data/store" in done.stderr and "train.storage_path=runs" in done.stderr
    assert "http://127.0.0.1:5000" not in done.stderr  # a server URL is fine
