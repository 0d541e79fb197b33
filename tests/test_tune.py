"""A real stage-2 sweep: Ray Tune over Ray Train on a local Ray runtime, MLflow on a real server.

Four trials (lr grid [good, useless] × 2) of 3 epochs, two at a time. ASHA's rung at epoch 1 sees
the first two trials before the last two start, and identical configs give identical losses, so
the later trial of the worse config is always stopped after one epoch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import ray
import torch
from mlflow import MlflowClient

from reactdiff.mlflow_server import mlflow_server
from reactdiff.config import load_config
from reactdiff.data.prepare import PrepareOptions, prepare
from reactdiff.data.store import Store, table_to_arrays, to_samples
from reactdiff.models import MMT, LatentStatsAccumulator, save_checkpoint
from reactdiff.tune import EARLY_STOPPED_TAG, release_orphaned_placement_groups, run_sweep

pytestmark = pytest.mark.slow

EPOCHS = 3
SPACE = Path(__file__).parent.parent / "tune_spaces" / "tiny_stage2.yaml"
TINY_CONFIG = Path(__file__).parent.parent / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def ray_runtime():
    from reactdiff.ray_runtime import ray_init

    ray_init()  # cores + 2 logical CPUs: two 1-CPU trials at a time, two CPUs for Ray Data
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory):
    with mlflow_server(tmp_path_factory.mktemp("mlflow")) as uri:
        yield uri


@pytest.fixture(scope="module")
def store(tiny_corpus: Path, tmp_path_factory, ray_runtime) -> Path:
    out = tmp_path_factory.mktemp("tune") / "store"
    prepare(PrepareOptions(corpus=tiny_corpus, out=out, workers=1))
    return out


def save_stage1(path: Path, store_root: Path) -> Path:
    """An untrained tiny MMT with its latent statistics, as Stage1Task.export writes it."""
    torch.manual_seed(0)
    config = load_config(TINY_CONFIG).model.mmt
    store = Store(store_root)
    manifest = store.manifest
    mmt = MMT(manifest.model_streams(), config).eval()
    norm = manifest.normalisation
    mmt.set_threedmm_normalisation(torch.tensor(norm["3dmm_mean"]), torch.tensor(norm["3dmm_std"]))
    accumulator = LatentStatsAccumulator(config.latent_dim)
    with torch.no_grad():
        for part in store.files("train"):
            samples = to_samples(table_to_arrays(pq.read_table(part), manifest), list(manifest.model_streams()))
            feats = {k: torch.from_numpy(np.asarray(v, dtype=np.float32)) for k, v in samples["listener"].items()}
            accumulator.update(mmt.encode(feats))
    stats = accumulator.finalize()
    return save_checkpoint(path, mmt, extra={"latent_low": stats.low, "latent_high": stats.high})


def test_stage2_sweep_with_asha_and_mlflow_parent(store: Path, tracking_uri: str, tmp_path: Path) -> None:
    stage1 = save_stage1(tmp_path / "stage1.pt", store)
    cfg = load_config(TINY_CONFIG, [
        f"data.store={store}", f"train.stage1_model={stage1}", f"train.storage_path={tmp_path / 'runs'}",
        f"tracking.tracking_uri={tracking_uri}", "tracking.experiment=tune-test", "train.name=tiny-sweep",
        "train.num_workers=1", "train.cpus_per_worker=1", "train.batch_size=4", f"train.epochs={EPOCHS}",
        "train.max_failures=0",
    ])
    result = run_sweep(cfg, space=SPACE, stage=2, num_samples=2, search="random", scheduler="asha",
                       metric="val_loss")

    # The ranked table: all four trials, each with its own MLflow run; ASHA stopped at least one.
    assert len(result.table) == 4
    assert len({row.trial for row in result.table}) == 4
    assert sorted(row.params["train.lr"] for row in result.table) == [1e-6, 1e-6, 0.02, 0.02]
    assert all(row.status != "errored" and math.isfinite(row.metric) for row in result.table)
    stopped = [row for row in result.table if row.status == "early-stopped"]
    assert stopped and all(row.epochs < EPOCHS for row in stopped)
    assert any(row.status == "completed" and row.epochs == EPOCHS for row in result.table)
    assert [row.rank for row in result.table] == [1, 2, 3, 4]
    completed = [row.metric for row in result.table if row.status == "completed"]
    assert completed == sorted(completed)
    assert result.best is result.table[0] and result.best.status == "completed"
    assert result.best_config.train.lr == result.best.params["train.lr"]
    assert all(row.trial in result.summary for row in result.table)

    # MLflow: one parent run with the table and best metric; the trials' training runs are its children.
    client = MlflowClient(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_loss"] == pytest.approx(result.best.metric)
    assert parent.data.tags["reactdiff.best_run_id"] == result.best.run_id
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "sweep")}
    assert {"sweep/ranking.md", "sweep/ranking.csv", f"sweep/{SPACE.name}"} <= artifacts
    children = client.search_runs([parent.info.experiment_id],
                                  filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'")
    assert {run.info.run_id for run in children} == {row.run_id for row in result.table}
    by_id = {run.info.run_id: run for run in children}
    for row in result.table:
        run = by_id[row.run_id]
        assert float(run.data.params["train.lr"]) == row.params["train.lr"]
        if row.status == "early-stopped":
            assert run.info.status == "KILLED" and run.data.tags[EARLY_STOPPED_TAG] == "true"
            # its training really stopped (the workers die with the trial), short of the last epoch
            assert len(client.get_metric_history(row.run_id, "val_loss")) < EPOCHS
        else:
            assert run.info.status == "FINISHED"
            assert len(client.get_metric_history(row.run_id, "val_loss")) == EPOCHS

    # Stopped trials' worker placement groups are released: every CPU is free again.
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        release_orphaned_placement_groups()
        time.sleep(2)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]

    # Re-running the same sweep restores it: nothing left to train, the same trials and parent run.
    again = run_sweep(cfg, space=SPACE, stage=2, num_samples=2, search="random", scheduler="asha",
                      metric="val_loss")
    assert again.parent_run_id == result.parent_run_id
    assert [(r.trial, r.status, r.run_id) for r in again.table] == [(r.trial, r.status, r.run_id) for r in result.table]
