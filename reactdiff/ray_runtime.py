"""Joining or starting the Ray runtime, the same way for every pipeline stage."""

from __future__ import annotations

import logging
import os

logger = logging.getLogger(__name__)

# A local Ray runtime (no RAY_ADDRESS to join) binds 127.0.0.1 only. Ray reads this when `ray` is
# first imported, so entry points (cli.py, bench/) import this module before anything imports ray.
if not os.environ.get("RAY_ADDRESS"):
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# A local runtime advertises this many logical CPUs beyond the cores: training workers hold their
# CPUs for a whole run, and Ray Data's I/O-bound read tasks would otherwise starve behind them.
LOCAL_EXTRA_CPUS = 2
# Every Ray process runs `setup_ray_process` when it starts (jobs/runtime_env.yaml names it too).
SETUP_HOOK = f"{__name__}.setup_ray_process"
# How often Ray Data refreshes its resource limits (Ray 2.60 default: 1 s), see tune_ray_data.
RAY_DATA_LIMITS_REFRESH_S = 0.1


def quiet_train_internals() -> None:
    """Silence Ray Train's PlacementGroupCleaner in this process.

    Every Train run starts that detached actor; once a second it asks the State API whether the
    run's controller lives, to free its placement group if the controller died without doing so.
    The State API is served by the dashboard, which a local runtime here does not start (one less
    listening server and ~100 MB less on small machines), so every query fails and logs "Failed to
    query Ray Train Controller actor state" once a second for the whole run. Nothing is lost
    without it: a controller that ends, even by an exception, removes its placement group itself,
    and sweeps free any left over (`tune.sweep.release_orphaned_placement_groups`).
    """
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def setup_ray_process() -> None:
    """Run in every Ray worker process (a worker_process_setup_hook)."""
    tune_ray_data()
    quiet_train_internals()


def tune_ray_data() -> None:
    """Let every Ray Data execution use the cluster from its first tasks, not after a second.

    Ray 2.60 Ray Data asks its autoscaling coordinator actor for its share of the cluster without
    waiting for the answer, and caches that first (empty) answer for 1 s. For that second each
    execution (one per pass, so one per training epoch and per validation) runs one read task at
    a time. bench/bench_prepare.py measured it: of a 1.7 s pass over a 600 MB lite store, ~1 s
    ran serially. Refreshing every 0.1 s costs one non-blocking actor call per refresh.

    The knob is a class attribute of Ray's internal ResourceManager: where a Ray upgrade removes
    it, this logs once and leaves Ray's default. It must run in the process that executes the
    dataset: the driver for `iter_batches`, the SplitCoordinator actor for Ray Train's
    `streaming_split`, hence a worker_process_setup_hook.
    """
    try:
        from ray.data._internal.execution.resource_manager import ResourceManager
    except ImportError:
        logger.warning("Ray Data's ResourceManager moved; its limits refresh keeps Ray's default")
        return
    if hasattr(ResourceManager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S"):
        ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = RAY_DATA_LIMITS_REFRESH_S
    else:
        logger.warning("Ray Data's ResourceManager has no GLOBAL_LIMITS_UPDATE_INTERVAL_S; keeping Ray's default")


def ray_init() -> None:
    """Join the cluster in RAY_ADDRESS (as under `ray job submit`), or start a local runtime."""
    import ray

    if ray.is_initialized():
        return
    setup_ray_process()  # the driver runs Ray Data executions and Train controllers' code too
    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # the job's runtime env (jobs/runtime_env.yaml) carries the setup hook
    else:
        from ray._private import ray_constants

        if ray_constants.ENABLE_RAY_CLUSTER:  # read when `ray` was first imported
            logger.warning(
                "this local Ray runtime binds the machine's network address, not 127.0.0.1: set "
                "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 before Python imports ray (the reactdiff "
                "command does this itself)")
        ray.init(num_cpus=(os.cpu_count() or 1) + LOCAL_EXTRA_CPUS, include_dashboard=False,
                 runtime_env={"worker_process_setup_hook": SETUP_HOOK})
