"""Every use of a Ray private API in reactdiff, in one place.

Ray changes its private APIs without notice, so each use below says why no public API does the
job and which public alternative it waits for. `CHECKED_RAY_VERSIONS` are the Ray releases they
were checked on; tests/test_ray_compat.py fails, naming this module, on any other installed Ray,
and resolves every entry of `PRIVATE_SYMBOLS`. To upgrade Ray: recheck each function here against
the new release (and the public alternative it waits for), then add the version.

Ray is imported inside the functions only: `ray_runtime` imports this module, and must be
importable before anything imports ray (see `ray_runtime.bind_local_ray_to_loopback`).
"""

from __future__ import annotations

import logging

CHECKED_RAY_VERSIONS = ("2.60.0",)

# Every private module or attribute used below, "module:attribute.attribute".
PRIVATE_SYMBOLS = (
    "ray._private.ray_constants:ENABLE_RAY_CLUSTER",
    "ray._private.state:state._connect_and_get_accessor",
    "ray.core.generated.gcs_pb2:PlacementGroupTableData",
    "ray.data._internal.execution.resource_manager:ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S",
    "ray.train.v2._internal.execution.controller.placement_group_cleaner:PlacementGroupCleaner",
    "ray.train.torch.config:_TorchBackend",
    "ray.train.torch.config:_set_torch_distributed_env_vars",
    "ray._private.node:Node",
    "ray._private.parameter:RayParams",
)

logger = logging.getLogger(__name__)


def local_runtime_binds_all_interfaces() -> bool:
    """Whether a local runtime started by this process would bind the machine's network address.

    Ray decides it from RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER once, when `ray` is first imported, into
    `ray._private.ray_constants.ENABLE_RAY_CLUSTER`: only that constant says what it decided.
    Waits for: a public bind-address option of `ray.init` for a local runtime.
    """
    from ray._private import ray_constants

    return bool(ray_constants.ENABLE_RAY_CLUSTER)


def release_orphaned_placement_groups() -> int:
    """Remove this job's placement groups whose creating actor has died; returns how many.

    ASHA stops a trial by ending its driver actor, and the Train controller it owns dies with
    it; but a placement group made by a non-detached actor lives as long as the job (Ray's
    rule), so the controller's worker group keeps its CPUs. Train V2 frees them from a cleaner
    that asks the Ray State API, which needs the dashboard the local runtime does not start
    (`ray_runtime.ray_init`): without this, each stopped trial would hold its CPUs until the
    sweep ends and later trials' Ray Data tasks would never be scheduled. Only the GCS record of
    a group names its creator, hence the private accessor and the GCS protobuf.
    Waits for: `ray.util.placement_group_table()` reporting the creator actor and whether it
    died, or Train V2's PlacementGroupCleaner working without the dashboard.
    """
    import ray
    from ray._private.state import state
    from ray.core.generated import gcs_pb2
    from ray.util.placement_group import PlacementGroup, remove_placement_group

    job_id = ray.get_runtime_context().get_job_id()
    freed = 0
    for raw in state._connect_and_get_accessor().get_placement_group_table():
        record = gcs_pb2.PlacementGroupTableData.FromString(raw)
        # A group made by the driver itself (Tune's trial groups) has no creator actor and counts
        # as "creator dead" from the start.
        made_by_dead_actor = record.creator_actor_dead and not ray.ActorID(record.creator_actor_id).is_nil()
        if (
            made_by_dead_actor
            and not record.is_detached
            and record.creator_job_id.hex() == job_id
            and record.state != gcs_pb2.PlacementGroupTableData.REMOVED
        ):
            remove_placement_group(PlacementGroup(ray.PlacementGroupID(record.placement_group_id)))
            freed += 1
    return freed


def quiet_train_placement_group_cleaner() -> None:
    """Silence Ray Train's PlacementGroupCleaner in this process.

    Every Train run starts that detached actor; once a second it asks the State API whether the
    run's controller lives, to free its placement group if the controller died without doing so.
    The State API is served by the dashboard, which a local runtime here does not start (one less
    listening server and ~100 MB less on small machines), so every query fails and logs "Failed to
    query Ray Train Controller actor state" once a second for the whole run. Nothing is lost
    without it: a controller that ends, even by an exception, removes its placement group itself,
    and sweeps free any left over (`release_orphaned_placement_groups`). The logger is named after
    the cleaner's private module.
    Waits for: a Train option to turn the cleaner off, or a cleaner that stays quiet without the
    State API.
    """
    logging.getLogger("ray.train.v2._internal.execution.controller.placement_group_cleaner").setLevel(logging.ERROR)


def set_ray_data_limits_refresh(interval_s: float) -> None:
    """Refresh Ray Data's resource limits every `interval_s` in this process (Ray's default: 1 s).

    The knob is a class attribute of Ray Data's internal ResourceManager; where a Ray upgrade
    removes it, this logs once and leaves Ray's default (`ray_runtime.tune_ray_data` says why).
    Waits for: a DataContext option for the limits refresh, or an execution that waits for the
    autoscaling coordinator's first answer.
    """
    try:
        from ray.data._internal.execution.resource_manager import ResourceManager
    except ImportError:
        logger.warning("Ray Data's ResourceManager moved; its limits refresh keeps Ray's default")
        return
    if hasattr(ResourceManager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S"):
        ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = interval_s
    else:
        logger.warning("Ray Data's ResourceManager has no GLOBAL_LIMITS_UPDATE_INTERVAL_S; keeping Ray's default")


def torch_backend_class() -> type:
    """Ray Train's torch backend (`ray.train.torch.config._TorchBackend`), to subclass.

    `train/rendezvous.py` keeps all it does (GPU visibility, LOCAL_RANK & co., shutdown) and
    replaces only its rendezvous, because torch's store listens on every interface when started
    the way the backend starts it.
    Waits for: a bind-address option of `ray.train.torch.TorchConfig`.
    """
    from ray.train.torch.config import _TorchBackend

    return _TorchBackend


def set_torch_distributed_env_vars() -> None:
    """Ray Train's own setting of LOCAL_RANK, WORLD_SIZE & co. in a training worker, as its torch
    backend does for Train V2 worker groups (run by `train/rendezvous.py` on every worker).
    Waits for: the same as `torch_backend_class`."""
    from ray.train.torch.config import _set_torch_distributed_env_vars

    _set_torch_distributed_env_vars()


def start_worker_node(gcs_address: str, num_cpus: int, temp_dir: str, agent_port: int):
    """Start a Ray worker node of the cluster at `gcs_address` on 127.0.0.1; returns its `Node`
    (its processes stop when this process exits).

    This is the `ray._private.node.Node(..., head=False)` call that `ray start --address --block`
    makes, minus its refusal to join when RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which a
    loopback-only node needs (cluster/local_cluster.sh explains).
    Waits for: `ray start` binding a worker node to 127.0.0.1 on Linux.
    """
    from ray._private.node import Node
    from ray._private.parameter import RayParams

    params = RayParams(
        gcs_address=gcs_address,
        node_ip_address="127.0.0.1",
        num_cpus=num_cpus,
        temp_dir=temp_dir,
        dashboard_agent_listen_port=agent_port,
        include_log_monitor=False,
    )
    return Node(params, head=False, shutdown_at_exit=True, spawn_reaper=True)
