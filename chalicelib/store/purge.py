"""Removing datasets: everything a deleted connection or dataset left, state item last."""

from __future__ import annotations

import contextlib
import logging
import time
import uuid
from collections.abc import Iterable

from pynamodb.exceptions import DeleteError

from chalicelib.domain.model import (
    DatasetKey,
)
from chalicelib.store.conditions import dataset_exists, state_handle, update_if
from chalicelib.store.items import (
    STATE_SORT_KEY,
    DatasetItem,
    RunItem,
    StateItem,
)

logger = logging.getLogger(__name__)

PURGE_LEASE_SECONDS = 900.0
"""How long a purge holds a dataset's lease: longer than any Lambda runs, so only a purge cut short
(a timeout) lets it lapse, and then the next sync may take the dataset again."""


class DatasetPurge:
    """Deletes a dataset's records, run history and state; safe to call again after a timeout."""

    def delete_connection_datasets(self, user_id: str, connection_id: str, data_types: Iterable[str]) -> int:
        """Every dataset the connection has or ever had; returns how many had anything stored.

        ``data_types`` (the provider's) are deleted by key, since the index lags writes;
        the index finds data types the provider config no longer lists.
        """
        prefix = f"{connection_id}#"
        indexed = {
            item.data_type
            for item in DatasetItem.by_user.query(user_id, DatasetItem.dataset_key.startswith(prefix))
            if isinstance(item, StateItem)
        }
        return sum(
            self.delete_dataset(DatasetKey(user_id, connection_id, data_type))
            for data_type in sorted(indexed | set(data_types))
        )

    def delete_dataset(self, key: DatasetKey) -> bool:
        """Remove records, run history and, last, the state item of one dataset; ``True`` if it had any.

        The state item goes last so that a delete cut short (a Lambda timeout) can
        still be found through the index and finished by calling it again. First the purge takes the
        dataset's lease: from then on a sync still running (of an account a PUT just replaced, or of a
        connection being deleted) can store nothing more, since every record write and its final write
        are fenced on its own lease (``RecordStore.write_records``), and no new sync can start; so the
        consistent read that follows sees every record there will ever be.
        """
        self._take_for_purge(key)
        items = list(DatasetItem.query(key.dataset_id, attributes_to_get=["pk", "sk"], consistent_read=True))
        with DatasetItem.batch_write() as batch:
            for item in items:
                if item.sk != STATE_SORT_KEY:
                    batch.delete(item)
        runs = list(RunItem.query(key.dataset_id, attributes_to_get=["dataset_id", "run_id"], consistent_read=True))
        with RunItem.batch_write() as run_batch:
            for run in runs:
                run_batch.delete(run)
        with contextlib.suppress(DeleteError):
            StateItem(key.dataset_id, STATE_SORT_KEY).delete()
        return bool(items or runs)

    @staticmethod
    def _take_for_purge(key: DatasetKey) -> None:
        """Take the lease whoever holds it (nothing happens to a dataset with no state item). Wall-clock
        time, since a purge is handed no clock; a sync's clock only compares it with ``lease_free``."""
        update_if(
            state_handle(key),
            [
                StateItem.lease_owner.set(f"purge:{uuid.uuid4().hex}"),
                StateItem.lease_expires_at.set(time.time() + PURGE_LEASE_SECONDS),
                StateItem.lease_run_id.remove(),
            ],
            dataset_exists(),
        )
