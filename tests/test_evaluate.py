"""`reactdiff evaluate` before a model exists: the four naive baselines and B_Ridge, tables, plots, MLflow."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow

from reactdiff.config import load_config
from reactdiff.evaluate.run import evaluate
from reactdiff.tags import EVAL_SPLIT_TAG

REPO = Path(__file__).resolve().parents[1]


def test_baselines_only_evaluation(tiny_store, tracking_uri, tmp_path):
    cfg = load_config(
        REPO / "configs" / "tiny.yaml",
        [f"data.store={tiny_store}", f"tracking.tracking_uri={tracking_uri}", "tracking.experiment=test-evaluate"],
    )
    result = evaluate(cfg, model=None, split="test", alpha=3, out_dir=tmp_path / "eval")

    assert set(result.rows) == {"B_Random", "B_Mime", "B_MeanSeq", "B_MeanFr", "B_Ridge"}
    assert result.rows["B_Ridge"]["FRDiv"] == 0.0  # deterministic
    # Mimicry reproduces the speaker exactly: FRSyn offset 0, and no diversity across α.
    assert result.rows["B_Mime"]["FRSyn"] == 0.0 and result.rows["B_Mime"]["FRDiv"] == 0.0
    assert result.rows["B_Random"]["FRDiv"] > 0.1  # ≈ 1/6 for i.i.d. uniform predictions
    summary = result.summary()  # what `reactdiff evaluate` prints
    for name in ("B_Random", "B_Mime", "B_MeanSeq", "B_MeanFr", "B_Ridge", "FRDist", "track_corr"):
        assert name in summary
    written = {p.name for p in result.files}
    assert {"results.md", "results.csv", "results.json", "metrics.png", "sample_0.png"} <= written
    assert json.loads((tmp_path / "eval" / "results.json").read_text()) == result.rows

    client = mlflow.MlflowClient(tracking_uri)
    run = client.get_run(result.run_id)
    assert run.data.tags[EVAL_SPLIT_TAG] == "test"
    assert run.data.metrics["B_MeanSeq.FRDist"] == result.rows["B_MeanSeq"]["FRDist"]
    logged = client.download_artifacts(result.run_id, "evaluation/test-offline/results.md", str(tmp_path))
    assert Path(logged).read_text() == (tmp_path / "eval" / "results.md").read_text() == result.table_markdown
