"""The torch.distributed rendezvous of the training workers, listening on one address only.

torch's rendezvous store (`TCPStore`) has no bind-address option: started the usual way
(`env://`, `tcp://`, which Ray Train's `TorchConfig` uses) rank 0's store listens on every
interface. The one way in is `master_listen_fd`, a socket the caller has bound. So rank 0 binds
that socket on the address Ray uses for its node (127.0.0.1 for a local runtime, the node's
cluster address on a cluster) and every rank joins the process group through the store on it.
The collective backends' own sockets (gloo pairs, NCCL's bootstrap) go to that address's network
interface too, unless GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME already name one.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import psutil
import ray
import torch.distributed as dist
from ray.train.torch import TorchConfig

from reactdiff import ray_compat

# Rank 0's store, which owns the listening socket. Ray Train ends a worker group by ending its
# processes, which closes it.
_hosted_store: dist.TCPStore | None = None


def host_store(address: str, port: int, world_size: int, timeout: timedelta) -> int:
    """Start this process's rendezvous store on `address` (`port` 0: any free port); its port."""
    global _hosted_store
    family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
    listener = socket.create_server((address, port), family=family)
    port = listener.getsockname()[1]
    _hosted_store = dist.TCPStore(
        address,
        port,
        world_size,
        is_master=True,
        timeout=timeout,
        wait_for_workers=False,
        master_listen_fd=listener.detach(),
    )
    return port


def interface_of(address: str) -> str | None:
    """The name of the network interface that holds `address` (None if none does)."""
    wanted = ipaddress.ip_address(address)
    return next(
        (
            name
            for name, entries in psutil.net_if_addrs().items()
            for entry in entries
            if entry.family in (socket.AF_INET, socket.AF_INET6)
            and ipaddress.ip_address(entry.address.split("%")[0]) == wanted
        ),
        None,
    )  # "%": IPv6 scope


def join_process_group(
    backend: str, address: str, port: int, world_rank: int, world_size: int, timeout: timedelta
) -> None:
    """Join the default process group through the store at address:port (rank 0 hosts it)."""
    # What an env:// rendezvous would have set, for libraries that read it.
    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port))
    interface = interface_of(address)
    if interface:  # else gloo binds what the hostname resolves to, NCCL its first non-lo interface
        os.environ.setdefault("GLOO_SOCKET_IFNAME", interface)
        os.environ.setdefault("NCCL_SOCKET_IFNAME", interface)
    if backend == "nccl" and "TORCH_NCCL_BLOCKING_WAIT" not in os.environ:
        os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")  # as Ray: fail on a hung collective
    if world_rank == 0:
        assert _hosted_store is not None, "rank 0 joins after host_store"
        store = _hosted_store
    else:
        store = dist.TCPStore(address, port, world_size, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=world_rank, world_size=world_size, timeout=timeout)


def _host_on_node(world_size: int, timeout_s: int) -> tuple[str, int]:
    address = ray.util.get_node_ip_address()
    return address, host_store(address, 0, world_size, timedelta(seconds=timeout_s))


class _NodeAddressTorchBackend(ray_compat.torch_backend_class()):
    """Ray Train's torch backend (GPU visibility, LOCAL_RANK & co., shutdown) with the rendezvous
    store bound to the node's Ray address."""

    def on_start(self, worker_group, backend_config: "NodeAddressTorchConfig") -> None:
        resources = worker_group.get_resources_per_worker()
        if backend_config.backend not in (None, "gloo", "nccl") or resources.get("TPU", 0) > 0:
            # Accelerators this project does not target keep Ray's own rendezvous.
            super().on_start(worker_group, backend_config)
            return
        backend = backend_config.backend or ("nccl" if resources.get("GPU", 0) > 0 else "gloo")
        world_size = len(worker_group)
        address, port = worker_group.execute_single(
            0, _host_on_node, world_size=world_size, timeout_s=backend_config.timeout_s
        )
        worker_group.execute(ray_compat.set_torch_distributed_env_vars)
        timeout = timedelta(seconds=backend_config.timeout_s)
        ray.get(
            [
                worker_group.execute_single_async(
                    rank,
                    join_process_group,
                    backend=backend,
                    address=address,
                    port=port,
                    world_rank=rank,
                    world_size=world_size,
                    timeout=timeout,
                )
                for rank in range(world_size)
            ]
        )


@dataclass
class NodeAddressTorchConfig(TorchConfig):
    """`TorchConfig` whose rendezvous listens on the node's Ray address, not on every interface."""

    @property
    def backend_cls(self):
        return _NodeAddressTorchBackend
