"""Joining or starting the Ray runtime, the same way for every pipeline stage."""

from __future__ import annotations

import logging
import os

from reactdiff import ray_compat

logger = logging.getLogger(__name__)

# A local runtime advertises this many logical CPUs beyond the cores: training workers hold their
# CPUs for a whole run, and Ray Data's I/O-bound read tasks would otherwise starve behind them.
LOCAL_EXTRA_CPUS = 2
# Every Ray process runs `setup_ray_process` when it starts (jobs/runtime_env.yaml names it too).
SETUP_HOOK = f"{__name__}.setup_ray_process"
# How often Ray Data refreshes its resource limits (Ray 2.60 default: 1 s), see tune_ray_data.
RAY_DATA_LIMITS_REFRESH_S = 0.1


def bind_local_ray_to_loopback() -> None:
    """Make a local Ray runtime that this process starts bind 127.0.0.1 only.

    The one thing that must happen before Python first imports ray: Ray reads
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, at import, and with it unset a local runtime on Linux
    binds the machine's network address. So every entry point calls this first, before importing
    anything that imports ray: `cli.main` (and so jobs/), the bench scripts, and tests/conftest.py
    (`pytest_configure`, before test modules are collected). A process that joins a cluster
    (RAY_ADDRESS) starts no runtime and is left alone. `ray_init` warns where it came too late.
    """
    if not os.environ.get("RAY_ADDRESS"):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def setup_ray_process() -> None:
    """Run in every Ray worker process (a worker_process_setup_hook)."""
    tune_ray_data()
    ray_compat.quiet_train_placement_group_cleaner()


def tune_ray_data() -> None:
    """Let every Ray Data execution use the cluster from its first tasks, not after a second.

    Ray 2.60 Ray Data asks its autoscaling coordinator actor for its share of the cluster without
    waiting for the answer, and caches that first (empty) answer for 1 s. For that second each
    execution (one per pass, so one per training epoch and per validation) runs one read task at
    a time. bench/bench_prepare.py measured it: of a 1.7 s pass over a 600 MB lite store, ~1 s
    ran serially. Refreshing every 0.1 s costs one non-blocking actor call per refresh.

    The knob is private (`ray_compat.set_ray_data_limits_refresh`). It must run in the process
    that executes the dataset: the driver for `iter_batches`, the SplitCoordinator actor for Ray
    Train's `streaming_split`, hence a worker_process_setup_hook.
    """
    ray_compat.set_ray_data_limits_refresh(RAY_DATA_LIMITS_REFRESH_S)


def ray_init(num_cpus: int | None = None) -> None:
    """Join the cluster in RAY_ADDRESS (as under `ray job submit`), or start a local runtime with
    `num_cpus` logical CPUs (default: the cores and LOCAL_EXTRA_CPUS)."""
    import ray

    if ray.is_initialized():
        return
    setup_ray_process()  # the driver runs Ray Data executions and Train controllers' code too
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # the job's runtime env (jobs/runtime_env.yaml) carries the setup hook
    else:
        if ray_compat.local_runtime_binds_all_interfaces():
            logger.warning(
                "this local Ray runtime binds the machine's network address, not 127.0.0.1: call "
                "ray_runtime.bind_local_ray_to_loopback() before Python imports ray (the reactdiff "
                "command does this itself)"
            )
        ray.init(
            num_cpus=num_cpus or (os.cpu_count() or 1) + LOCAL_EXTRA_CPUS,
            include_dashboard=False,
            runtime_env={"worker_process_setup_hook": SETUP_HOOK},
        )
