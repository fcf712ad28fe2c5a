"""Removing datasets: everything a deleted connection or dataset left, state item last."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterable

from pynamodb.exceptions import DeleteError

from chalicelib.domain.model import (
    DatasetKey,
)
from chalicelib.store.items import (
    STATE_SORT_KEY,
    DatasetItem,
    RunItem,
    StateItem,
)

logger = logging.getLogger(__name__)


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
        still be found through the index and finished by calling it again.
        """
        items = list(DatasetItem.query(key.dataset_id, attributes_to_get=["pk", "sk"]))
        with DatasetItem.batch_write() as batch:
            for item in items:
                if item.sk != STATE_SORT_KEY:
                    batch.delete(item)
        runs = list(RunItem.query(key.dataset_id, attributes_to_get=["dataset_id", "run_id"]))
        with RunItem.batch_write() as run_batch:
            for run in runs:
                run_batch.delete(run)
        with contextlib.suppress(DeleteError):
            StateItem(key.dataset_id, STATE_SORT_KEY).delete()
        return bool(items or runs)
