"""User errors are refused before any runtime starts, with the message alone.

Each command runs as the user runs it, in a process of its own, on one input that cannot work: a
missing store, a missing or unresolvable model, a space file that does not parse. It must exit
with the error's status, print a message that names the input and what to run, print no
traceback, and leave Ray's temp folder (RAY_TMPDIR) uncreated: no Ray runtime was started.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "tiny.yaml")
SPACE = str(ROOT / "tune_spaces" / "tiny_stage2.yaml")
MISSING_STORE = "data.store=missing-store"
MISSING_MODEL = "missing.pt"
NO_MODEL_FILE = "neither a checkpoint file nor an MLflow URI"
MAKE_A_MODEL = "`reactdiff train stage1|stage2` prints"

# (id, arguments, exit status, what the message must say). Paths are relative to the test's folder.
CASES = [
    ("train-store", ["train", "stage1", "--config", TINY, MISSING_STORE], 1, ["no feature store", "reactdiff prepare"]),
    (
        "train-stage1-model",
        ["train", "stage2", "--config", TINY, MISSING_STORE],
        2,
        ["train.stage1_model=", "reactdiff train stage1"],
    ),
    (
        "tune-space",
        ["tune", "--stage", "2", "--space", "bad.yaml", "--config", TINY],
        2,
        ["bad.yaml is not valid YAML"],
    ),
    (
        "tune-model",
        ["tune", "--stage", "2", "--space", SPACE, "--config", TINY, f"train.stage1_model={MISSING_MODEL}"],
        1,
        [NO_MODEL_FILE, MAKE_A_MODEL],
    ),
    (
        "evaluate",
        ["evaluate", "--model", "models:/no-such-model@champion", "--config", TINY, MISSING_STORE],
        1,
        ["'models:/no-such-model@champion' does not resolve on sqlite:///mlflow.db", MAKE_A_MODEL],
    ),
    (
        "generate",
        ["generate", "--model", MISSING_MODEL, "--speaker", "missing-store:test", "--out", "out"],
        1,
        [NO_MODEL_FILE, MAKE_A_MODEL],
    ),
    (
        "serve-request",
        ["serve-request", "--model", MISSING_MODEL, "--speaker", "missing-store:test", "--out", "r.json"],
        1,
        [NO_MODEL_FILE],
    ),
    ("serve", ["serve", "--model", MISSING_MODEL], 1, [f"--model {MISSING_MODEL}", NO_MODEL_FILE]),
    ("render", ["render", MISSING_MODEL, "--speaker", "s.wav", "--out", "r.mp4"], 1, [NO_MODEL_FILE]),
    (
        "prepare",
        ["prepare", "--corpus", "missing-corpus", "--out", "store"],
        1,
        ["missing-corpus/train.csv", "corpus root that holds train.csv"],
    ),
    ("score", ["score", "preds.npy", "--store", "missing-store"], 1, ["no feature store", "reactdiff prepare"]),
    (
        "promote",
        ["promote", "--experiment", "no-such-experiment", "--config", TINY],
        1,
        ["experiment 'no-such-experiment' does not exist"],
    ),
]


def run_cli(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env["RAY_TMPDIR"] = str(cwd / "raytmp")  # where a Ray runtime started by the command would write its session
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "reactdiff.cli", *args, "--log-dir", "logs"],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=cwd,
        env=env,
    )
    return out, time.monotonic() - started


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "bad.yaml").write_text("train.lr: {choice: [0.1, 0.01]\n")  # an unclosed mapping
    return tmp_path


# A process of its own per command, ~10 s each on 2 shared cores (torch and MLflow imports): slow.
@pytest.mark.slow
@pytest.mark.parametrize("args, status, says", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_user_error_is_refused_before_ray_starts(workdir, args, status, says):
    out, _ = run_cli(args, workdir)
    assert out.returncode == status, out.stderr
    assert out.stderr.startswith("error: ") or "\nerror: " in out.stderr, out.stderr
    for words in says:
        assert words in out.stderr, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert not (workdir / "raytmp").exists(), "a Ray runtime was started"


def test_a_missing_store_for_stage_2_is_refused_in_seconds(workdir):
    out, seconds = run_cli(
        ["train", "stage2", "--config", TINY, "train.stage1_model=models:/reactdiff-mmt@champion", MISSING_STORE],
        workdir,
    )
    assert out.returncode == 1 and "no feature store" in out.stderr and "Traceback" not in out.stderr
    assert seconds < 20 and not (workdir / "raytmp").exists()


@pytest.mark.slow
def test_verbose_adds_the_traceback(workdir):
    out, _ = run_cli(["-v", "evaluate", "--model", MISSING_MODEL, "--config", TINY, MISSING_STORE], workdir)
    assert out.returncode == 1 and "Traceback" in out.stderr and NO_MODEL_FILE in out.stderr
