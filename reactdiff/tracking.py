"""MLflow tracking: one run per training run (the same run across restarts), evaluation logging,
logging the pyfunc model (reactdiff.pyfunc) and resolving model URIs.

This module (and `reactdiff.registry` for the model registry) is the only door to MLflow. Every
function takes an explicit `MlflowClient` (`client_for(tracking_uri)`) or tracking URI, so two
servers can be used from one process; MLflow's process-global tracking URI is set in one place
only, `_fluent_tracking_uri`, around the one call that needs it (`log_model`).

Only rank 0 of a training job talks to MLflow (Train V2 rejects Tune's MLflow callbacks).
A run is found again by its `reactdiff.run_name` tag, so a resumed or restarted job keeps logging
into the run it started instead of opening a duplicate.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from reactdiff.errors import ModelNotFound, Refused

# ReactDiffPyfunc is also reached here by name: models logged before it moved to reactdiff.pyfunc
# were pickled as reactdiff.tracking.ReactDiffPyfunc.
from reactdiff.pyfunc import CHECKPOINT_ARTIFACT, MODEL_REQUIREMENTS, ReactDiffPyfunc, signature
from reactdiff.tags import RUN_NAME_TAG

MODEL_ARTIFACT = "model"
MLFLOW_TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
MODEL_URI_EXAMPLES = "e.g. models:/reactdiff@champion, models:/reactdiff/3 or runs:/<run id>/model"
# What to run for a model that does not exist yet.
MAKE_A_MODEL = "`reactdiff train stage1|stage2` prints a new model's URI; `reactdiff promote` registers one"


def client_for(tracking_uri: str) -> MlflowClient:
    """The client every other function here is given; its registry is the tracking server's."""
    return MlflowClient(tracking_uri)


def not_found(err: MlflowException) -> bool:
    """Whether MLflow refused because what was named does not exist (on any backend)."""
    return err.error_code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND")


def already_exists(err: MlflowException) -> bool:
    """Whether MLflow refused to create what exists already (on any backend)."""
    return err.error_code in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS")


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, cwd=Path(__file__).parent
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def find_run(client: MlflowClient, experiment_id: str, run_name: str) -> str | None:
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.`{RUN_NAME_TAG}` = '{run_name}'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    return runs[0].info.run_id if runs else None


def experiment_id(client: MlflowClient, experiment: str) -> str:
    """The id of the experiment named `experiment`, created if missing."""
    found = client.get_experiment_by_name(experiment)
    if found:
        return found.experiment_id
    try:
        return client.create_experiment(experiment)
    except MlflowException:  # created by another process in the meantime
        found = client.get_experiment_by_name(experiment)
        if found is None:
            raise
        return found.experiment_id


def start_or_resume_run(
    client: MlflowClient, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, Any]
) -> str:
    """Start the run for `run_name`, or reopen it if it already exists; returns its id."""
    experiment_key = experiment_id(client, experiment)
    run_id = find_run(client, experiment_key, run_name)
    if run_id is None:
        run = client.create_run(experiment_key, run_name=run_name, tags={RUN_NAME_TAG: run_name, **tags})
        run_id = run.info.run_id
        # MLflow caps param values at 6000 characters and a batch at 100 params.
        items = [Param(k, str(v)) for k, v in params.items()]
        for start in range(0, len(items), 100):
            client.log_batch(run_id, params=items[start : start + 100])
    else:
        client.update_run(run_id, status="RUNNING")
    return run_id


def log_epoch(client: MlflowClient, run_id: str, metrics: dict[str, float], epoch: int) -> None:
    """The finite numbers of `metrics` at step `epoch`."""
    now = int(time.time() * 1000)
    clean = [
        Metric(k, float(v), now, epoch) for k, v in metrics.items() if isinstance(v, (int, float)) and np.isfinite(v)
    ]
    if clean:
        client.log_batch(run_id, metrics=clean)


def last_logged_epoch(client: MlflowClient, run_id: str, key: str = "train_loss") -> int:
    """Highest epoch already in the run's history (-1 if none): a restart from an older checkpoint
    re-runs epochs that a crashed attempt logged, and those must not appear twice."""
    history = client.get_metric_history(run_id, key)
    return max((m.step for m in history), default=-1)


def create_finished_run(client: MlflowClient, experiment: str, run_name: str) -> str:
    """A new, finished run of its own in `experiment` (created if missing), for results logged
    after the fact (`reactdiff score`); returns its id."""
    run_id = client.create_run(experiment_id(client, experiment), run_name=run_name).info.run_id
    client.set_terminated(run_id)
    return run_id


def log_scores(
    client: MlflowClient,
    run_id: str,
    rows: dict[str, dict[str, float]],
    main_label: str,
    files: list[Path],
    artifact_path: str,
    tags: dict[str, str],
) -> None:
    """An evaluation's results into a run: tags, the metrics of the `main_label` row under their
    own names (what promotion ranks by) and every other row's as `<row>.<metric>`, and the files
    as artifacts under `artifact_path`. Non-finite values are not logged."""
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    flat = dict(rows.get(main_label, {}))
    flat.update(
        {f"{label}.{name}": value for label, row in rows.items() if label != main_label for name, value in row.items()}
    )
    for key, value in flat.items():
        if np.isfinite(value):
            client.log_metric(run_id, key, float(value))
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def log_scoring(
    tracking_uri: str,
    experiment: str,
    run_name: str,
    rows: dict[str, dict[str, float]],
    main_label: str,
    files: list[Path],
    artifact_path: str,
    tags: dict[str, str],
) -> str:
    """A scoring of predictions made elsewhere as a run of its own (`log_scores`); returns its id."""
    client = client_for(tracking_uri)
    run_id = create_finished_run(client, experiment, run_name)
    log_scores(client, run_id, rows, main_label, files, artifact_path, tags)
    return run_id


def finish_run(client: MlflowClient, run_id: str, status: str = "FINISHED") -> None:
    client.set_terminated(run_id, status=status)


@contextmanager
def _fluent_tracking_uri(tracking_uri: str) -> Iterator[None]:
    """MLflow's process-global tracking URI set to `tracking_uri` for the block, then put back.

    The only place that sets it: `mlflow.pyfunc.log_model` has no client or URI argument and logs
    through the fluent API (the active run, its artifacts, the logged model). `set_tracking_uri`
    also writes the MLFLOW_TRACKING_URI environment variable (inherited by subprocesses), so that
    is what is put back: its value before, or unset (`set_tracking_uri(None)` unsets it), which
    leaves the fluent API resolving the URI as it did. Not for concurrent use from several threads.
    """
    previous = os.environ.get(MLFLOW_TRACKING_URI_ENV)
    mlflow.set_tracking_uri(tracking_uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)


def log_model(client: MlflowClient, run_id: str, checkpoint_path: Path, metadata: dict[str, Any] | None = None) -> str:
    """Log a checkpoint as the run's pyfunc model (also reachable as runs:/<run id>/model); returns
    the logged model's URI (models:/<model id>)."""
    with (
        _fluent_tracking_uri(client.tracking_uri),
        mlflow.start_run(run_id=run_id, nested=mlflow.active_run() is not None),
    ):
        info = mlflow.pyfunc.log_model(
            name=MODEL_ARTIFACT,
            python_model=ReactDiffPyfunc(),
            artifacts={CHECKPOINT_ARTIFACT: str(checkpoint_path)},
            pip_requirements=MODEL_REQUIREMENTS,
            signature=signature(),
            metadata=metadata or {},
        )
    return info.model_uri


@dataclass(frozen=True)
class ModelRef:
    """What a `--model` or `train.stage1_model` names (`parse_model`): a checkpoint `file`, a run's
    artifact (`runs:/<run id>/<path>`), a registered version (`models:/<name>@<alias>`,
    `models:/<name>/<version>`) or a logged model (`models:/<model id>`)."""

    text: str
    kind: str  # "file" | "run" | "registered" | "logged"
    run_id: str | None = None
    path: str | None = None  # the artifact path of a run's URI
    name: str | None = None  # registered model name, or the logged model's id
    alias: str | None = None
    version: str | None = None

    @property
    def is_file(self) -> bool:
        return self.kind == "file"

    def registered_version(self, client: MlflowClient):
        """The registry's version this names on `client`'s server now (an alias resolved)."""
        if self.alias:
            return client.get_model_version_by_alias(self.name, self.alias)
        return client.get_model_version(self.name, self.version)

    def source_run(self, client: MlflowClient) -> str:
        """The MLflow run that produced this model (not for a file)."""
        if self.kind == "run":
            return self.run_id
        if self.kind == "registered":
            return self.registered_version(client).run_id
        if self.kind == "logged":
            return client.get_logged_model(self.name).source_run_id
        raise ValueError(f"{self.text} is a checkpoint file, not an MLflow model")

    def artifact_location(self, client: MlflowClient) -> str:
        """Where the model's files are, looked up on `client`'s server.

        MLflow 3.17 resolves models:/ URIs, and runs:/ URIs that name a logged model, through the
        process-global tracking URI even when `download_artifacts` is given `tracking_uri`; this
        resolves them on `client` as MLflow does (a run's logged model of that name, else the run's
        own artifacts), so only a concrete location reaches MLflow."""
        if self.kind == "registered":
            return client.get_model_version_download_uri(self.name, self.registered_version(client).version)
        if self.kind == "logged":
            return client.get_logged_model(self.name).artifact_location
        if self.kind == "run":
            run = client.get_run(self.run_id)
            name, _, rest = self.path.partition("/")
            logged = [
                model
                for model in client.search_logged_models([run.info.experiment_id], filter_string=f"name = '{name}'")
                if model.source_run_id == self.run_id
            ]
            root, path = (logged[0].artifact_location, rest) if logged else (run.info.artifact_uri, self.path)
            return f"{root.rstrip('/')}/{path}" if path else root
        raise ValueError(f"{self.text} is a checkpoint file, not an MLflow model")


def parse_model(model: str | Path) -> ModelRef:
    """The one parser of model references; a malformed URI is refused and a missing file is
    ModelNotFound, each naming the forms."""
    text = str(model)
    if text.startswith("runs:/"):
        run_id, _, path = text[len("runs:/") :].partition("/")
        if not run_id or not path:
            raise Refused(
                f"model URI '{text}': expected runs:/<run id>/<artifact path>, e.g. runs:/<run id>/{MODEL_ARTIFACT}"
            )
        return ModelRef(text, "run", run_id=run_id, path=path)
    if text.startswith("models:/"):
        rest = text[len("models:/") :]
        name, at, alias = rest.partition("@")
        if at:
            if not name or not alias or "/" in alias:
                raise Refused(f"model URI '{text}': expected models:/<name>@<alias>")
            return ModelRef(text, "registered", name=name, alias=alias)
        name, slash, version = rest.partition("/")
        if not slash:
            if not name:
                raise Refused(f"model URI '{text}': expected {MODEL_URI_EXAMPLES}")
            return ModelRef(text, "logged", name=name)
        if not name or not version.isdigit():
            raise Refused(f"model URI '{text}': expected models:/<name>/<version number>")
        return ModelRef(text, "registered", name=name, version=version)
    if Path(text).is_file():
        return ModelRef(text, "file")
    raise ModelNotFound(
        f"model '{text}' is neither a checkpoint file nor an MLflow URI ({MODEL_URI_EXAMPLES}); {MAKE_A_MODEL}"
    )


def model_location(tracking_uri: str, model: ModelRef) -> str:
    """Where an MLflow model's files are on `tracking_uri`: ModelNotFound when that server has no
    such run, registered version, alias or logged model."""
    client = client_for(tracking_uri)
    try:
        return model.artifact_location(client)
    except MlflowException as err:
        if not not_found(err):
            raise
        raise ModelNotFound(
            f"model '{model.text}' does not resolve on {client.tracking_uri}: {err.message}; {MAKE_A_MODEL}"
        ) from None


def check_model(tracking_uri: str, model: str | Path) -> ModelRef:
    """The reference `model` names, checked to exist (a file, or a model on `tracking_uri`)
    without downloading it: what a command checks before it starts a runtime."""
    ref = parse_model(model)
    if not ref.is_file:
        model_location(tracking_uri, ref)
    return ref


def download_model(tracking_uri: str, model: ModelRef) -> Path:
    """A model URI's artifacts in a new local folder (the pyfunc model: MLmodel, artifacts/)."""
    local = Path(tempfile.mkdtemp(prefix="reactdiff-model-"))
    location = model_location(tracking_uri, model)
    return Path(
        mlflow.artifacts.download_artifacts(artifact_uri=location, dst_path=str(local), tracking_uri=tracking_uri)
    )


def resolve_checkpoint(tracking_uri: str, model: str | Path | ModelRef) -> Path:
    """A checkpoint path, or an MLflow model URI on `tracking_uri` → the local checkpoint file."""
    ref = model if isinstance(model, ModelRef) else parse_model(model)
    if ref.is_file:
        return Path(ref.text)
    found = sorted(download_model(tracking_uri, ref).rglob("*.pt"))
    if not found:
        raise FileNotFoundError(f"{ref.text} holds no reactdiff checkpoint (.pt) under artifacts/")
    return found[0]


def load_pyfunc(tracking_uri: str, model: str | ModelRef):
    """The logged pyfunc model of an MLflow model URI on `tracking_uri`, loaded from a local copy."""
    ref = model if isinstance(model, ModelRef) else parse_model(model)
    return mlflow.pyfunc.load_model(str(download_model(tracking_uri, ref)))
