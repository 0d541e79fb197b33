"""`ray job submit` end to end: a real `ray start` cluster and a real MLflow server, on loopback.

The cluster is started by cluster/local_cluster.sh (head only here, to fit a 2-core machine) and
stopped by the PIDs it recorded. The jobs/ entrypoints run as submitted jobs: prepare builds a
store from `tiny_corpus`, stage 1 trains and logs its model, stage 2 trains on that model
(`runs:/<id>/model`). MLflow must then hold both runs and a loadable stage-2 pyfunc model.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pytest

from reactdiff.tracking import RUN_NAME_TAG

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
LOCAL_CLUSTER = REPO / "cluster" / "local_cluster.sh"
EXPERIMENT = "test-jobs-e2e"
JOB_TIMEOUT_S = 300


@dataclass
class Cluster:
    dashboard_url: str
    env: dict[str, str]  # what `ray job submit` runs with


@pytest.fixture(scope="module")
def cluster():
    # Short path: Ray puts Unix sockets under its temp dir, and those paths are capped at 107 bytes.
    state = Path(tempfile.mkdtemp(prefix="rd-e2e-", dir="/tmp"))
    env = {
        **os.environ,
        # A job's `python` is the one on the PATH of the process that started the node.
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "REACTDIFF_CLUSTER_DIR": str(state),
        "WORKER_NODES": "0",
        # Logical CPUs: 1 train worker + Ray Data read tasks must not starve on 2 cores.
        "HEAD_CPUS": "4",
        # A throwaway loopback cluster: no token, and no ~/.ray/auth_token written for it.
        "RAY_AUTH_MODE": "disabled",
    }
    try:
        subprocess.run([str(LOCAL_CLUSTER), "start"], env=env, check=True, timeout=300)
        yield Cluster((state / "dashboard_url").read_text().strip(), env)
    finally:
        subprocess.run([str(LOCAL_CLUSTER), "stop"], env=env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def submit(cluster: Cluster, module: str, *args: str) -> str:
    """Run `python -m <module> <args>` as a Ray job; assert it SUCCEEDED; return its log."""
    from ray.job_submission import JobStatus, JobSubmissionClient

    command = [
        str(VENV_BIN / "ray"), "job", "submit", "--address", cluster.dashboard_url,
        "--working-dir", str(REPO), "--runtime-env", str(REPO / "jobs" / "runtime_env.yaml"),
        "--", "python", "-m", module, *args,
    ]
    done = subprocess.run(command, env=cluster.env, capture_output=True, text=True, timeout=JOB_TIMEOUT_S)
    found = re.search(r"Job '(raysubmit_\w+)' submitted", done.stdout + done.stderr)
    assert found, f"`ray job submit` did not submit:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    client = JobSubmissionClient(cluster.dashboard_url)
    status = client.get_job_status(found.group(1))
    logs = client.get_job_logs(found.group(1))
    assert status == JobStatus.SUCCEEDED, f"{module} ended {status}; its log:\n{logs[-5000:]}"
    return logs


@pytest.mark.slow
@pytest.mark.usefixtures("no_inprocess_ray")
def test_jobs_prepare_train_stage1_stage2(cluster, tiny_corpus, tracking_uri, tmp_path):
    store, runs = tmp_path / "store", tmp_path / "runs"
    submit(cluster, "jobs.prepare", "--corpus", str(tiny_corpus), "--out", str(store),
           "--workers", "1", "--rows-per-part", "2")
    assert (store / "manifest.json").is_file()

    common = ["--config", "configs/tiny.yaml", f"data.store={store}", f"train.storage_path={runs}",
              f"tracking.tracking_uri={tracking_uri}", f"tracking.experiment={EXPERIMENT}",
              "train.name=e2e", "train.num_workers=1", "train.epochs=1"]
    submit(cluster, "jobs.train_stage1", *common)

    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(EXPERIMENT)

    def finished_run(run_name: str):
        found = client.search_runs([experiment.experiment_id], f"tags.`{RUN_NAME_TAG}` = '{run_name}'")
        assert len(found) == 1, f"expected one MLflow run named {run_name}, found {len(found)}"
        assert found[0].info.status == "FINISHED"
        return found[0]

    stage1 = finished_run("e2e-stage1")
    submit(cluster, "jobs.train_stage2", *common, f"train.stage1_model=runs:/{stage1.info.run_id}/model")
    stage2 = finished_run("e2e-stage2")
    assert stage2.data.tags["reactdiff.stage1_model"] == f"runs:/{stage1.info.run_id}/model"
    assert "train_loss" in stage2.data.metrics

    mlflow.set_tracking_uri(tracking_uri)
    for run in (stage1, stage2):
        model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
        assert type(model.unwrap_python_model()).__name__ == "ReactDiffPyfunc"
    # Checkpoints went to the shared storage path, not into the job's temporary working dir.
    assert (runs / "e2e-stage1").is_dir() and (runs / "e2e-stage2").is_dir()


def test_submitted_job_refuses_relative_data_paths():
    """Inside a submitted job (the supervisor's variable set), relative stores are refused."""
    # jobs.SUBMITTED_JOB_ENV (the repo root, where `jobs` lives, is not on the test's sys.path).
    env = {**os.environ, "RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}
    done = subprocess.run([sys.executable, "-m", "jobs.train_stage1", "--config", "configs/tiny.yaml",
                           "tracking.tracking_uri=http://127.0.0.1:5000"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "data.store=data/store" in done.stderr and "train.storage_path=runs" in done.stderr
    assert "http://127.0.0.1:5000" not in done.stderr  # a server URL is fine

