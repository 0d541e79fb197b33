"""ray_cluster.yaml passes Ray's own launcher validation; jobs/runtime_env.yaml is a valid, small upload.

Validation is what `ray up` runs before touching AWS: `prepare_config` (merge with the AWS
defaults) then `validate_config` (ray-schema.json + node-type checks). Broken copies must fail,
to show the checks have teeth.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
UPLOAD_LIMIT_BYTES = 100 * 1024 * 1024  # Ray's cap on a working_dir package


def load_cluster_config() -> dict:
    return yaml.safe_load((REPO / "ray_cluster.yaml").read_text())


def ray_validate(config: dict) -> dict:
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


def test_cluster_config_passes_ray_validation():
    prepared = ray_validate(load_cluster_config())
    nodes = prepared["available_node_types"]
    assert prepared["provider"]["type"] == "aws"
    assert nodes["gpu_a100"]["resources"] == {"CPU": 96, "GPU": 8}
    assert nodes["gpu_a100"]["node_config"]["InstanceType"] == "p4d.24xlarge"
    assert 0 <= nodes["gpu_a100"]["min_workers"] <= nodes["gpu_a100"]["max_workers"] <= prepared["max_workers"]
    assert prepared["docker"]["image"].endswith("/reactdiff:latest")
    # The head starts the MLflow server that every job logs to.
    assert any("cluster/mlflow_server.sh start" in c for c in prepared["head_setup_commands"])
    assert os.access(REPO / "cluster" / "mlflow_server.sh", os.X_OK)  # runnable as the command names it


def test_unknown_top_level_key_fails_validation():
    config = load_cluster_config()
    config["max_wokers"] = 4  # a typo
    with pytest.raises(jsonschema.ValidationError, match="max_wokers"):
        ray_validate(config)


def test_min_workers_above_global_max_fails_validation():
    config = load_cluster_config()
    config["available_node_types"]["gpu_a100"]["min_workers"] = config["max_workers"] + 1
    with pytest.raises(ValueError, match="max_workers"):
        ray_validate(config)


def test_runtime_env_is_valid_and_keeps_the_upload_small():
    """Ray accepts the runtime env, and its excludes alone (without .gitignore) keep data out."""
    from ray._private.runtime_env.packaging import _dir_travel, _get_excludes
    from ray.runtime_env import RuntimeEnv

    spec = yaml.safe_load((REPO / "jobs" / "runtime_env.yaml").read_text())
    RuntimeEnv(**spec)  # raises on unknown fields or wrong types
    from reactdiff.ray_runtime import SETUP_HOOK

    assert spec["worker_process_setup_hook"] == SETUP_HOOK  # jobs tune Ray Data as local runs do
    uploaded: dict[str, int] = {}

    def record(path: Path) -> None:
        if path.is_file():
            uploaded[path.relative_to(REPO).as_posix()] = path.stat().st_size

    # The same walk Ray's packaging does for a working_dir upload, with .gitignore ignored.
    _dir_travel(REPO, [_get_excludes(REPO, spec["excludes"])], record, include_gitignore=False)
    assert "jobs/train_stage1.py" in uploaded and "configs/tiny.yaml" in uploaded
    excluded_roots = (".git/", ".venv/", "data/", "runs/", "mlruns/", "mlartifacts/", "demo_out/")
    leaked = [p for p in uploaded if p.startswith(excluded_roots) or p.endswith(".db") or "__pycache__" in p]
    assert not leaked, f"runtime_env excludes let these through: {leaked[:10]}"
    assert sum(uploaded.values()) < UPLOAD_LIMIT_BYTES
