"""The sync engine: run one sync of one dataset while holding its lease.

Page loop: fetch -> store (upsert by upstream id, with change detection) ->
checkpoint (which also renews the lease). Deletions happen only after a complete
full pass (records the pass did not see) or from provider tombstones. When a
caller's deadline passes, the rest of the sync is handed to a queued job.

The parts live beside it: ``waits.py`` (waiting on the provider, keeping the lease), ``fetch.py`` (one
page with retries), ``pages.py`` (storing a page, checkpoints), ``handoff.py`` (continuation jobs, lost
leases), ``connection_review.py`` (credentials refused), ``outcome.py`` and ``progress.py`` (values).
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable

from chalicelib.domain.breaker import Admission
from chalicelib.domain.clock import Clock
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import LeaseLostError
from chalicelib.domain.gate import Start
from chalicelib.domain.logs import log_crash
from chalicelib.domain.model import (
    Checkpoint,
    Connection,
    DatasetState,
    DatasetStatus,
    RunStatus,
    SyncCounts,
    SyncRun,
    Trigger,
)
from chalicelib.domain.policy import SyncPolicy, failure_backoff_seconds
from chalicelib.domain.records import capped_watermark, pass_started_at
from chalicelib.domain.upstream import (
    DataTypeSpec,
    FetchRequest,
    ProviderAuthError,
    ProviderError,
    ProviderGrantError,
    ProviderTimeoutError,
)
from chalicelib.providers import ProviderRegistry
from chalicelib.store.datasets import FinishedRun
from chalicelib.sync.connection_review import ConnectionReview
from chalicelib.sync.fetch import CredentialSource, PageFetcher
from chalicelib.sync.handoff import Handoff
from chalicelib.sync.jobs import Job, JobQueue
from chalicelib.sync.outcome import OutcomeKind, SyncOutcome
from chalicelib.sync.pacing import ProviderGuard, SyncEnd, connection_scope_of
from chalicelib.sync.pages import advance, first_checkpoint, store_page
from chalicelib.sync.ports import SyncStore
from chalicelib.sync.progress import SyncProgress, closing_record, starting_run
from chalicelib.sync.waits import MIN_USEFUL_FETCH_SECONDS, ProviderWaits, WaitRequired

__all__ = ["CredentialSource", "OutcomeKind", "SyncEngine", "SyncOutcome"]

logger = logging.getLogger(__name__)


def _status_after_deferral(state: DatasetState) -> DatasetStatus:
    """A sync that never started leaves the dataset as the last run left it."""
    return DatasetStatus.FAILED if state.last_run_status is RunStatus.FAILED else DatasetStatus.IDLE


class SyncEngine:
    def __init__(
        self,
        store: SyncStore,
        registry: ProviderRegistry,
        queue: JobQueue,
        clock: Clock,
        settings: Settings,
        guard: ProviderGuard,
        random_unit: Callable[[], float] = random.random,
        *,
        credentials: CredentialSource,
    ) -> None:
        self._store = store
        self._registry = registry
        self._clock = clock
        self._settings = settings
        self._guard = guard
        self._waits = ProviderWaits(store, clock, settings, guard, random_unit)
        self._fetcher = PageFetcher(clock, settings, guard, self._waits, credentials)
        self._handoff = Handoff(store, queue, clock, self._waits, self.retention_seconds)
        self._review = ConnectionReview(store, registry, settings)

    @property
    def retention_seconds(self) -> float:
        return self._settings.run_retention_days * 86400.0

    def queue_claimed_job(self, job: Job, *, delay_seconds: float = 0.0) -> bool:
        """Record and send a job whose claim the caller already holds; undo the claim if SQS refuses it."""
        return self._handoff.queue_claimed_job(job, delay_seconds=delay_seconds)

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
        """Run the sync; the caller has already won the lease as ``owner``.

        First the provider's breaker and concurrency slots are asked (a refusal gives the
        lease back and returns DEFERRED); then each page takes a token from the provider's
        bucket and is retried with backoff on 429, 5xx, timeouts and connection errors.
        Every wait is short and the lease (and slot) are renewed between waits, so a sync
        that waits never outlives its lease.
        """
        now = self._clock.now()
        spec = self._registry.get(connection.provider).data_types().get(state.key.data_type)
        spec = spec or DataTypeSpec(state.key.data_type)
        ttl = self._settings.lease_ttl_seconds
        if state.prior_run_id and state.prior_run_id != run_id:
            # Its process died holding the lease (a redelivery of the same job goes on with its run instead).
            self._store.mark_run(
                state.key, state.prior_run_id, RunStatus.ABANDONED, only_if=(RunStatus.QUEUED, RunStatus.RUNNING)
            )
        progress = SyncProgress(
            key=state.key,
            owner=owner,
            provider=connection.provider,
            deadline=deadline,
            renew_at=now + self._waits.renew_every,
            connection_scope=connection_scope_of(connection.user_id, connection.connection_id),
            weight=spec.weight,
            complete_listing=spec.complete_listing,
            safe_until=(state.lease_expires_at if state.lease_expires_at is not None else now + ttl) - ttl / 2,
            incarnation=state.incarnation,
            run_id=run_id,
            job_run=state.queued_job_id is not None and state.queued_job_id == run_id,
        )
        try:
            start = self._waits.start(progress)
            if not isinstance(start, Start):
                busy = f"provider {progress.provider!r} is at its rate limit or starting many syncs at once"
                return self._defer_start(progress, state, start, busy)
            admission = start.admission
            if not admission.allowed:
                outage = f"provider {progress.provider!r} is failing (circuit open after repeated errors)"
                return self._defer_start(progress, state, admission.retry_after_seconds, outage, breaker_open=True)
            progress.probe = admission.probe
            progress.token_in_hand = start.take is not None and start.take.granted
            refusal = None if start.slot_wait is None else self._waits.wait_for_slot(progress)
        except LeaseLostError as exc:  # taken over while waiting for a slot (or the dataset was deleted)
            self._waits.release_probe(progress)
            return SyncOutcome(OutcomeKind.LEASE_LOST, None, SyncCounts(), error=str(exc))
        except Exception:
            with contextlib.suppress(Exception):  # never leave the lease held for a failed start
                self._store.release_lease(state.key, owner, drop_claim=False, status=_status_after_deferral(state))
            raise
        if refusal is not None:
            busy = f"provider {progress.provider!r} is running its most syncs at once"
            return self._defer_start(progress, state, refusal, busy)
        progress.slot_held = True
        try:
            return self._run(connection, state, policy, run_id, trigger, created_at, admission, progress)
        finally:
            if progress.slot_held:  # not given back by the sync's final write (handed off, lease lost, crashed)
                self._guard.finish(progress.provider, owner, None)

    def _defer_start(
        self,
        progress: SyncProgress,
        state: DatasetState,
        retry_after: float,
        reason: str,
        *,
        breaker_open: bool = False,
    ) -> SyncOutcome:
        # Nothing was fetched: hand the lease back. A breaker refusal also drops the job's claim:
        # the dataset stays due and the schedule sends it again once the provider answers. A job that
        # comes back later did not use up an attempt.
        logger.info("sync deferred: %s (%s)", progress.key.describe(), reason)
        self._waits.release_probe(progress)
        with contextlib.suppress(LeaseLostError):
            self._store.release_lease(
                progress.key,
                progress.owner,
                drop_claim=breaker_open,
                status=_status_after_deferral(state),
                undo_attempt=progress.job_run and not breaker_open,
            )
        return SyncOutcome(
            OutcomeKind.DEFERRED,
            None,
            SyncCounts(),
            error=reason,
            retry_after_seconds=retry_after,
            breaker_open=breaker_open,
        )

    def _run(
        self,
        connection: Connection,
        state: DatasetState,
        policy: SyncPolicy,
        run_id: str,
        trigger: Trigger,
        created_at: float | None,
        admission: Admission,
        progress: SyncProgress,
    ) -> SyncOutcome:
        key = state.key
        owner = progress.owner
        deadline = progress.deadline
        provider = self._registry.get(progress.provider)
        started = self._clock.now()
        spec = provider.data_types().get(key.data_type) or DataTypeSpec(key.data_type)
        checkpoint = first_checkpoint(
            state,
            run_id,
            started,
            incremental=spec.incremental,
            full_resync_seconds=self._settings.full_resync_seconds,
        )
        run = starting_run(state, checkpoint, progress, trigger=trigger, created_at=created_at, started=started)
        logger.info("sync started: %s run=%s trigger=%s", key.describe(), run_id, trigger.value)
        try:
            credentials = self._fetcher.open_credentials(connection, provider, progress, rejected=False)
            while True:
                if deadline is not None and progress.upstream_calls > 0 and self._clock.now() >= deadline:
                    return self._handoff.hand_off(run, progress)
                request = FetchRequest(
                    connection_id=connection.connection_id,
                    data_type=key.data_type,
                    credentials=credentials,
                    settings=connection.settings,
                    page_token=checkpoint.page_token,
                    since=checkpoint.since,
                    timeout_seconds=0.0,
                    now_epoch=0.0,
                    sleep=self._clock.sleep,
                )
                page, credentials = self._fetcher.fetch(connection, provider, request, progress, admission.state_after)
                self._waits.fence(progress)
                generation = checkpoint.generation if checkpoint.since is None else None
                counts = store_page(self._store, self._clock, key, page, generation, progress)
                progress.counts = progress.counts.plus(counts)
                checkpoint = advance(checkpoint, page)
                if page.next_page_token is None:
                    return self._complete(run, progress, checkpoint, policy, connection)
                if checkpoint.pages_done >= self._settings.max_pages_per_run:
                    raise ProviderError(f"pagination did not end after {checkpoint.pages_done} pages", retryable=False)
                now = self._clock.now()
                self._store.save_checkpoint(
                    key, owner, now, self._settings.lease_ttl_seconds, checkpoint, progress.tally()
                )
                progress.safe_until = self._clock.now() + self._settings.lease_ttl_seconds / 2
                if not progress.run_recorded:  # a sync of several pages shows as running from its second page
                    self._store.put_run(run, self.retention_seconds)
                    progress.run_recorded = True
        except WaitRequired as wait:
            return self._handoff.hand_off(run, progress, delay_seconds=wait.seconds, reason=wait.reason)
        except LeaseLostError as exc:
            return self._handoff.abandon(run, progress, str(exc))
        except ProviderTimeoutError as exc:
            if deadline is not None and self._clock.now() >= deadline - MIN_USEFUL_FETCH_SECONDS:
                return self._handoff.hand_off(run, progress)
            return self._fail(run, progress, str(exc), connection, policy, state, provider_error=exc)
        except ProviderError as exc:
            return self._fail(run, progress, str(exc), connection, policy, state, provider_error=exc)
        except Exception as exc:  # a bug must not leave the lease held until it expires
            log_crash(logger, f"sync crashed: {key.describe()} run={run_id}", exc)
            return self._fail(run, progress, f"internal error ({type(exc).__name__})", connection, policy, state)

    def _complete(
        self,
        run: SyncRun,
        progress: SyncProgress,
        checkpoint: Checkpoint,
        policy: SyncPolicy,
        connection: Connection,
    ) -> SyncOutcome:
        key = run.key
        owner = progress.owner
        record_count: int | None = None
        full_pass = checkpoint.since is None
        if full_pass and progress.complete_listing:
            self._waits.fence(progress)
            deleted, record_count = self._store.sweep_unseen_records(key, checkpoint.generation, owner=owner)
            progress.counts = progress.counts.plus(SyncCounts(deleted=deleted))
        counts = progress.totals()
        now = self._clock.now()
        watermark = capped_watermark(
            checkpoint.max_updated_at,
            checkpoint.since,
            pass_started_at=pass_started_at(checkpoint.generation, run.started_at or now),
            lookback_seconds=self._settings.watermark_lookback_seconds,
        )
        next_sync_at = None if policy.schedule_every_seconds is None else now + policy.schedule_every_seconds
        end = SyncEnd(True, now - (run.started_at or now), None, now)
        self._store.finish_success(
            key,
            owner,
            now,
            run=self._finished(run, RunStatus.SUCCEEDED, counts, None, progress, end),
            counts=counts,
            record_count=record_count,
            record_count_delta=0,  # every page write counted its own records (``RecordStore.write_records``)
            watermark=watermark,
            next_sync_at=next_sync_at,
            full_pass=full_pass,
        )
        self._slot_given_back(progress)
        self._waits.observe_limits(progress)
        if connection.auth_failures:
            self._store.reset_auth_failures(connection)

        logger.info("sync succeeded: %s run=%s %s", key.describe(), run.run_id, counts.as_dict())
        return SyncOutcome(OutcomeKind.SUCCEEDED, run.run_id, counts)

    def _slot_given_back(self, progress: SyncProgress) -> None:
        """The final transaction gave the slot back (when it held one)."""
        if progress.slot_held:
            progress.slot_held = False
            self._guard.slot_given_back(progress.provider, progress.owner)

    def _fail(
        self,
        run: SyncRun,
        progress: SyncProgress,
        error: str,
        connection: Connection,
        policy: SyncPolicy,
        state: DatasetState,
        *,
        provider_error: ProviderError | None = None,
    ) -> SyncOutcome:
        logger.warning("sync failed: %s run=%s error=%s", run.key.describe(), run.run_id, error)
        counts = progress.totals()
        now = self._clock.now()
        if provider_error is not None and provider_error.retryable:
            self._guard.record_failure(connection.provider, error, now)
            progress.probe = False  # a failed probe re-opened the breaker
        self._waits.release_probe(progress)
        next_sync_at = None
        if policy.schedule_every_seconds is not None:
            next_sync_at = now + failure_backoff_seconds(
                state.consecutive_failures + 1,
                base_seconds=self._settings.failure_backoff_base_seconds,
                max_seconds=self._settings.failure_backoff_max_seconds,
            )
        end = SyncEnd(False, now - (run.started_at or now), error, now)
        try:
            self._store.finish_failure(
                run.key,
                progress.owner,
                now,
                run=self._finished(run, RunStatus.FAILED, counts, error, progress, end),
                error=error,
                next_sync_at=next_sync_at,
            )
            self._slot_given_back(progress)
        except LeaseLostError as exc:
            return self._handoff.abandon(run, progress, str(exc))
        self._waits.observe_limits(progress)

        if isinstance(provider_error, ProviderGrantError):
            # The credential keeper already marked the connection NEEDS_REVIEW: retrying cannot help.
            logger.warning("connection %s/%s needs review: %s", connection.user_id, connection.connection_id, error)
            self._review.unschedule(connection, now)
        elif isinstance(provider_error, ProviderAuthError):
            self._review.count_auth_failure(connection, error, now)
        return SyncOutcome(OutcomeKind.FAILED, run.run_id, counts, error=error)

    def _finished(
        self,
        run: SyncRun,
        status: RunStatus,
        counts: SyncCounts,
        error: str | None,
        progress: SyncProgress,
        end: SyncEnd,
    ) -> FinishedRun:
        """The run's final record, with the slot back and the sync counted in the same write (while held)."""
        finished = closing_record(run, status, counts, error, progress, ended_at=self._clock.now())
        if not progress.slot_held:
            return FinishedRun(finished, self.retention_seconds)
        return FinishedRun(
            finished, self.retention_seconds, self._guard.end_update(progress.provider, progress.owner, end)
        )
