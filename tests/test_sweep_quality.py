"""Sweeps that select on reaction quality, with real Ray Tune over Ray Train and a real MLflow server.

- one stage-2 ASHA sweep, run once for the module and read by its tests: four trials (an lr grid
  of a useful and a useless value, each twice) of 3 epochs, two at a time. Every epoch (every ASHA
  rung) reports freshly scored val_FRDist / val_FRCorr / val_FRDiv; ASHA ranks on val_FRCorr.
  Identical configs score identically (same seed), and ASHA's rung at epoch 1 sees the first two
  trials before the last two start, so a trial of the worse config is always stopped. Each trial
  is a child run of the sweep's parent run; re-running the command with `promote=True` trains
  nothing and leaves the winner, evaluated on val with α = 10, as `challenger` (and, with no
  champion yet, `champion`), its version naming the sweep;
- a 2-objective (FRDist against FRDiv) NSGA-II sweep over T and the window size, whose Pareto
  table holds exactly the non-dominated trials;
- two stage-1 runs that differ only in a common scale of both loss weights: the same selection
  metric, a different val_loss.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
import ray
from mlflow import MlflowClient

from reactdiff.config import load_config
from reactdiff.ray_compat import release_orphaned_placement_groups
from reactdiff.registry import CHALLENGER, CHAMPION
from reactdiff.train.trainer import run_training
from reactdiff.tune import EARLY_STOPPED_TAG, SWEEP_RUN_TAG, run_sweep
from reactdiff.tune.objectives import Objective, dominates

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
TINY_CONFIG = ROOT / "configs" / "tiny.yaml"
HEADLINE = ("val_FRDist", "val_FRCorr", "val_FRDiv")
EPOCHS = 3
# No `sweep:` entry: the objective is the stage-2 default, val_FRCorr.
LR_GRID = "train.lr: {grid: [0.02, 1.0e-6]}\nmodel.lrs.mode: mean\nmodel.lrs.reference_clips: 2\n"


def _config(tiny_store: Path, stage1: Path, tracking_uri: str, tmp_path: Path, name: str, *overrides: str):
    return load_config(
        TINY_CONFIG,
        [
            f"data.store={tiny_store}",
            f"train.stage1_model={stage1}",
            f"train.storage_path={tmp_path / 'runs'}",
            f"tracking.tracking_uri={tracking_uri}",
            "tracking.experiment=sweep-quality",
            "tracking.registered_model=sweep-quality",
            f"train.name={name}",
            "train.num_workers=1",
            "train.batch_size=4",
            "train.max_failures=0",
            *overrides,
        ],
    )


def _steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


@pytest.fixture(scope="module")
def sweep(tiny_store, untrained_stage1, tracking_uri, local_ray, tmp_path_factory):
    """The module's ASHA sweep: (its config, its space file, its result, the folder it ran from)."""
    folder = tmp_path_factory.mktemp("asha")
    space = folder / "lr_grid.yaml"
    space.write_text(LR_GRID)
    with pytest.MonkeyPatch.context() as patch:
        # Paths relative to the caller's folder: trials run in Tune's trial folders, and still find them.
        patch.chdir(folder)
        cfg = _config(
            Path(os.path.relpath(tiny_store)),
            Path(os.path.relpath(untrained_stage1)),
            tracking_uri,
            Path("."),
            "quality",
            f"train.epochs={EPOCHS}",
            "train.cpus_per_worker=1",
        )
        return cfg, space, run_sweep(cfg, space=space, stage=2, num_samples=2), folder


def test_asha_ranks_by_frcorr_and_stops_a_trial_of_the_worse_config(sweep):
    _, _, result, _ = sweep
    assert result.objectives == [Objective("val_FRCorr", "max")]
    table = result.table
    assert len(table) == 4 and len({row.trial for row in table}) == 4
    assert sorted(row.params["train.lr"] for row in table) == [1e-6, 1e-6, 0.02, 0.02]
    for row in table:
        assert row.status != "errored", row
        assert all(math.isfinite(row.metrics[key]) for key in (*HEADLINE, "val_loss")), row
    stopped = [row for row in table if row.status == "early-stopped"]
    assert stopped and all(row.epochs < EPOCHS for row in stopped)
    assert any(row.status == "completed" and row.epochs == EPOCHS for row in table)
    assert [row.rank for row in table] == [1, 2, 3, 4]
    completed = [row.metrics["val_FRCorr"] for row in table if row.status == "completed"]
    assert completed == sorted(completed, reverse=True)
    assert result.best is table[0] and result.best.status == "completed"
    assert result.best_config.train.lr == result.best.params["train.lr"]
    assert all(row.trial in result.summary for row in table)
    for key in HEADLINE:
        assert key in result.summary


def test_every_epoch_is_scored_and_asha_compared_the_scores(sweep, tracking_uri):
    _, _, result, _ = sweep
    client = MlflowClient(tracking_uri)
    by_epoch: dict[int, dict[str, float]] = {}
    for row in result.table:
        # Scored at every epoch Tune saw, so every ASHA rung compared fresh numbers (a stopped
        # trial's workers may finish one more epoch before they are ended).
        for key in HEADLINE:
            assert _steps(client, row.run_id, key)[: row.epochs] == list(range(row.epochs)), (row.trial, key)
        for m in client.get_metric_history(row.run_id, "val_FRCorr"):
            by_epoch.setdefault(m.step, {})[row.trial] = m.value
    # ASHA compared val_FRCorr: a stopped trial was not leading at the rung it stopped at.
    for row in result.table:
        if row.status == "early-stopped":
            values = by_epoch[row.epochs - 1]
            assert values[row.trial] < max(values.values()), (row.trial, values)


def test_the_trials_are_child_runs_of_the_sweeps_parent_run(sweep, tracking_uri):
    _, space, result, _ = sweep
    client = MlflowClient(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["sweep.objectives"] == "val_FRCorr:max"
    assert parent.data.params["sweep.scheduler"] == "asha"
    assert parent.data.params["train.eval_alpha"] == "3"  # the sweep default
    assert parent.data.metrics["best_val_FRCorr"] == pytest.approx(result.best.metrics["val_FRCorr"])
    assert parent.data.tags["reactdiff.best_run_id"] == result.best.run_id
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "sweep")}
    # The ranking, the space, and the Pareto front of FRDist against FRDiv.
    assert {"sweep/ranking.md", "sweep/ranking.csv", f"sweep/{space.name}"} <= artifacts
    assert {"sweep/pareto.md", "sweep/pareto.png"} <= artifacts
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
            # than the table; test_stopped_trials_free_their_cpus shows that the workers did die.
            history = client.get_metric_history(row.run_id, "val_loss")
            assert row.epochs <= len(history) <= EPOCHS
            assert sorted(m.step for m in history) == list(range(len(history)))
        else:
            assert run.info.status == "FINISHED"
            assert len(client.get_metric_history(row.run_id, "val_loss")) == EPOCHS


def test_stopped_trials_free_their_cpus(sweep):
    """Stopped trials' worker placement groups are released: every CPU is free again."""
    deadline = time.monotonic() + 60
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        release_orphaned_placement_groups()
        time.sleep(2)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]


def test_rerunning_with_promote_trains_nothing_and_promotes_the_winner(sweep, tracking_uri, monkeypatch):
    """The same command with --promote: the sweep is restored (same parent run, trials and runs),
    and the winner is evaluated on val with α = 10 and promoted through the registry's rules."""
    cfg, space, result, folder = sweep
    monkeypatch.chdir(folder)
    again = run_sweep(cfg, space=space, stage=2, num_samples=2, promote=True)
    assert again.parent_run_id == result.parent_run_id
    assert [(r.trial, r.status, r.run_id) for r in again.table] == [(r.trial, r.status, r.run_id) for r in result.table]
    promotion = again.promotion
    assert promotion.run_id == result.best.run_id and promotion.split == "val" and promotion.metric == "FRCorr"
    client = MlflowClient(tracking_uri)
    registered = client.get_registered_model("sweep-quality")
    assert registered.aliases[CHALLENGER] == promotion.version
    assert registered.aliases[CHAMPION] == promotion.version  # no champion before
    version = client.get_model_version("sweep-quality", promotion.version)
    assert version.run_id == result.best.run_id
    assert version.tags[SWEEP_RUN_TAG] == result.parent_run_id
    run = client.get_run(result.best.run_id)
    assert run.data.tags["reactdiff.eval_split"] == "val" and math.isfinite(run.data.metrics["FRCorr"])


def test_two_objective_sweep_reports_its_pareto_front(tiny_store, untrained_stage1, tracking_uri, local_ray, tmp_path):
    space = tmp_path / "t_and_ws.yaml"
    space.write_text("model.diffusion.steps: {choice: [2, 4, 8]}\nmodel.diffusion.window_size: {choice: [5, 10, 25]}\n")
    # One epoch: no ASHA here, and every trial is scored at its last epoch.
    cfg = _config(tiny_store, untrained_stage1, tracking_uri, tmp_path, "pareto", "train.epochs=1")
    result = run_sweep(cfg, space=space, stage=2, num_samples=4, objectives="val_FRDist:min,val_FRDiv:max")
    objectives = [Objective("val_FRDist", "min"), Objective("val_FRDiv", "max")]
    assert result.best is None and result.pareto_objectives == objectives
    completed = [row for row in result.table if row.status == "completed"]
    assert len(completed) == 4  # no ASHA in a Pareto search
    # Trials that differ in T and the window size (seeded draws), compared on what they generate.
    for key in ("model.diffusion.steps", "model.diffusion.window_size"):
        assert len({row.params[key] for row in completed}) >= 2, key
    assert result.front and all(row.on_front for row in result.front)
    for row in completed:
        beaten = any(dominates(other.metrics, row.metrics, objectives) for other in completed)
        assert row.on_front == (not beaten), row
    front_table = result.summary.split("Pareto front over", 1)[1]
    for row in completed:
        assert (row.trial in front_table) == row.on_front
    client = MlflowClient(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["sweep.search"] == "optuna" and parent.data.params["sweep.scheduler"] == "none"
    assert parent.data.tags["reactdiff.pareto_front"] == ",".join(row.trial for row in result.front)
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "sweep")}
    assert {"sweep/pareto.md", "sweep/pareto.csv", "sweep/pareto.png"} <= artifacts


def test_stage1_selection_metric_ignores_a_common_scale_of_the_loss_weights(tiny_store, tracking_uri, tmp_path):
    """Adam's steps do not change when the loss is multiplied by a constant (up to its eps and
    gradient clipping), so the reconstructions and their weight-free metrics stay the same."""
    results = {}
    for scale in (1.0, 4.0):
        cfg = load_config(
            TINY_CONFIG,
            [
                f"data.store={tiny_store}",
                f"train.storage_path={tmp_path / 'runs'}",
                f"tracking.tracking_uri={tracking_uri}",
                "tracking.experiment=sweep-quality",
                f"train.name=weights-x{scale:g}",
                "train.stage=1",
                "train.num_workers=1",
                "train.epochs=2",
                f"model.mmt.w_3dmm={10 * scale}",
                f"model.mmt.w_emotion={10 * scale}",
            ],
        )
        results[scale] = run_training(cfg).metrics
    small, large = results[1.0], results[4.0]
    assert large["val_loss"] / small["val_loss"] == pytest.approx(4.0, rel=0.1)  # the loss scales
    assert large["val_recon_FRDist"] == pytest.approx(small["val_recon_FRDist"], rel=0.02)
    assert large["val_recon_3dmm_mse"] == pytest.approx(small["val_recon_3dmm_mse"], rel=0.05)
    assert large["val_recon_emotion_l1"] == pytest.approx(small["val_recon_emotion_l1"], rel=0.05)
