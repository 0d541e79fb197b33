"""The main command's pipeline end to end at reduced sizes (`reactdiff demo --size small`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import numpy as np
import pytest

from reactdiff.config import load_config
from reactdiff.data import corpus
from reactdiff.data.layout import EMOTION_DIM
from reactdiff.demo import RECIPES

# A fresh process: `reactdiff demo` as a user runs it, starting its own Ray runtime and MLflow server.
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("no_inprocess_ray")]


def test_demo_small_runs_every_stage(tmp_path):
    workdir = tmp_path / "demo"
    env = {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
    proc = subprocess.run(
        [sys.executable, "-m", "reactdiff.cli", "demo", "--size", "small", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        env=env,
        timeout=1500,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    out, progress = proc.stdout, proc.stderr
    for step, name in enumerate(
        ("synth", "prepare", "train stage 1", "train stage 2", "sweep", "evaluate", "promote", "generate"), start=1
    ):
        assert f"[{step}/8] {name}" in progress, f"step '{name}' missing from the demo's progress lines"
    # A quiet terminal: stage and epoch lines (with an ETA), results; Ray's, Tune's and MLflow's
    # own output went to the log file named on the first line.
    stage1_epochs = load_config(RECIPES["small"], stage=1).train.epochs
    assert f"stage 1 epoch {stage1_epochs}/{stage1_epochs}" in progress and "ETA" in progress
    for noise in ("RayTrainWorker", "PlacementGroupCleaner", "Trial status", "View run"):
        assert noise not in out + progress, f"'{noise}' reached the terminal"
    log = workdir / "logs"
    (log_file,) = log.glob("demo-*.log")
    assert str(log_file) in progress.splitlines()[0]
    assert "RayTrainWorker" in log_file.read_text(errors="replace")  # the workers' output is kept there
    for baseline in ("B_Random", "B_Mime", "B_MeanSeq", "B_MeanFr", "ReactDiff"):
        assert baseline in out
    assert "mlflow ui --backend-store-uri sqlite:///" in out and "--host 127.0.0.1" in out
    # The sweep ranked its trials by the FRCorr of generated val reactions and shows FRDist and FRDiv.
    sweep_table = out.split("the sweep's trials", 1)[1]
    assert "ranked by val_FRCorr (higher is better)" in sweep_table
    header = next(line for line in sweep_table.splitlines() if line.startswith("| rank |"))
    for column in ("val_FRDist", "val_FRCorr", "val_FRDiv"):
        assert f" {column} |" in header, column

    # The registry has a champion, and it is a model version of this demo's runs.
    client = mlflow.MlflowClient(f"sqlite:///{workdir / 'mlflow' / 'mlflow.db'}")
    champion = client.get_model_version_by_alias("reactdiff", "champion")
    assert client.get_run(champion.run_id).info.status == "FINISHED"

    # Results table and plots were written; the model's metrics are finite.
    rows = json.loads((workdir / "eval" / "results.json").read_text())
    assert set(rows) == {"ReactDiff", "ReactDiff-LRS", "B_Random", "B_Mime", "B_MeanSeq", "B_MeanFr", "B_Ridge"}
    for model in ("ReactDiff", "ReactDiff-LRS"):  # LRS: styles from each listener's other clips
        assert np.isfinite(rows[model]["FRDist"]) and rows[model]["FRDiv"] > 0
    assert rows["ReactDiff-LRS"]["FRDist"] != rows["ReactDiff"]["FRDist"]
    assert list((workdir / "eval").glob("*.png"))

    # Generated reactions parse back with the corpus reader.
    csvs = sorted((workdir / "generated").rglob("*.csv"))
    assert len(csvs) == 10 * load_config(RECIPES["small"]).demo.generated_clips  # α = 10 per generated speaker
    emotion = corpus.read_emotion(csvs[0])
    assert emotion.shape[1] == EMOTION_DIM
    face = np.load(csvs[0].with_suffix(".npy"))
    assert face.shape == (emotion.shape[0], 1, 58)
