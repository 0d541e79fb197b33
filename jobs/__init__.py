"""Entrypoints for `ray job submit`: thin wrappers around the `reactdiff` command.

Each module runs one `reactdiff` subcommand with the words given after it, so a job takes exactly
the flags and `key=value` overrides of the command line (`reactdiff <command> --help`):

    ray job submit --address http://127.0.0.1:8265 --working-dir . \
        --runtime-env jobs/runtime_env.yaml -- \
        python -m jobs.train_stage1 --config configs/tiny.yaml \
        data.store=/shared/store train.storage_path=/shared/runs \
        tracking.tracking_uri=http://127.0.0.1:5000

    jobs.prepare       reactdiff prepare          jobs.evaluate   reactdiff evaluate
    jobs.train_stage1  reactdiff train stage1     jobs.tune       reactdiff tune
    jobs.train_stage2  reactdiff train stage2     jobs.serve      reactdiff serve

A submitted job runs in a temporary copy of the uploaded working dir, which is deleted with the
job and exists on one node only. So before running, a job refuses relative paths for what it
reads or writes as data (the store, checkpoints, outputs, a `sqlite:///relative.db` tracking
URI): they would land in that copy and vanish. Inputs that travel with the code (`--config
configs/…`, `--space tune_spaces/…`) may stay relative. Outside a submitted job (run directly
with `python -m jobs.…`) the words go to the command unchecked. Jobs print everything, as
`reactdiff -v` does: their log is Ray's job log, not a file in the deleted working dir.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Set by Ray's job supervisor in the environment of every submitted job's entrypoint.
SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


class JobPathError(ValueError):
    """A submitted job was given a path that would resolve inside its temporary working dir."""


def _is_relative_path(value: str | Path) -> bool:
    """A local path that is not absolute; URIs (runs:/…, models:/…, s3://…) are not paths."""
    return ":/" not in str(value) and not Path(value).is_absolute()


def _is_relative_sqlite(uri: str) -> bool:
    # sqlite:///mlflow.db is relative to the cwd; sqlite:////abs/mlflow.db is absolute.
    return uri.startswith("sqlite:///") and not uri.startswith("sqlite:////")


def check_job_paths(command: list[str], argv: list[str], path_flags: tuple[str, ...]) -> None:
    """Raise JobPathError if a data path of `reactdiff <command> <argv>` is relative.

    `path_flags` names the command's flags (argparse dests) that hold data paths; commands that
    take `--config` have their store, checkpoint folder and tracking URI checked too.
    """
    from reactdiff.cli import build_parser

    args, overrides = build_parser().parse_known_args([*command, *argv])
    problems = []
    for dest in path_flags:
        value = getattr(args, dest, None)
        if value is not None and _is_relative_path(value):
            problems.append(f"--{dest.replace('_', '-')} {value}")
    if getattr(args, "accepts_overrides", False):
        from reactdiff.config import load_config

        cfg = load_config(args.config, overrides)
        paths = {"data.store": cfg.data.store, "train.storage_path": cfg.train.storage_path}
        if cfg.train.stage1_model:
            paths["train.stage1_model"] = cfg.train.stage1_model
        problems += [f"{key}={value}" for key, value in paths.items() if _is_relative_path(value)]
        if _is_relative_sqlite(cfg.tracking.tracking_uri):
            problems.append(f"tracking.tracking_uri={cfg.tracking.tracking_uri}")
    if problems:
        raise JobPathError(
            f"job `{' '.join(command)}`: relative data paths {', '.join(problems)} would resolve inside the "
            f"job's temporary working dir ({os.getcwd()}) and be lost. Give absolute paths on storage every "
            "node sees (NFS/EFS mount) and an MLflow server URL (tracking.tracking_uri=http://<head>:5000) "
            "or an absolute sqlite:////path/mlflow.db."
        )


def run_cli(command: list[str], path_flags: tuple[str, ...] = ()) -> None:
    """Run `reactdiff <command> <sys.argv[1:]>` and exit with its status."""
    from reactdiff.cli import main

    argv = sys.argv[1:]
    if os.environ.get(SUBMITTED_JOB_ENV):
        try:
            check_job_paths(command, argv, path_flags)
        except ValueError as err:  # JobPathError, or ConfigError for a bad override
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)
    # A job's log is Ray's job log (`ray job logs`): it keeps everything, as `reactdiff -v` prints it.
    sys.exit(main(["--verbose", *command, *argv]))
