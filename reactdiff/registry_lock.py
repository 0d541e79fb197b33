"""The lock that serialises promotions and rollbacks of a registered model (reactdiff.registry).

Concurrency. MLflow has no transactions and tag/alias writes are blind upserts, so a lock taken
with "read tag, then write tag" would let two promoters both believe they hold it. The one atomic
operation the registry offers is creating a registered model: the backend's unique name
constraint lets exactly one of two concurrent `create_registered_model(name)` calls succeed, on
any number of machines talking to the same server or database. Promotions and rollbacks of model
`M` therefore hold the lock model `M.promotion-lock` (created to acquire, deleted to release)
around "read champion → compare → write tags → move aliases", and re-read the champion alias
afterwards. What this guarantees, and what it does not:

- reactdiff promote/rollback calls on one registry are serialised: each compares against the
  champion the previous one left, so racing promotions end with the better model as champion.
- Clients that move the aliases without the lock (the UI, other scripts) are not kept out; the
  re-read after moving `champion` detects such a write and raises instead of reporting success.
- A promoter that dies while holding the lock leaves it behind; later promoters wait
  `lock_timeout_s` and then fail naming the lock's owner and age. Remove it with `break_lock`
  once that owner is known to be dead: it is not stolen automatically, because deleting a lock
  that a third promoter has just re-created cannot be made safe without compare-and-delete.
"""

from __future__ import annotations

import math
import os
import socket
import time
import uuid

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from reactdiff.errors import PromotionError
from reactdiff.tags import LOCK_ACQUIRED_TAG, LOCK_OWNER_TAG
from reactdiff.tracking import already_exists, client_for, not_found

LOCK_SUFFIX = ".promotion-lock"


def lock_name(model_name: str) -> str:
    return model_name + LOCK_SUFFIX


class RegistryLock:
    """Mutual exclusion through the registry's unique registered-model names (see module doc)."""

    def __init__(self, client: MlflowClient, model_name: str, timeout_s: float, poll_s: float = 0.25):
        self.client, self.name, self.timeout_s, self.poll_s = client, lock_name(model_name), timeout_s, poll_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

    def __enter__(self) -> "RegistryLock":
        deadline = time.monotonic() + self.timeout_s
        while True:
            try:
                self.client.create_registered_model(
                    self.name,
                    tags={LOCK_OWNER_TAG: self.owner, LOCK_ACQUIRED_TAG: f"{time.time():.3f}"},
                    description="reactdiff promotion lock: exists while a promotion or rollback runs",
                )
                return self
            except MlflowException as err:
                if not already_exists(err):
                    raise
            if time.monotonic() >= deadline:
                raise PromotionError(self._held_message())
            time.sleep(self.poll_s)

    def _held_message(self) -> str:
        try:
            tags = self.client.get_registered_model(self.name).tags
        except MlflowException:
            tags = {}
        acquired = float(tags.get(LOCK_ACQUIRED_TAG, "nan"))
        age = "unknown age" if math.isnan(acquired) else f"held for {time.time() - acquired:.0f} s"
        return (
            f"registry lock '{self.name}' is held by {tags.get(LOCK_OWNER_TAG, 'an unknown owner')} "
            f"({age}); waited {self.timeout_s:.0f} s. Another promotion or rollback is running: retry "
            "when it ends. If that process is dead, remove the lock with "
            f"reactdiff.registry_lock.break_lock(tracking_uri, '{self.name[: -len(LOCK_SUFFIX)]}')"
        )

    def __exit__(self, *exc) -> None:
        # Delete only our own lock: a lock removed by break_lock may already be someone else's.
        try:
            if self.client.get_registered_model(self.name).tags.get(LOCK_OWNER_TAG) == self.owner:
                self.client.delete_registered_model(self.name)
        except MlflowException as err:
            if not not_found(err):
                raise


def break_lock(tracking_uri: str, model_name: str) -> bool:
    """Remove a promotion lock left by a dead process; returns whether there was one."""
    client = client_for(tracking_uri)
    try:
        client.delete_registered_model(lock_name(model_name))
        return True
    except MlflowException as err:
        if not_found(err):
            return False
        raise
