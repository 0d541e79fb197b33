"""What a sweep optimises: objectives checked up front, the Pareto front, and the weight-free
reconstruction metrics that stage-1 sweeps rank by (fast: no Ray, no MLflow)."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from reactdiff.config import ConfigError, load_config
from reactdiff.evaluate.validation import ReconstructionTotals, eval_indices
from reactdiff.train.loop import is_eval_epoch
from reactdiff.tune import Objective, known_metrics, load_space, pareto_front, plan_sweep
from reactdiff.tune.objectives import dominates, evaluation_metric
from reactdiff.tune.sweep import TrialRow, _picked

ROOT = Path(__file__).parent.parent
TINY = load_config(ROOT / "configs" / "tiny.yaml")


def test_defaults_rank_by_what_each_stage_produces() -> None:
    assert plan_sweep(1).objectives == [Objective("val_recon_FRDist", "min")]
    # Stage 2: FRCorr, which a flat output that ignores the speaker cannot win (FRDist can).
    assert plan_sweep(2).objectives == [Objective("val_FRCorr", "max")]
    assert plan_sweep(2).scheduler == "asha"
    # Any reported metric, with its own direction when no mode is given.
    assert plan_sweep(2, metric="val_FRDist").objectives == [Objective("val_FRDist", "min")]
    assert plan_sweep(1, metric="val_recon_au_f1", mode="max").objectives == [Objective("val_recon_au_f1", "max")]
    several = plan_sweep(2, objectives="val_FRDist:min,val_FRDiv:max")
    assert several.objectives == [Objective("val_FRDist", "min"), Objective("val_FRDiv", "max")]
    assert (several.search, several.scheduler) == ("optuna", "none")  # NSGA-II, no ASHA
    assert set(known_metrics(2)) >= {"val_loss", "val_FRDist", "val_LRS_FRDist", "val_FRSyn", "val_FRRea"}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"metric": "val_FRDistance"}, "unknown metric 'val_FRDistance'"),
        ({"metric": "val_recon_FRDist"}, "unknown metric"),  # a stage-1 metric in a stage-2 sweep
        ({"metric": "val_FRCorr", "mode": "min"}, "contradicts the metric (higher is better)"),
        ({"objectives": "val_FRDist:min,val_FRDiv:min"}, "'val_FRDiv:min' contradicts"),
        ({"objectives": "val_FRDist:max"}, "'val_FRDist:max' contradicts"),
        ({"objectives": "val_FRDist,val_FRDiv", "scheduler": "asha"}, "ASHA stops trials on a single metric"),
        ({"objectives": "val_FRDist,val_FRDist"}, "appears twice"),
        ({"metric": "val_FRDist", "objectives": "val_FRDiv"}, "either --metric/--mode or --objectives"),
        ({"pick": "t1"}, "--pick names a Pareto-front member"),
        ({"promote": True, "metric": "val_loss"}, "'val_loss' is not one"),
        ({"promote": True, "objectives": "val_FRDist,val_FRDiv"}, "--promote --pick <trial>"),
    ],
)
def test_refusals(kwargs, message) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_sweep(2, **kwargs)


def test_stage1_sweeps_do_not_promote() -> None:
    with pytest.raises(ConfigError, match="registers stage-2"):
        plan_sweep(1, promote=True)


def test_a_space_file_states_its_metric(tmp_path: Path) -> None:
    for name, stage, metric in (
        ("stage1.yaml", 1, "val_recon_FRDist"),
        ("stage2.yaml", 2, "val_FRCorr"),
        ("demo_stage2.yaml", 2, "val_FRCorr"),
    ):
        space = load_space(ROOT / "tune_spaces" / name, TINY, stage=stage)
        assert plan_sweep(stage, space.objective).objectives[0].metric == metric
    # The command line wins over the file; a wrong entry in the file is refused like a flag.
    space = load_space(ROOT / "tune_spaces" / "stage2.yaml", TINY, stage=2)
    assert plan_sweep(2, space.objective, metric="val_FRDiv").objectives == [Objective("val_FRDiv", "max")]
    path = tmp_path / "space.yaml"
    path.write_text("sweep: {metric: val_FRCorr, mode: min}\ntrain.lr: {choice: [0.1, 0.01]}\n")
    with pytest.raises(ConfigError, match="space file's sweep: entry: 'val_FRCorr:min' contradicts"):
        plan_sweep(2, load_space(path, TINY, stage=2).objective)
    path.write_text("sweep: {metric: val_FRDist, goal: min}\ntrain.lr: {choice: [0.1, 0.01]}\n")
    with pytest.raises(ConfigError, match="space.yaml: sweep: expected a mapping"):
        load_space(path, TINY, stage=2)


def test_the_command_refuses_before_ray_or_mlflow_start(tmp_path: Path) -> None:
    """No store, no server at the tracking URI: the objective is what the error is about."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "reactdiff.cli",
            "tune",
            "--space",
            str(ROOT / "tune_spaces" / "stage2.yaml"),
            "--stage",
            "2",
            "--objectives",
            "val_FRDist:min,val_FRCorr:min",
            f"data.store={tmp_path / 'none'}",
            "tracking.tracking_uri=http://127.0.0.1:9",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 2, out.stderr
    assert "'val_FRCorr:min' contradicts the metric" in out.stderr
    assert "feature store" not in out.stderr and not (tmp_path / "runs").exists()


def test_pareto_front_keeps_exactly_the_non_dominated() -> None:
    objectives = [Objective("val_FRDist", "min"), Objective("val_FRDiv", "max")]
    points = [(100, 0.01), (90, 0.01), (95, 0.05), (80, 0.001), (95, 0.04), (math.nan, 0.9), (90, 0.01)]
    values = [{"val_FRDist": d, "val_FRDiv": v} for d, v in points]
    front = pareto_front(values, objectives)
    # (100, .01) loses to (90, .01); (95, .04) to (95, .05); NaN never reported; the two equal
    # (90, .01) do not dominate each other.
    assert front == [1, 2, 3, 6]
    for i in front:
        assert not any(dominates(values[j], values[i], objectives) for j in range(len(values)))
    for i in set(range(len(values))) - set(front) - {5}:
        assert any(dominates(values[j], values[i], objectives) for j in front)


def test_pick_must_be_a_front_member() -> None:
    rows = [
        TrialRow(1, "s-a", "completed", {}, 2, {}, "r1", on_front=True),
        TrialRow(2, "s-b", "completed", {}, 2, {}, "r2", on_front=False),
    ]
    assert _picked(rows, "a", "s") is rows[0] and _picked(rows, "s-a", "s") is rows[0]
    with pytest.raises(ConfigError, match="s-b is not on the Pareto front"):
        _picked(rows, "b", "s")
    with pytest.raises(ConfigError, match="no trial of sweep s"):
        _picked(rows, "c", "s")


def test_evaluation_names_for_promotion() -> None:
    assert evaluation_metric("val_FRDist") == "FRDist"
    assert evaluation_metric("val_LRS_FRCorr") == "ReactDiff-LRS.FRCorr"
    assert evaluation_metric("val_loss") is None and evaluation_metric("val_recon_FRDist") is None


def test_eval_epochs_and_subsets() -> None:
    assert [e for e in range(10) if is_eval_epoch(e, 4, 10)] == [3, 7, 9]
    assert [e for e in range(3) if is_eval_epoch(e, 1, 3)] == [0, 1, 2]
    subset = eval_indices(20, 5, seed=0)
    assert len(set(subset)) == 5 and list(subset) == sorted(subset)
    assert list(eval_indices(20, 5, seed=0)) == list(subset)  # fixed across epochs and runs
    assert list(eval_indices(4, 0, seed=0)) == [0, 1, 2, 3] and list(eval_indices(4, 9, seed=0)) == [0, 1, 2, 3]


def _emotion(rng: np.random.Generator, n: int, frames: int) -> np.ndarray:
    au = (rng.random((n, frames, 15)) < 0.3).astype(np.float32)
    va = np.cumsum(rng.normal(0, 0.05, (n, frames, 2)), axis=1).clip(-1, 1)
    expr = rng.dirichlet(np.ones(8), (n, frames))
    return np.concatenate([au, va, expr], axis=-1).astype(np.float32)


def test_reconstruction_metrics() -> None:
    rng = np.random.default_rng(0)
    emotion, threedmm = _emotion(rng, 4, 60), rng.normal(size=(4, 60, 58)).astype(np.float32)
    perfect = ReconstructionTotals()
    perfect.add(threedmm, emotion, threedmm, emotion)
    scores = perfect.metrics()
    assert scores["val_recon_3dmm_mse"] == 0 and scores["val_recon_emotion_l1"] == 0
    assert scores["val_recon_au_f1"] == 1 and scores["val_recon_FRDist"] == 0
    assert scores["val_recon_va_ccc"] == pytest.approx(1.0, abs=1e-6)

    noisy_emotion = emotion + rng.normal(0, 0.3, emotion.shape).astype(np.float32)  # flips some AUs
    noisy_3dmm = threedmm + 0.5
    whole = ReconstructionTotals()
    whole.add(noisy_3dmm, noisy_emotion, threedmm, emotion)
    scores = whole.metrics()
    assert scores["val_recon_3dmm_mse"] == pytest.approx(0.25, rel=1e-6)
    assert 0 < scores["val_recon_va_ccc"] < 1 and 0 < scores["val_recon_au_f1"] < 1
    assert scores["val_recon_FRDist"] > 0
    # Two shards summed (as the all-reduce does) give the metrics of the whole val split.
    halves = [ReconstructionTotals(), ReconstructionTotals()]
    halves[0].add(noisy_3dmm[:1], noisy_emotion[:1], threedmm[:1], emotion[:1])
    halves[1].add(noisy_3dmm[1:], noisy_emotion[1:], threedmm[1:], emotion[1:])
    summed = ReconstructionTotals.from_list(
        [a + b for a, b in zip(halves[0].as_list(), halves[1].as_list(), strict=True)]
    )
    assert summed.metrics() == pytest.approx(scores, rel=1e-9)
    assert all(math.isnan(v) for v in ReconstructionTotals().metrics().values())
