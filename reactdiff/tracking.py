"""MLflow tracking: one run per training run (the same run across restarts), and the pyfunc model.

Only rank 0 of a training job talks to MLflow (Train V2 rejects Tune's MLflow callbacks).
A run is found again by its `reactdiff.run_name` tag, so a resumed or restarted job keeps logging
into the run it started instead of opening a duplicate.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.tracking import MlflowClient

from reactdiff import request_checks
from reactdiff.request_checks import BadRequest

RUN_NAME_TAG = "reactdiff.run_name"
STAGE_TAG = "reactdiff.stage"
# Written by training and evaluation, read by promotion (reactdiff.registry).
STORE_FINGERPRINT_TAG = "reactdiff.store_fingerprint"
GIT_COMMIT_TAG = "reactdiff.git_commit"
STAGE1_MODEL_TAG = "reactdiff.stage1_model"
EVAL_SPLIT_TAG = "reactdiff.eval_split"
EVAL_MODE_TAG = "reactdiff.eval_mode"
MODEL_ARTIFACT = "model"
CHECKPOINT_ARTIFACT = "checkpoint"


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).parent)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def find_run(client: MlflowClient, experiment_id: str, run_name: str) -> str | None:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'", max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0].info.run_id if runs else None


def start_or_resume_run(tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str],
                        params: dict[str, Any]) -> str:
    """Start the run for `run_name`, or reopen it if it already exists; returns its id."""
    mlflow.set_tracking_uri(tracking_uri)
    experiment_id = mlflow.set_experiment(experiment).experiment_id
    client = MlflowClient()
    run_id = find_run(client, experiment_id, run_name)
    if run_id is None:
        run = client.create_run(experiment_id, run_name=run_name, tags={RUN_NAME_TAG: run_name, **tags})
        run_id = run.info.run_id
        # MLflow caps param values at 6000 characters; configs are far below it.
        mlflow.log_params({k: str(v) for k, v in params.items()}, run_id=run_id)
    else:
        client.update_run(run_id, status="RUNNING")
    return run_id


def log_epoch(run_id: str, metrics: dict[str, float], epoch: int) -> None:
    clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)}
    mlflow.log_metrics(clean, step=epoch, run_id=run_id)


def last_logged_epoch(run_id: str, key: str = "train_loss") -> int:
    """Highest epoch already in the run's history (-1 if none): a restart from an older checkpoint
    re-runs epochs that a crashed attempt logged, and those must not appear twice."""
    history = MlflowClient().get_metric_history(run_id, key)
    return max((m.step for m in history), default=-1)


def create_finished_run(tracking_uri: str, experiment: str, run_name: str) -> str:
    """A new, finished run of its own in `experiment` (created if missing), for results logged
    after the fact (`reactdiff score`); returns its id."""
    client = MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    experiment_id = found.experiment_id if found else client.create_experiment(experiment)
    run_id = client.create_run(experiment_id, run_name=run_name).info.run_id
    client.set_terminated(run_id)
    return run_id


def log_scores(client: MlflowClient, run_id: str, rows: dict[str, dict[str, float]], main_label: str,
               files: list[Path], artifact_path: str, tags: dict[str, str]) -> None:
    """An evaluation's results into a run: tags, the metrics of the `main_label` row under their
    own names (what promotion ranks by) and every other row's as `<row>.<metric>`, and the files
    as artifacts under `artifact_path`. Non-finite values are not logged."""
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    flat = dict(rows.get(main_label, {}))
    flat.update({f"{label}.{name}": value for label, row in rows.items() if label != main_label
                 for name, value in row.items()})
    for key, value in flat.items():
        if np.isfinite(value):
            client.log_metric(run_id, key, float(value))
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def log_scoring(tracking_uri: str, experiment: str, run_name: str, rows: dict[str, dict[str, float]],
                main_label: str, files: list[Path], artifact_path: str, tags: dict[str, str]) -> str:
    """A scoring of predictions made elsewhere as a run of its own (`log_scores`); returns its id."""
    run_id = create_finished_run(tracking_uri, experiment, run_name)
    log_scores(MlflowClient(tracking_uri), run_id, rows, main_label, files, artifact_path, tags)
    return run_id


def finish_run(run_id: str, status: str = "FINISHED") -> None:
    MlflowClient().set_terminated(run_id, status=status)


def _bad_request(err: BadRequest) -> MlflowException:
    # INVALID_PARAMETER_VALUE is answered with HTTP 400 and this message by the scoring server;
    # any other exception from predict becomes a 400 with a generic message that hides the cause.
    return MlflowException(str(err), error_code=INVALID_PARAMETER_VALUE)


class ReactDiffPyfunc(mlflow.pyfunc.PythonModel):
    """The served model: loads the single-file checkpoint and generates reactions.

    Input: a dict of speaker feature arrays {stream: (B, T, D)} with exactly the model's streams (as
    the feature store gives them). Params: alpha (1..MAX_ALPHA, default 10), mode ("offline" |
    "online"), seed (None). Output: {"3dmm": (B, α, T, 58), "emotion": (B, α, T, 25)} as numpy. A
    stage-1 model returns its reconstruction {"3dmm": (B, T, 58), "emotion": (B, T, 25)} instead.
    A malformed request raises an MlflowException with INVALID_PARAMETER_VALUE (HTTP 400 when served)
    naming the field, what was expected and what to send.
    """

    def load_context(self, context) -> None:
        from reactdiff.models.checkpoint import load_checkpoint

        self.model = load_checkpoint(context.artifacts[CHECKPOINT_ARTIFACT])

    def predict(self, context, model_input, params=None):
        import torch

        from reactdiff.models.mmt import MMT

        stage1 = isinstance(self.model, MMT)
        try:
            feats = request_checks.speaker_features(model_input, self.model.streams if stage1 else self.model.mmt.streams)
            if not stage1:
                alpha, mode, seed = request_checks.generation_params(params)
                request_checks.clip_frames(self.model, next(iter(feats.values())).shape[1])
        except BadRequest as err:
            raise _bad_request(err) from None
        tensors = {name: torch.from_numpy(values) for name, values in feats.items()}
        with torch.inference_mode():
            if stage1:
                threedmm, emotion = self.model.decode(self.model.encode(tensors))
                return {"3dmm": threedmm.numpy(), "emotion": emotion.numpy()}
            out = self.model.generate(tensors, alpha=alpha, mode=mode, seed=seed)
        return {"3dmm": out["3dmm"].numpy(), "emotion": out["emotion"].numpy()}


# Pinned explicitly: MLflow would otherwise load the model in a subprocess to infer them.
_MODEL_REQUIREMENTS = ["torch==2.11.0", "diffusers==0.42.1", "numpy", "pydantic", "pyyaml"]


def _signature():
    """Declares the inference params: without them MLflow silently drops alpha/mode/seed."""
    from mlflow.models import ModelSignature
    from mlflow.types import ParamSchema, ParamSpec

    return ModelSignature(params=ParamSchema([
        ParamSpec("alpha", "long", request_checks.DEFAULT_ALPHA), ParamSpec("mode", "string", request_checks.MODES[0]),
        ParamSpec("seed", "long", None),
    ]))


def log_model(run_id: str, checkpoint_path: Path, metadata: dict[str, Any] | None = None) -> str:
    """Log a checkpoint as the run's pyfunc model; returns the model URI (runs:/<id>/model)."""
    # start_run refuses a run of another experiment than the process's active one.
    mlflow.set_experiment(experiment_id=MlflowClient().get_run(run_id).info.experiment_id)
    with mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None):
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=ReactDiffPyfunc(),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_path)},
            pip_requirements=_MODEL_REQUIREMENTS,
            signature=_signature(),
            metadata=metadata or {},
        )
    return info.model_uri


def resolve_checkpoint(model: str) -> Path:
    """A checkpoint path, or an MLflow model URI (models:/name@alias, runs:/id/model) → local file."""
    path = Path(model)
    if path.is_file():
        return path
    if "://" not in model and ":/" not in model:
        raise FileNotFoundError(
            f"model '{model}' is neither a checkpoint file nor an MLflow URI "
            "(e.g. models:/reactdiff@champion or runs:/<run id>/model)"
        )
    local = Path(tempfile.mkdtemp(prefix="reactdiff-model-"))
    root = Path(mlflow.artifacts.download_artifacts(artifact_uri=model, dst_path=str(local)))
    found = sorted(root.rglob("*.pt"))
    if not found:
        raise FileNotFoundError(f"{model} holds no reactdiff checkpoint (.pt) under artifacts/")
    return found[0]


def config_json(config) -> str:
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)
