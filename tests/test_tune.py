"""A real stage-2 sweep: Ray Tune over Ray Train on a local Ray runtime, MLflow on a real server.

Four trials (lr grid [good, useless] × 2) of 3 epochs, two at a time. ASHA's rung at epoch 1 sees
the first two trials before the last two start, and identical configs give identical losses, so
a trial of the worse config is always stopped before its last epoch.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import pytest
import ray
from mlflow import MlflowClient

from reactdiff.config import load_config
from reactdiff.ray_compat import release_orphaned_placement_groups
from reactdiff.tune import EARLY_STOPPED_TAG, run_sweep

pytestmark = pytest.mark.slow

EPOCHS = 3
SPACE = Path(__file__).parent.parent / "tune_spaces" / "tiny_stage2.yaml"
TINY_CONFIG = Path(__file__).parent.parent / "configs" / "tiny.yaml"


def test_stage2_sweep_with_asha_and_mlflow_parent(
    tiny_store: Path, untrained_stage1: Path, tracking_uri: str, local_ray, tmp_path: Path
) -> None:
    cfg = load_config(
        TINY_CONFIG,
        [
            f"data.store={tiny_store}",
            f"train.stage1_model={untrained_stage1}",
            f"train.storage_path={tmp_path / 'runs'}",
            f"tracking.tracking_uri={tracking_uri}",
            "tracking.experiment=tune-test",
            "train.name=tiny-sweep",
            "train.num_workers=1",
            "train.cpus_per_worker=1",
            "train.batch_size=4",
            f"train.epochs={EPOCHS}",
            "train.max_failures=0",
        ],
    )
    # val_loss on purpose: this test is about ASHA's mechanics (an lr of 1e-6 surely loses on it).
    result = run_sweep(cfg, space=SPACE, stage=2, num_samples=2, search="random", scheduler="asha", metric="val_loss")

    # The ranked table: all four trials, each with its own MLflow run; ASHA stopped at least one.
    assert len(result.table) == 4
    assert len({row.trial for row in result.table}) == 4
    assert sorted(row.params["train.lr"] for row in result.table) == [1e-6, 1e-6, 0.02, 0.02]
    assert all(row.status != "errored" and math.isfinite(row.metrics["val_loss"]) for row in result.table)
    stopped = [row for row in result.table if row.status == "early-stopped"]
    assert stopped and all(row.epochs < EPOCHS for row in stopped)
    assert any(row.status == "completed" and row.epochs == EPOCHS for row in result.table)
    assert [row.rank for row in result.table] == [1, 2, 3, 4]
    completed = [row.metrics["val_loss"] for row in result.table if row.status == "completed"]
    assert completed == sorted(completed)
    assert result.best is result.table[0] and result.best.status == "completed"
    assert result.best_config.train.lr == result.best.params["train.lr"]
    assert all(row.trial in result.summary for row in result.table)

    # MLflow: one parent run with the table and best metric; the trials' training runs are its children.
    client = MlflowClient(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["best_val_loss"] == pytest.approx(result.best.metrics["val_loss"])
    assert parent.data.tags["reactdiff.best_run_id"] == result.best.run_id
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "sweep")}
    assert {"sweep/ranking.md", "sweep/ranking.csv", f"sweep/{SPACE.name}"} <= artifacts
    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{result.parent_run_id}'"
    )
    assert {run.info.run_id for run in children} == {row.run_id for row in result.table}
    by_id = {run.info.run_id: run for run in children}
    for row in result.table:
        run = by_id[row.run_id]
        assert float(run.data.params["train.lr"]) == row.params["train.lr"]
        if row.status == "early-stopped":
            assert run.info.status == "KILLED" and run.data.tags[EARLY_STOPPED_TAG] == "true"
            # MLflow holds every epoch Tune saw. Workers run on while Tune's stop travels to them
            # (seconds: tiny epochs here can finish meanwhile), so the history may hold more epochs
            # than the table; the free CPUs below show that the workers did die.
            history = client.get_metric_history(row.run_id, "val_loss")
            assert row.epochs <= len(history) <= EPOCHS
            assert sorted(m.step for m in history) == list(range(len(history)))
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
    again = run_sweep(cfg, space=SPACE, stage=2, num_samples=2, search="random", scheduler="asha", metric="val_loss")
    assert again.parent_run_id == result.parent_run_id
    assert [(r.trial, r.status, r.run_id) for r in again.table] == [(r.trial, r.status, r.run_id) for r in result.table]
