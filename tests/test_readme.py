"""The README's commands, run as written.

The fenced bash blocks of the README's "Using it" and "On a cluster" sections are read from
README.md itself, so an edit of the README that the code does not follow fails here. Each section
runs as one shell session, with only what the README documents set around it: RECIPE (its size
override), MLFLOW_PORT / MLFLOW_DIR and REACTDIFF_CLUSTER_DIR (cluster/*.sh), SHARED, and the
REACT2024 / MODELS folders of the paper-profile example (a tiny corpus and tiny random weights).
Servers are stopped by the PIDs their scripts recorded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import pytest

from reactdiff.data.tiny_models import make_tiny_facial_predictors, make_tiny_wav2vec2
from reactdiff.mlflow_server import free_port
from reactdiff.tags import STAGE_TAG
from reactdiff.tracking import find_run
from reactdiff.train.loop import SHARDS_ARTIFACT

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
VENV = Path(sys.executable).parent.parent
SMALL_RECIPE = "configs/demo_small.yaml"
SECTION_TIMEOUT_S = 1500

# Own processes: the commands run as a user runs them, each `reactdiff` with its own Ray runtime.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_inprocess_ray")]


def bash_blocks(section: str) -> list[str]:
    """The ```bash blocks of the README's `## <section>`, up to the next `## ` heading."""
    text = README.read_text()
    start = text.index(f"\n## {section}\n")
    end = text.find("\n## ", start + 1)
    blocks = re.findall(r"```bash\n(.*?)```", text[start : end if end > 0 else None], re.S)
    assert blocks, f"README section '{section}' has no bash block"
    return blocks


def _run_section(section: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    script = "set -eo pipefail\n" + "\n".join(bash_blocks(section))
    done = subprocess.run(
        ["bash", "-c", script], cwd=cwd, env=env, capture_output=True, text=True, timeout=SECTION_TIMEOUT_S
    )
    assert done.returncode == 0, (
        f"README section '{section}' failed (exit {done.returncode}):\n"
        f"--- stdout ---\n{done.stdout[-4000:]}\n--- stderr ---\n{done.stderr[-8000:]}"
    )
    return done


def _stop_mlflow_server(cwd: Path, env: dict[str, str]) -> None:
    """The README's own stop: the script ends the process group whose PID it recorded."""
    subprocess.run([str(REPO / "cluster" / "mlflow_server.sh"), "stop"], cwd=cwd, env=env, timeout=60)


def _env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        "RECIPE": SMALL_RECIPE,
        "MLFLOW_PORT": str(free_port()),
        **extra,
    }


def test_using_it_runs_as_written(tiny_corpus, tmp_path):
    # A scratch folder holding what the commands read from the repo, so data/, runs/, logs/ and
    # the MLflow server's files land there and not in the checkout.
    work = tmp_path / "work"
    work.mkdir()
    for name in ("configs", "tune_spaces", "cluster"):
        (work / name).symlink_to(REPO / name)
    (work / ".venv").symlink_to(VENV)
    models = tmp_path / "models"
    make_tiny_wav2vec2(models / "wav2vec2-base-960h")
    for name, path in make_tiny_facial_predictors(models / "facial").items():
        shutil.move(path, models / {"va": "elim_va.pt", "au": "me_graphau.pt", "fe": "resmasknet.pt"}[name])
    env = _env(REACT2024=str(tiny_corpus), MODELS=str(models))
    try:
        done = _run_section("Using it", work, env)
    finally:
        _stop_mlflow_server(work, env)

    terminal = done.stdout + done.stderr
    for noise in ("RayTrainWorker", "PlacementGroupCleaner", "Trial status"):
        assert noise not in terminal, f"'{noise}' reached the terminal"
    assert list((work / "logs").glob("train-*.log")), "the commands' logs went to logs/"

    client = mlflow.MlflowClient(f"sqlite:///{work / 'mlflow_server' / 'mlflow.db'}")
    mmt = client.get_model_version_by_alias("reactdiff-mmt", "champion")
    assert client.get_run(mmt.run_id).data.tags[STAGE_TAG] == "1"
    champion = client.get_model_version_by_alias("reactdiff", "champion")
    assert client.get_run(champion.run_id).data.tags[STAGE_TAG] == "2"
    # The sweeps promoted too: the Pareto member picked by its row in the front table is a version.
    promoted = [
        v for v in client.search_model_versions("name='reactdiff'") if v.tags.get("reactdiff.promotion.sweep_run_id")
    ]
    assert {client.get_run(v.run_id).data.tags["reactdiff.sweep"] for v in promoted} >= {"demo-sweep", "pareto"}
    assert len(list((work / "out").rglob("*.csv"))) == 2 * 10  # --max-clips 2, α = 10
    assert '"profile": "paper"' in (work / "data" / "paper_store" / "manifest.json").read_text()


def test_on_a_cluster_runs_as_written(tmp_path):
    # Short: Ray puts Unix sockets under the cluster dir, and those paths are capped at 107 bytes.
    cluster_dir = Path(tempfile.mkdtemp(prefix="rd-readme-", dir="/tmp"))
    shared, mlflow_dir = tmp_path / "shared", tmp_path / "mlflow"
    env = _env(
        SHARED=str(shared), REACTDIFF_CLUSTER_DIR=str(cluster_dir), MLFLOW_DIR=str(mlflow_dir), RAY_AUTH_MODE="disabled"
    )  # a throwaway cluster: no ~/.ray/auth_token written for it
    try:
        done = _run_section("On a cluster", REPO, env)
    finally:
        subprocess.run([str(REPO / "cluster" / "local_cluster.sh"), "stop"], env=env, timeout=120)
        _stop_mlflow_server(REPO, env)
        shutil.rmtree(cluster_dir, ignore_errors=True)

    client = mlflow.MlflowClient(f"sqlite:///{mlflow_dir / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("reactdiff", "champion")
    run = client.get_run(champion.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[STAGE_TAG] == "2"
    assert "FRDist" in run.data.metrics  # the evaluation job scored it
    # Checkpoints went to the shared storage, not into the jobs' temporary working dirs.
    assert (shared / "runs" / "demo-stage1" / "export" / "model.pt").is_file()
    assert (shared / "runs" / "demo-stage2").is_dir()

    # Both nodes worked. prepare: its extraction actors (3 parts, 3 actors of 1 CPU on two 2-CPU
    # nodes) wrote parts on both; the line comes from the job's log, which `ray job submit` follows.
    written = re.findall(r"prepare: parts written on (\d+) node", done.stdout + done.stderr)
    assert written == ["2"], written
    # Stage 1 (STRICT_SPREAD): one worker per node, each reading its own, non-empty rows.
    stage1 = client.get_run(find_run(client, run.info.experiment_id, "demo-stage1"))
    # The server is stopped; its artifacts are files under MLFLOW_DIR (cluster/mlflow_server.sh).
    artifacts = mlflow_dir / "artifacts" / stage1.info.artifact_uri.removeprefix("mlflow-artifacts:/")
    shards = json.loads((artifacts / SHARDS_ARTIFACT).read_text())["ranks"]
    assert len({rank["node_id"] for rank in shards}) == 2, shards
    rows = [rank["train_rows"] for rank in shards]
    assert all(rows) and not set(rows[0]) & set(rows[1]), rows
