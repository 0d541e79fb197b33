"""The torch.distributed rendezvous of the training workers, listening on one address only.

torch's rendezvous store (`TCPStore`) has no bind-address option: started the usual way
(`env://`, `tcp://`, which Ray Train's `TorchConfig` uses) rank 0's store listens on every
interface. The one way in is `master_listen_fd`, a socket the caller has bound. So rank 0 binds
that socket on the address Ray uses for its node (127.0.0.1 for a local runtime, the node's
cluster address on a cluster) and every rank joins the process group through the store on it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import ray
import torch.distributed as dist
from ray.train.torch import TorchConfig
# Ray's own torch backend: GPU visibility, LOCAL_RANK & co., shutdown. Only its rendezvous changes.
from ray.train.torch.config import _set_torch_distributed_env_vars, _TorchBackend

# Rank 0's store and its listening socket. Ray Train ends a worker group by ending its processes,
# which closes both.
_hosted: tuple[socket.socket, dist.TCPStore] | None = None


def host_store(address: str, port: int, world_size: int, timeout: timedelta) -> int:
    """Start this process's rendezvous store on `address` (`port` 0: any free port); its port."""
    global _hosted
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    listener = socket.create_server((address, port), family=family)
    port = listener.getsockname()[1]
    store = dist.TCPStore(address, port, world_size, is_master=True, timeout=timeout,
                          wait_for_workers=False, master_listen_fd=listener.fileno())
    _hosted = (listener, store)
    return port


def join_process_group(backend: str, address: str, port: int, world_rank: int, world_size: int,
                       timeout: timedelta) -> None:
    """Join the default process group through the store at address:port (rank 0 hosts it)."""
    # What an env:// rendezvous would have set, for libraries that read it.
    os.environ.update(MASTER_ADDR=address, MASTER_PORT=str(port))
    if world_rank == 0:
        assert _hosted is not None, "rank 0 joins after host_store"
        store = _hosted[1]
    else:
        store = dist.TCPStore(address, port, world_size, is_master=False, timeout=timeout)
    dist.init_process_group(backend, store=store, rank=world_rank, world_size=world_size, timeout=timeout)


def _host_on_node(world_size: int, timeout_s: int) -> tuple[str, int]:
    address = ray.util.get_node_ip_address()
    return address, host_store(address, 0, world_size, timedelta(seconds=timeout_s))


class _NodeAddressTorchBackend(_TorchBackend):
    """Ray Train's torch backend with the rendezvous store bound to the node's Ray address."""

    def on_start(self, worker_group, backend_config: "NodeAddressTorchConfig") -> None:
        gpus = worker_group.get_resources_per_worker().get("GPU", 0)
        backend = backend_config.backend or ("nccl" if gpus > 0 else "gloo")
        world_size = len(worker_group)
        address, port = worker_group.execute_single(
            0, _host_on_node, world_size=world_size, timeout_s=backend_config.timeout_s)
        worker_group.execute(_set_torch_distributed_env_vars)
        timeout = timedelta(seconds=backend_config.timeout_s)
        ray.get([worker_group.execute_single_async(
            rank, join_process_group, backend=backend, address=address, port=port, world_rank=rank,
            world_size=world_size, timeout=timeout) for rank in range(world_size)])


@dataclass
class NodeAddressTorchConfig(TorchConfig):
    """`TorchConfig` whose rendezvous listens on the node's Ray address, not on every interface."""

    @property
    def backend_cls(self):
        return _NodeAddressTorchBackend
