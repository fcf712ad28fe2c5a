"""Sync runs, newest first, kept for the retention period (the table's TTL removes them)."""

from __future__ import annotations

import contextlib

from pynamodb.exceptions import DeleteError

from chalicelib.domain.model import (
    DatasetKey,
    RunStatus,
    SyncRun,
)
from chalicelib.store.conditions import (
    update_if,
)
from chalicelib.store.convert import (
    run_from_item,
    run_item,
)
from chalicelib.store.items import (
    RunItem,
)


class RunStore:
    """Sync runs, newest first, kept for the retention period."""

    def put_run(self, run: SyncRun, retention_seconds: float) -> None:
        run_item(run, retention_seconds).save()

    def delete_run(self, key: DatasetKey, run_id: str) -> None:
        with contextlib.suppress(DeleteError):
            RunItem(key.dataset_id, run_id).delete()

    def mark_run(
        self, key: DatasetKey, run_id: str, status: RunStatus, *, only_if: RunStatus | tuple[RunStatus, ...]
    ) -> None:
        """Move a run's record to ``status`` if it is still in (one of) ``only_if``; a missing record stays missing."""
        allowed = only_if if isinstance(only_if, tuple) else (only_if,)
        update_if(
            RunItem(key.dataset_id, run_id),
            [RunItem.status.set(status.value)],
            RunItem.status.is_in(*(s.value for s in allowed)),
        )

    def list_runs(self, key: DatasetKey, limit: int, now: float) -> list[SyncRun]:
        """Newest first. Expired runs are skipped: TTL deletion is lazy (and moto never does it)."""
        items = RunItem.query(
            key.dataset_id,
            filter_condition=RunItem.expires_at > int(now),
            scan_index_forward=False,
            page_size=limit,
        )
        runs: list[SyncRun] = []
        for item in items:
            runs.append(run_from_item(item, key))
            if len(runs) >= limit:
                break
        return runs

    def get_run(self, key: DatasetKey, run_id: str, now: float) -> SyncRun | None:
        try:
            item = RunItem.get(key.dataset_id, run_id)
        except RunItem.DoesNotExist:
            return None
        if item.expires_at <= now:
            return None
        return run_from_item(item, key)
