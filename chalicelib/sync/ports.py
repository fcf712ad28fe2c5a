"""What a sync may touch in storage: the union of the small Protocols its parts declare."""

from __future__ import annotations

from typing import Protocol

from chalicelib.domain.model import (
    Checkpoint,
    Connection,
    DatasetKey,
    DatasetStatus,
    RunTally,
    SyncCounts,
    SyncRun,
)
from chalicelib.store.datasets import FinishedRun
from chalicelib.sync.connection_review import ReviewStore
from chalicelib.sync.handoff import HandoffStore
from chalicelib.sync.pages import PageStore
from chalicelib.sync.waits import WaitsStore


class SyncStore(WaitsStore, PageStore, HandoffStore, ReviewStore, Protocol):
    """What a sync touches in storage: its own writes (checkpoints, the end) and those of the parts it
    hands the store to (waits, pages, hand-off, connection review)."""

    def finish_failure(
        self, key: DatasetKey, owner: str, now: float, *, run: FinishedRun, error: str, next_sync_at: float | None
    ) -> None: ...

    def finish_success(
        self,
        key: DatasetKey,
        owner: str,
        now: float,
        *,
        run: FinishedRun,
        counts: SyncCounts,
        record_count: int | None,
        record_count_delta: int,
        watermark: str | None,
        next_sync_at: float | None,
        full_pass: bool,
    ) -> None: ...

    def put_run(self, run: SyncRun, retention_seconds: float) -> None: ...

    def release_lease(
        self, key: DatasetKey, owner: str, *, drop_claim: bool, status: DatasetStatus, undo_attempt: bool = False
    ) -> None: ...

    def reset_auth_failures(self, connection: Connection) -> None: ...

    def save_checkpoint(
        self,
        key: DatasetKey,
        owner: str,
        now: float,
        ttl_seconds: float,
        checkpoint: Checkpoint,
        tally: RunTally | None = None,
    ) -> None: ...

    def sweep_unseen_records(self, key: DatasetKey, generation: str, *, owner: str) -> tuple[int, int]: ...
