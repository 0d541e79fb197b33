"""Sweeps that select on reaction quality, with real Ray Tune over Ray Train and a real MLflow server.

- a 3-trial stage-2 sweep whose trials differ in T and window size: every epoch (every ASHA rung)
  reports freshly scored val_FRDist / val_FRCorr / val_FRDiv, ASHA ranks on val_FRCorr, and each
  child run holds the series; the same command with `promote=True` evaluates the winner on val
  with α = 10 and leaves it as `challenger` (and, with no champion yet, `champion`), its version
  naming the sweep;
- a 2-objective (FRDist against FRDiv) NSGA-II sweep whose Pareto table holds exactly the
  non-dominated trials;
- two stage-1 runs that differ only in a common scale of both loss weights: the same selection
  metric, a different val_loss.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from mlflow import MlflowClient

from reactdiff.config import load_config
from reactdiff.registry import CHALLENGER, CHAMPION
from reactdiff.train.trainer import run_training
from reactdiff.tune import SWEEP_RUN_TAG, run_sweep
from reactdiff.tune.objectives import Objective, dominates

pytestmark = pytest.mark.slow

ROOT = Path(__file__).parent.parent
TINY_CONFIG = ROOT / "configs" / "tiny.yaml"
HEADLINE = ("val_FRDist", "val_FRCorr", "val_FRDiv")


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


def test_stage2_sweep_ranks_by_frcorr_and_promotes_its_winner(
    tiny_store, untrained_stage1, tracking_uri, local_ray, tmp_path, monkeypatch
):
    space = tmp_path / "t_and_ws.yaml"
    space.write_text("model.diffusion.steps: {grid: [2, 4, 8]}\nmodel.diffusion.window_size: {choice: [5, 10, 25]}\n")
    # Paths relative to the caller's folder: trials run in Tune's trial folders, and still find them.
    monkeypatch.chdir(tmp_path)
    cfg = _config(
        Path(os.path.relpath(tiny_store)),
        Path(os.path.relpath(untrained_stage1)),
        tracking_uri,
        Path("."),
        "quality",
        "train.epochs=3",
    )
    result = run_sweep(cfg, space=space, stage=2, num_samples=1)  # objective: the default, val_FRCorr

    assert result.objectives == [Objective("val_FRCorr", "max")]
    table = result.table
    assert len(table) == 3
    assert sorted(row.params["model.diffusion.steps"] for row in table) == [2, 4, 8]
    assert len({row.params["model.diffusion.window_size"] for row in table}) >= 2
    client = MlflowClient(tracking_uri)
    parent = client.get_run(result.parent_run_id)
    assert parent.data.params["sweep.objectives"] == "val_FRCorr:max"
    assert parent.data.params["sweep.scheduler"] == "asha"
    assert parent.data.params["train.eval_alpha"] == "3"  # the sweep default
    by_epoch: dict[int, dict[str, float]] = {}
    for row in table:
        assert all(math.isfinite(row.metrics[key]) for key in HEADLINE), row
        # Scored at every epoch Tune saw, so every ASHA rung (1, 2) compared fresh numbers (a
        # stopped trial's workers may finish one more epoch before they are ended).
        for key in HEADLINE:
            assert _steps(client, row.run_id, key)[: row.epochs] == list(range(row.epochs)), (row.trial, key)
        for m in client.get_metric_history(row.run_id, "val_FRCorr"):
            by_epoch.setdefault(m.step, {})[row.trial] = m.value
    # ASHA compared val_FRCorr: a stopped trial was not leading at the rung it stopped at.
    for row in table:
        if row.status == "early-stopped":
            values = by_epoch[row.epochs - 1]
            assert values[row.trial] < max(values.values()), (row.trial, values)
    completed = [row.metrics["val_FRCorr"] for row in table if row.status == "completed"]
    assert completed == sorted(completed, reverse=True) and result.best is table[0]
    assert parent.data.metrics["best_val_FRCorr"] == pytest.approx(result.best.metrics["val_FRCorr"])
    for key in HEADLINE:
        assert key in result.summary
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "sweep")}
    assert {"sweep/ranking.md", "sweep/pareto.md", "sweep/pareto.png"} <= artifacts  # FRDist vs FRDiv

    # The same command with --promote: nothing left to train; the winner is evaluated on val with
    # α = 10 and promoted through the registry's rules.
    again = run_sweep(cfg, space=space, stage=2, num_samples=1, promote=True)
    assert [(r.trial, r.status) for r in again.table] == [(r.trial, r.status) for r in table]
    promotion = again.promotion
    assert promotion.run_id == result.best.run_id and promotion.split == "val" and promotion.metric == "FRCorr"
    registered = client.get_registered_model("sweep-quality")
    assert registered.aliases[CHALLENGER] == promotion.version
    assert registered.aliases[CHAMPION] == promotion.version  # no champion before
    version = client.get_model_version("sweep-quality", promotion.version)
    assert version.run_id == result.best.run_id
    assert version.tags[SWEEP_RUN_TAG] == result.parent_run_id
    run = client.get_run(result.best.run_id)
    assert run.data.tags["reactdiff.eval_split"] == "val" and math.isfinite(run.data.metrics["FRCorr"])


def test_two_objective_sweep_reports_its_pareto_front(tiny_store, untrained_stage1, tracking_uri, local_ray, tmp_path):
    space = tmp_path / "two.yaml"
    space.write_text("model.diffusion.steps: {choice: [2, 4, 8]}\ntrain.lr: {loguniform: [1.0e-4, 3.0e-2]}\n")
    cfg = _config(tiny_store, untrained_stage1, tracking_uri, tmp_path, "pareto", "train.epochs=2")
    result = run_sweep(cfg, space=space, stage=2, num_samples=4, objectives="val_FRDist:min,val_FRDiv:max")

    objectives = [Objective("val_FRDist", "min"), Objective("val_FRDiv", "max")]
    assert result.best is None and result.pareto_objectives == objectives
    completed = [row for row in result.table if row.status == "completed"]
    assert len(completed) == 4  # no ASHA in a Pareto search
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
                "train.epochs=4",
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
