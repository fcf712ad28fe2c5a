"""The sync engine: run one sync of one dataset while holding its lease.

Page loop: fetch -> store (upsert by upstream id, with change detection) ->
checkpoint (which also renews the lease). Deletions happen only after a complete
full pass (records the pass did not see) or from provider tombstones. When a
caller's deadline passes, the rest of the sync is handed to a queued job.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from enum import StrEnum

from chalicelib.clock import Clock
from chalicelib.config import Settings
from chalicelib.domain import (
    Checkpoint,
    Connection,
    DatasetKey,
    DatasetState,
    RunStatus,
    SyncCounts,
    SyncRun,
    Trigger,
)
from chalicelib.errors import LeaseLostError
from chalicelib.jobs import Job, JobQueue
from chalicelib.logs import log_crash
from chalicelib.policy import SyncPolicy
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.base import FetchRequest, Page, ProviderAuthError, ProviderError, ProviderTimeoutError
from chalicelib.store import DynamoStore, content_hash

logger = logging.getLogger(__name__)

_NO_DEADLINE_TIMEOUT_SECONDS = 60.0
_MIN_USEFUL_FETCH_SECONDS = 0.5
_RESTART_AFTER_FAILURES = 3


def new_run_id(now: float) -> str:
    """Sortable by creation time: a newest-first listing is a reverse range scan."""
    return f"{int(now * 1000):013d}-{uuid.uuid4().hex[:10]}"


def new_owner(role: str) -> str:
    return f"{role}:{uuid.uuid4().hex[:16]}"


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    HANDED_OFF = "handed_off"
    """The deadline passed; the sync goes on as a queued job."""
    LEASE_LOST = "lease_lost"
    TIMED_OUT = "timed_out"
    """A joiner's budget ran out while someone else's sync was still running."""


@dataclass(frozen=True)
class SyncOutcome:
    kind: OutcomeKind
    run_id: str | None
    counts: SyncCounts
    error: str | None = None
    auth_failure: bool = False
    joined: bool = False
    continuation_run_id: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.kind is OutcomeKind.SUCCEEDED


class SyncEngine:
    def __init__(
        self,
        store: DynamoStore,
        registry: ProviderRegistry,
        queue: JobQueue,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._store = store
        self._registry = registry
        self._queue = queue
        self._clock = clock
        self._settings = settings

    @property
    def retention_seconds(self) -> float:
        return self._settings.run_retention_days * 86400.0

    def execute(
        self,
        connection: Connection,
        state: DatasetState,
        policy: SyncPolicy,
        *,
        owner: str,
        run_id: str,
        trigger: Trigger,
        deadline: float | None,
        created_at: float | None = None,
    ) -> SyncOutcome:
        """Run the sync; the caller has already won the lease as ``owner``."""
        key = state.key
        provider = self._registry.get(connection.provider)
        started = self._clock.now()
        checkpoint = state.checkpoint
        if checkpoint is not None and state.consecutive_failures >= _RESTART_AFTER_FAILURES:
            # A checkpoint that keeps failing may hold a page token the provider no longer honours.
            checkpoint = None
        if checkpoint is None:
            checkpoint = Checkpoint(generation=run_id, page_token=None, since=self._since(state, started))
        run = SyncRun(
            key=key,
            run_id=run_id,
            trigger=trigger,
            status=RunStatus.RUNNING,
            created_at=created_at if created_at is not None else started,
            started_at=started,
            resumed=checkpoint.generation if checkpoint.generation != run_id else None,
        )
        counts = SyncCounts()
        logger.info("sync started: %s run=%s trigger=%s", key.describe(), run_id, trigger.value)
        try:
            self._store.put_run(run, self.retention_seconds)
            while True:
                if deadline is not None and counts.upstream_calls > 0 and self._clock.now() >= deadline:
                    return self._hand_off(run, counts, owner)
                timeout = self._fetch_timeout(deadline)
                if timeout is None:
                    return self._hand_off(run, counts, owner)
                try:
                    page = provider.fetch_page(
                        FetchRequest(
                            connection_id=connection.connection_id,
                            data_type=key.data_type,
                            credentials=connection.credentials,
                            settings=connection.settings,
                            page_token=checkpoint.page_token,
                            since=checkpoint.since,
                            timeout_seconds=timeout,
                            now_epoch=self._clock.now(),
                            sleep=self._clock.sleep,
                        )
                    )
                except ProviderTimeoutError:
                    counts = counts.plus(SyncCounts(upstream_calls=1))
                    if deadline is not None and self._clock.now() >= deadline - _MIN_USEFUL_FETCH_SECONDS:
                        return self._hand_off(run, counts, owner)
                    raise
                self._store.renew_lease(key, owner, self._clock.now(), self._settings.lease_ttl_seconds)
                counts = counts.plus(
                    self._store_page(key, page, checkpoint.generation if checkpoint.since is None else None)
                )
                checkpoint = self._advance(checkpoint, page)
                if page.next_page_token is None:
                    return self._complete(run, counts, owner, checkpoint, policy)
                if checkpoint.pages_done >= self._settings.max_pages_per_run:
                    raise ProviderError(f"pagination did not end after {checkpoint.pages_done} pages", retryable=False)
                self._store.save_checkpoint(key, owner, self._clock.now(), self._settings.lease_ttl_seconds, checkpoint)
        except LeaseLostError as exc:
            return self._abandon(run, counts, str(exc))
        except ProviderError as exc:
            return self._fail(run, counts, owner, str(exc), auth_failure=isinstance(exc, ProviderAuthError))
        except Exception as exc:  # a bug must not leave the lease held until it expires
            log_crash(logger, f"sync crashed: {key.describe()} run={run_id}", exc)
            return self._fail(run, counts, owner, f"internal error ({type(exc).__name__})", auth_failure=False)

    def _since(self, state: DatasetState, now: float) -> str | None:
        """Incremental from the watermark, except for a periodic full pass that finds upstream deletions."""
        if state.watermark is None or state.last_full_sync_at is None:
            return None
        if now - state.last_full_sync_at >= self._settings.full_resync_seconds:
            return None
        return state.watermark

    def _fetch_timeout(self, deadline: float | None) -> float | None:
        # One fetch may never outlive the lease it runs under (renewed before each page is stored).
        longest = min(_NO_DEADLINE_TIMEOUT_SECONDS, self._settings.lease_ttl_seconds / 2)
        if deadline is None:
            return longest
        remaining = deadline - self._clock.now()
        return min(remaining, longest) if remaining >= _MIN_USEFUL_FETCH_SECONDS else None

    def _store_page(self, key: DatasetKey, page: Page, generation: str | None) -> SyncCounts:
        """Upsert one page. ``generation`` is set on full passes so the final sweep can find deletions."""
        latest = {record.record_id: record for record in page.records}
        live = [r for r in latest.values() if not r.deleted]
        tombstones = [r.record_id for r in latest.values() if r.deleted]
        existing = self._store.get_record_hashes(key, latest)
        inserted = updated = unchanged = 0
        to_write = []
        for record in live:
            digest = content_hash(record.data)
            previous = existing.get(record.record_id)
            if previous is None:
                inserted += 1
            elif previous != digest:
                updated += 1
            else:
                unchanged += 1
                if generation is None:
                    continue  # incremental pass: nothing to mark, nothing to write
            to_write.append((record, digest))
        if to_write:
            self._store.write_records(key, to_write, generation=generation, now=self._clock.now())
        deleted = [rid for rid in tombstones if rid in existing]
        if deleted:
            self._store.delete_records(key, deleted)
        return SyncCounts(
            inserted=inserted, updated=updated, unchanged=unchanged, deleted=len(deleted), pages=1, upstream_calls=1
        )

    @staticmethod
    def _advance(checkpoint: Checkpoint, page: Page) -> Checkpoint:
        newest = checkpoint.max_updated_at
        for record in page.records:
            if record.updated_at and (newest is None or record.updated_at > newest):
                newest = record.updated_at
        if page.next_page_token is not None and page.next_page_token == checkpoint.page_token:
            raise ProviderError("provider returned the same page token twice", retryable=False)
        return Checkpoint(
            generation=checkpoint.generation,
            page_token=page.next_page_token,
            since=checkpoint.since,
            pages_done=checkpoint.pages_done + 1,
            max_updated_at=newest,
        )

    def _complete(
        self, run: SyncRun, counts: SyncCounts, owner: str, checkpoint: Checkpoint, policy: SyncPolicy
    ) -> SyncOutcome:
        key = run.key
        record_count: int | None = None
        full_pass = checkpoint.since is None
        if full_pass:
            self._store.renew_lease(key, owner, self._clock.now(), self._settings.lease_ttl_seconds)
            deleted, record_count = self._store.sweep_unseen_records(key, checkpoint.generation)
            counts = counts.plus(SyncCounts(deleted=deleted))
        now = self._clock.now()
        watermark = checkpoint.max_updated_at or checkpoint.since
        next_sync_at = None if policy.schedule_every_seconds is None else now + policy.schedule_every_seconds
        self._store.finish_success(
            key,
            owner,
            now,
            run_id=run.run_id,
            counts=counts,
            record_count=record_count,
            record_count_delta=counts.inserted - counts.deleted,
            watermark=watermark,
            next_sync_at=next_sync_at,
            full_pass=full_pass,
        )
        self._finish_run(run, RunStatus.SUCCEEDED, counts, None)
        logger.info("sync succeeded: %s run=%s %s", key.describe(), run.run_id, counts.as_dict())
        return SyncOutcome(OutcomeKind.SUCCEEDED, run.run_id, counts)

    def _fail(self, run: SyncRun, counts: SyncCounts, owner: str, error: str, *, auth_failure: bool) -> SyncOutcome:
        logger.warning("sync failed: %s run=%s error=%s", run.key.describe(), run.run_id, error)
        try:
            self._store.finish_failure(run.key, owner, self._clock.now(), run_id=run.run_id, error=error)
        except LeaseLostError as exc:
            return self._abandon(run, counts, str(exc))
        self._finish_run(run, RunStatus.FAILED, counts, error)
        return SyncOutcome(OutcomeKind.FAILED, run.run_id, counts, error=error, auth_failure=auth_failure)

    def _hand_off(self, run: SyncRun, counts: SyncCounts, owner: str) -> SyncOutcome:
        """The caller's budget ran out: pass the lease to a queued continuation job."""
        now = self._clock.now()
        job = Job(key=run.key, run_id=new_run_id(now), trigger=Trigger.BACKGROUND, created_at=now)
        self._store.hand_off(run.key, owner, now, job.run_id)  # LeaseLostError: nothing queued, nothing recorded
        self.queue_claimed_job(job)
        self._finish_run(run, RunStatus.HANDED_OFF, counts, None)
        return SyncOutcome(OutcomeKind.HANDED_OFF, run.run_id, counts, continuation_run_id=job.run_id)

    def queue_claimed_job(self, job: Job) -> bool:
        """Record and send a job whose claim the caller already holds; undo the claim if SQS refuses it."""
        self._store.put_run(
            SyncRun(
                key=job.key, run_id=job.run_id, trigger=job.trigger, status=RunStatus.QUEUED, created_at=job.created_at
            ),
            self.retention_seconds,
        )
        try:
            self._queue.send(job)
        except Exception:
            logger.exception("could not queue a sync of %s", job.key.describe())
            self._store.release_queue_claim(job.key, job.run_id)
            self._store.mark_run(job.key, job.run_id, RunStatus.FAILED, only_if=RunStatus.QUEUED)
            return False
        return True

    def _abandon(self, run: SyncRun, counts: SyncCounts, error: str) -> SyncOutcome:
        """Our lease is gone. If the dataset was deleted, finish the deletion: a page we stored after
        the DELETE read its keys would otherwise outlive it."""
        logger.warning("sync lost its lease: %s run=%s", run.key.describe(), run.run_id)
        if self._store.get_state(run.key) is None:
            self._store.delete_dataset(run.key)
        else:
            self._finish_run(run, RunStatus.LEASE_LOST, counts, error)
        return SyncOutcome(OutcomeKind.LEASE_LOST, run.run_id, counts, error=error)

    def _finish_run(self, run: SyncRun, status: RunStatus, counts: SyncCounts, error: str | None) -> None:
        finished = SyncRun(
            key=run.key,
            run_id=run.run_id,
            trigger=run.trigger,
            status=status,
            created_at=run.created_at,
            started_at=run.started_at,
            ended_at=self._clock.now(),
            counts=counts,
            error=error,
            resumed=run.resumed,
        )
        self._store.put_run(finished, self.retention_seconds)
