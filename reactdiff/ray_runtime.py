"""Joining or starting the Ray runtime, the same way for every pipeline stage."""

from __future__ import annotations

import os

# A local runtime advertises this many logical CPUs beyond the cores: training workers hold their
# CPUs for a whole run, and Ray Data's I/O-bound read tasks would otherwise starve behind them.
LOCAL_EXTRA_CPUS = 2


def ray_init() -> None:
    """Join the cluster in RAY_ADDRESS (as under `ray job submit`), or start a local runtime."""
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init()
    else:
        ray.init(num_cpus=(os.cpu_count() or 1) + LOCAL_EXTRA_CPUS, include_dashboard=False)
