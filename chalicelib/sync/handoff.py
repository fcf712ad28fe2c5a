"""Handing the rest of a sync to a queued job, and letting go of one whose lease is gone.

A continuation job is claimed in the same write that gives the lease up, recorded as QUEUED, then
sent; if SQS refuses it, the claim is undone so the schedule can send the dataset again.
"""

from __future__ import annotations

import logging
from typing import Protocol

from chalicelib.domain.clock import Clock
from chalicelib.domain.errors import LeaseLostError
from chalicelib.domain.model import DatasetKey, DatasetState, RunStatus, SyncCounts, SyncRun, Trigger, new_run_id
from chalicelib.sync.jobs import Job, JobQueue
from chalicelib.sync.outcome import OutcomeKind, SyncOutcome
from chalicelib.sync.progress import SyncProgress, closing_record
from chalicelib.sync.waits import ProviderWaits

logger = logging.getLogger(__name__)


class HandoffStore(Protocol):
    """What a hand-off touches: the lease turned into a claim, run records, the purge of a deleted dataset."""

    def delete_dataset(self, key: DatasetKey) -> bool: ...

    def delete_run(self, key: DatasetKey, run_id: str) -> None: ...

    def get_state(self, key: DatasetKey, consistent: bool = True) -> DatasetState | None: ...

    def hand_off(self, key: DatasetKey, owner: str, now: float, job_id: str) -> None: ...

    def mark_run(
        self, key: DatasetKey, run_id: str, status: RunStatus, *, only_if: RunStatus | tuple[RunStatus, ...]
    ) -> None: ...

    def put_run(self, run: SyncRun, retention_seconds: float) -> None: ...

    def release_queue_claim(self, key: DatasetKey, job_id: str, *, unschedule: bool = False) -> None: ...


class Handoff:
    def __init__(
        self, store: HandoffStore, queue: JobQueue, clock: Clock, waits: ProviderWaits, retention_seconds: float
    ) -> None:
        self._store = store
        self._queue = queue
        self._clock = clock
        self._waits = waits
        self._retention_seconds = retention_seconds

    def hand_off(
        self, run: SyncRun, progress: SyncProgress, *, delay_seconds: float = 0.0, reason: str | None = None
    ) -> SyncOutcome:
        """Pass the lease to a queued continuation job: the caller's budget ran out, or the provider said wait."""
        now = self._clock.now()
        job = Job(key=run.key, run_id=new_run_id(now), trigger=Trigger.BACKGROUND, created_at=now)
        self._waits.release_probe(progress)
        try:
            self._store.hand_off(run.key, progress.owner, now, job.run_id)
        except LeaseLostError as exc:  # nothing queued; if the dataset was deleted, finish the purge
            return self.abandon(run, progress, str(exc))
        self.queue_claimed_job(job, delay_seconds=delay_seconds)
        counts = progress.totals()
        status = RunStatus.DEFERRED if delay_seconds > 0 else RunStatus.HANDED_OFF
        self.finish_run(run, status, counts, reason, progress)
        return SyncOutcome(
            OutcomeKind.HANDED_OFF,
            run.run_id,
            counts,
            error=reason,
            continuation_run_id=job.run_id,
            retry_after_seconds=delay_seconds or None,
        )

    def queue_claimed_job(self, job: Job, *, delay_seconds: float = 0.0) -> bool:
        """Record and send a job whose claim the caller already holds; undo the claim if SQS refuses it."""
        self._store.put_run(
            SyncRun(
                key=job.key, run_id=job.run_id, trigger=job.trigger, status=RunStatus.QUEUED, created_at=job.created_at
            ),
            self._retention_seconds,
        )
        try:
            self._queue.send(job, delay_seconds)
        except Exception:
            logger.exception("could not queue a sync of %s", job.key.describe())
            self._store.release_queue_claim(job.key, job.run_id)
            self._store.mark_run(job.key, job.run_id, RunStatus.FAILED, only_if=RunStatus.QUEUED)
            return False
        return True

    def abandon(self, run: SyncRun, progress: SyncProgress, error: str) -> SyncOutcome:
        """Our lease is gone. If the dataset was deleted, finish the deletion (nothing of ours may outlive
        it); if it was purged and made again (a PUT with ``reset_data`` or another provider), this run
        belongs to the old account: its record goes too. Our records are fenced on our lease, so the
        purge that took it removed every one we stored."""
        logger.warning("sync lost its lease: %s run=%s", run.key.describe(), run.run_id)
        self._waits.release_probe(progress)
        counts = progress.totals()
        current = self._store.get_state(run.key)
        if current is None:
            self._store.delete_dataset(run.key)
        elif current.incarnation != progress.incarnation:
            self._store.delete_run(run.key, run.run_id)
        else:
            self.finish_run(run, RunStatus.LEASE_LOST, counts, error, progress)
        return SyncOutcome(OutcomeKind.LEASE_LOST, run.run_id, counts, error=error)

    def finish_run(
        self, run: SyncRun, status: RunStatus, counts: SyncCounts, error: str | None, progress: SyncProgress
    ) -> None:
        record = closing_record(run, status, counts, error, progress, ended_at=self._clock.now())
        self._store.put_run(record, self._retention_seconds)
