"""The sync engine: run one sync of one dataset while holding its lease.

Page loop: fetch -> store (upsert by upstream id, with change detection) ->
checkpoint (which also renews the lease). Deletions happen only after a complete
full pass (records the pass did not see) or from provider tombstones. When a
caller's deadline passes, the rest of the sync is handed to a queued job.
"""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, Protocol

from chalicelib.domain.breaker import Admission, BreakerState
from chalicelib.domain.clock import Clock
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import LeaseLostError
from chalicelib.domain.logs import log_crash
from chalicelib.domain.model import (
    Checkpoint,
    Connection,
    ConnectionStatus,
    DatasetKey,
    DatasetState,
    DatasetStatus,
    RunStatus,
    SyncCounts,
    SyncRun,
    Trigger,
    new_run_id,
)
from chalicelib.domain.policy import SyncPolicy, failure_backoff_seconds
from chalicelib.domain.records import capped_watermark, describe_skipped, pass_started_at, record_problem
from chalicelib.domain.retry import backoff_delay
from chalicelib.domain.upstream import (
    DataTypeSpec,
    FetchRequest,
    Page,
    ProviderAuthError,
    ProviderError,
    ProviderGrantError,
    ProviderRateLimitError,
    ProviderTimeoutError,
)
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.base import Provider, token_client_of
from chalicelib.store.dynamo import DynamoStore, FinishedRun, content_hash
from chalicelib.sync.jobs import Job, JobQueue
from chalicelib.sync.pacing import ProviderGuard, SyncEnd, connection_scope_of

logger = logging.getLogger(__name__)

_NO_DEADLINE_TIMEOUT_SECONDS = 60.0
_MIN_USEFUL_FETCH_SECONDS = 0.5
_RESTART_AFTER_FAILURES = 3
_MIN_TOKEN_WAIT_SECONDS = 0.001
_SKIPPED_SAMPLES = 10
"""How many skipped records a run names (the count covers them all)."""


class CredentialSource(Protocol):
    """Where a sync gets the connection's credentials in plain text (they are sealed at rest)."""

    def credentials_for(
        self, connection: Connection, provider: Provider, *, deadline: float | None, rejected: bool = False
    ) -> Mapping[str, Any]:
        """Open the credentials; for an OAuth2 provider, refresh them first when the access token is
        expiring, or when ``rejected`` (the provider just answered 401 to them). A refresh is single
        flight across Lambdas. Raises ``ProviderGrantError`` when the refresh token was refused."""
        ...


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    HANDED_OFF = "handed_off"
    """The deadline passed (or the provider asked us to wait); the sync goes on as a queued job."""
    DEFERRED = "deferred"
    """Not started: the provider's breaker is open or all its slots are busy. Nothing was fetched."""
    LEASE_LOST = "lease_lost"
    TIMED_OUT = "timed_out"
    """A joiner's budget ran out while someone else's sync was still running."""


@dataclass(frozen=True)
class SyncOutcome:
    kind: OutcomeKind
    run_id: str | None
    counts: SyncCounts
    error: str | None = None
    joined: bool = False
    continuation_run_id: str | None = None
    retry_after_seconds: float | None = None
    """For DEFERRED: when trying again makes sense."""
    breaker_open: bool = False
    """For DEFERRED: the provider is failing (the job is dropped; the schedule sends it again later)."""

    @property
    def succeeded(self) -> bool:
        return self.kind is OutcomeKind.SUCCEEDED


class _WaitRequired(Exception):
    """The provider's limits say wait longer than this caller can: continue as a delayed job."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds
        self.reason = reason


@dataclass
class _Progress:
    """One sync as it runs: what it holds (lease, slot, probe) and what it has done so far."""

    key: DatasetKey
    owner: str
    provider: str
    deadline: float | None
    renew_at: float
    """When the lease (and slot) are next renewed."""
    slot_held: bool = False
    probe: bool = False
    """This sync is the half-open breaker's probe and has not reported yet."""
    counts: SyncCounts = field(default_factory=SyncCounts)
    upstream_calls: int = 0
    provider_answered: bool = False
    """Any answer at all (a page, a 4xx, a 401): the breaker measures reachability, not usefulness."""
    connection_scope: str = ""
    """``user#connection``: the limit scope of providers whose limits are per API key."""
    weight: int = 1
    """What one call costs against the provider's rate windows."""
    feedback: Mapping[str, str] | None = None
    """The last answer's headers, not yet applied to the shared limits (rides on the next take)."""
    refreshed: bool = False
    """The credentials were refreshed after a 401 in this sync (only once: a second 401 is real)."""
    skipped_samples: list[str] = field(default_factory=list)
    token_in_hand: bool = False
    """The start's write already took the first call's weight."""
    safe_until: float = 0.0
    """Until then the lease is surely ours (half its TTL left): writing records needs no fence write first."""
    run_recorded: bool = False
    """The run's RUNNING record is written (at its first checkpoint: a one-page sync writes its run once)."""
    complete_listing: bool = True
    """The provider lists every record on a full pass (so unseen records may be swept)."""

    def totals(self) -> SyncCounts:
        return replace(self.counts, upstream_calls=self.upstream_calls)


def _status_after_deferral(state: DatasetState) -> DatasetStatus:
    """A sync that never started leaves the dataset as the last run left it."""
    return DatasetStatus.FAILED if state.last_run_status is RunStatus.FAILED else DatasetStatus.IDLE


class SyncEngine:
    def __init__(
        self,
        store: DynamoStore,
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
        self._queue = queue
        self._clock = clock
        self._settings = settings
        self._guard = guard
        self._random = random_unit
        self._credentials = credentials

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
        progress = _Progress(
            key=state.key,
            owner=owner,
            provider=connection.provider,
            deadline=deadline,
            renew_at=now + self._renew_every,
            connection_scope=connection_scope_of(connection.user_id, connection.connection_id),
            weight=spec.weight,
            complete_listing=spec.complete_listing,
            safe_until=(state.lease_expires_at if state.lease_expires_at is not None else now + ttl) - ttl / 2,
        )
        try:
            start = self._guard.start(progress.provider, owner, now, weight=progress.weight)
            admission = start.admission
            if not admission.allowed:
                outage = self._outage_message(progress.provider)
                return self._defer_start(progress, state, admission.retry_after_seconds, outage, breaker_open=True)
            progress.probe = admission.probe
            progress.token_in_hand = start.take is not None and start.take.granted
            refusal = None if start.slot_wait is None else self._wait_for_slot(progress)
        except LeaseLostError as exc:  # taken over while waiting for a slot (or the dataset was deleted)
            self._release_probe(progress)
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

    @property
    def _renew_every(self) -> float:
        return self._settings.lease_ttl_seconds / 4

    @property
    def _longest_wait(self) -> float:
        """One wait in place: short enough that a renewal always comes before the lease expires."""
        return min(self._settings.provider_wait_max_seconds, self._settings.lease_ttl_seconds / 6)

    def _outage_message(self, provider: str) -> str:
        return f"provider {provider!r} is failing (circuit open after repeated errors)"

    def _defer_start(
        self, progress: _Progress, state: DatasetState, retry_after: float, reason: str, *, breaker_open: bool = False
    ) -> SyncOutcome:
        # Nothing was fetched: hand the lease back. A breaker refusal also drops the job's claim:
        # the dataset stays due and the schedule sends it again once the provider answers.
        logger.info("sync deferred: %s (%s)", progress.key.describe(), reason)
        self._release_probe(progress)
        with contextlib.suppress(LeaseLostError):
            self._store.release_lease(
                progress.key, progress.owner, drop_claim=breaker_open, status=_status_after_deferral(state)
            )
        return SyncOutcome(
            OutcomeKind.DEFERRED,
            None,
            SyncCounts(),
            error=reason,
            retry_after_seconds=retry_after,
            breaker_open=breaker_open,
        )

    def _release_probe(self, progress: _Progress) -> None:
        """A probe that will not report (deferred, handed off) frees the half-open slot for the next caller."""
        if progress.probe:
            progress.probe = False
            self._guard.release_probe(progress.provider, progress.owner)

    def _wait_for_slot(self, progress: _Progress) -> float | None:
        """Wait (briefly) for one of the provider's concurrency slots; the wait left when giving up."""
        waited = 0.0
        while True:
            wait = self._guard.take_slot(progress.provider, progress.owner, self._clock.now())
            if wait is None:
                return None
            poll = min(max(wait, 0.05), 0.5 + 0.5 * self._random())
            if waited + poll > self._settings.provider_wait_max_seconds or not self._can_wait(poll, progress):
                return max(min(wait, self._settings.lease_ttl_seconds), 1.0)
            self._pause(poll, progress)
            waited += poll

    def _can_wait(self, seconds: float, progress: _Progress) -> bool:
        if seconds > self._longest_wait:
            return False
        deadline = progress.deadline
        return deadline is None or self._clock.now() + seconds < deadline - _MIN_USEFUL_FETCH_SECONDS

    def _pause(self, seconds: float, progress: _Progress) -> None:
        self._keep_alive(progress)
        self._clock.sleep(seconds)

    def _keep_alive(self, progress: _Progress) -> None:
        """Renew the lease (and our slot) every quarter of the lease TTL, between waits and fetches."""
        now = self._clock.now()
        if now < progress.renew_at:
            return
        self._store.renew_lease(progress.key, progress.owner, now, self._settings.lease_ttl_seconds)
        progress.safe_until = now + self._settings.lease_ttl_seconds / 2
        if progress.slot_held:
            wait = self._guard.take_slot(progress.provider, progress.owner, now)
            if wait is not None:  # our slot expired and others filled it: stop calling, continue later
                progress.slot_held = False
                raise _WaitRequired(wait, f"provider {progress.provider!r} slot was lost")
        progress.renew_at = now + self._renew_every

    def _run(
        self,
        connection: Connection,
        state: DatasetState,
        policy: SyncPolicy,
        run_id: str,
        trigger: Trigger,
        created_at: float | None,
        admission: Admission,
        progress: _Progress,
    ) -> SyncOutcome:
        key = state.key
        owner = progress.owner
        deadline = progress.deadline
        provider = self._registry.get(progress.provider)
        started = self._clock.now()
        spec = provider.data_types().get(key.data_type) or DataTypeSpec(key.data_type)
        checkpoint = state.checkpoint
        if checkpoint is not None and state.consecutive_failures >= _RESTART_AFTER_FAILURES:
            # A checkpoint that keeps failing may hold a page token the provider no longer honours.
            checkpoint = None
        if checkpoint is None:
            # A provider that ignores ``since`` lists everything every time: that is a full pass.
            since = self._since(state, started) if spec.incremental else None
            checkpoint = Checkpoint(generation=run_id, page_token=None, since=since)
        run = SyncRun(
            key=key,
            run_id=run_id,
            trigger=trigger,
            status=RunStatus.RUNNING,
            created_at=created_at if created_at is not None else started,
            started_at=started,
            resumed=checkpoint.generation if checkpoint.generation != run_id else None,
        )
        logger.info("sync started: %s run=%s trigger=%s", key.describe(), run_id, trigger.value)
        try:
            credentials = self._open_credentials(connection, provider, progress, rejected=False)
            while True:
                if deadline is not None and progress.upstream_calls > 0 and self._clock.now() >= deadline:
                    return self._hand_off(run, progress)
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
                page, credentials = self._fetch(connection, provider, request, progress, admission.state_after)
                self._fence(progress)
                progress.counts = progress.counts.plus(
                    self._store_page(key, page, checkpoint.generation if checkpoint.since is None else None, progress)
                )
                checkpoint = self._advance(checkpoint, page)
                if page.next_page_token is None:
                    return self._complete(run, progress, checkpoint, policy, connection)
                if checkpoint.pages_done >= self._settings.max_pages_per_run:
                    raise ProviderError(f"pagination did not end after {checkpoint.pages_done} pages", retryable=False)
                self._store.save_checkpoint(key, owner, self._clock.now(), self._settings.lease_ttl_seconds, checkpoint)
                progress.safe_until = self._clock.now() + self._settings.lease_ttl_seconds / 2
                if not progress.run_recorded:  # a sync of several pages shows as running from its second page
                    self._store.put_run(run, self.retention_seconds)
                    progress.run_recorded = True
        except _WaitRequired as wait:
            return self._hand_off(run, progress, delay_seconds=wait.seconds, reason=wait.reason)
        except LeaseLostError as exc:
            return self._abandon(run, progress, str(exc))
        except ProviderTimeoutError as exc:
            if deadline is not None and self._clock.now() >= deadline - _MIN_USEFUL_FETCH_SECONDS:
                return self._hand_off(run, progress)
            return self._fail(run, progress, str(exc), connection, policy, state, provider_error=exc)
        except ProviderError as exc:
            return self._fail(run, progress, str(exc), connection, policy, state, provider_error=exc)
        except Exception as exc:  # a bug must not leave the lease held until it expires
            log_crash(logger, f"sync crashed: {key.describe()} run={run_id}", exc)
            return self._fail(run, progress, f"internal error ({type(exc).__name__})", connection, policy, state)

    def _open_credentials(
        self, connection: Connection, provider: Provider, progress: _Progress, *, rejected: bool
    ) -> Mapping[str, Any]:
        return self._credentials.credentials_for(connection, provider, deadline=progress.deadline, rejected=rejected)

    def _fetch(
        self,
        connection: Connection,
        provider: Provider,
        request: FetchRequest,
        progress: _Progress,
        breaker_seen: BreakerState,
    ) -> tuple[Page, Mapping[str, Any]]:
        """One page: a token per attempt, retries with full-jitter backoff, the provider's own waits honoured.

        For an OAuth2 provider the access token is refreshed before it expires, and once after a 401;
        the (possibly new) credentials come back with the page for the pages after it.
        """
        attempt = 0
        token_client = token_client_of(provider)
        while True:
            if token_client is not None and token_client.needs_refresh(request.credentials, self._clock.now()):
                request = replace(
                    request, credentials=self._open_credentials(connection, provider, progress, rejected=False)
                )
            self._take_token(progress)
            self._keep_alive(progress)
            timeout = self._fetch_timeout(progress.deadline)
            if timeout is None:
                raise _WaitRequired(0.0, "the caller's time budget ran out")
            progress.upstream_calls += 1
            try:
                page = provider.fetch_page(replace(request, timeout_seconds=timeout, now_epoch=self._clock.now()))
            except ProviderError as exc:
                progress.feedback = exc.response_headers or None
                if isinstance(exc, ProviderRateLimitError) and exc.retry_after_seconds:
                    # Every worker waits, not only this one (also when this was our last attempt).
                    self._guard.hold(
                        progress.provider,
                        self._clock.now() + exc.retry_after_seconds,
                        connection_scope=progress.connection_scope,
                    )
                    progress.feedback = None  # the hold already says it; applied again later it would wait twice
                if (
                    isinstance(exc, ProviderAuthError)
                    and not isinstance(exc, ProviderGrantError)
                    and exc.upstream_status == 401
                    and token_client is not None
                    and not progress.refreshed
                ):
                    # The access token may have been revoked early or rotated elsewhere: refresh once.
                    progress.refreshed = True
                    self._provider_answered(progress, breaker_seen)
                    request = replace(
                        request, credentials=self._open_credentials(connection, provider, progress, rejected=True)
                    )
                    continue
                if not exc.retryable:
                    if exc.upstream_status is not None:  # an answer; a locally raised error proves nothing
                        self._provider_answered(progress, breaker_seen)
                    raise
                attempt += 1
                if attempt >= self._settings.retry_max_attempts:
                    raise
                self._back_off(exc, attempt, progress)
                continue
            self._provider_answered(progress, breaker_seen)
            progress.feedback = page.response_headers or None
            return page, request.credentials

    def _provider_answered(self, progress: _Progress, breaker_seen: BreakerState) -> None:
        if not progress.provider_answered:
            progress.provider_answered = True
            progress.probe = False  # the probe has reported
            self._guard.record_success(progress.provider, breaker_seen)

    def _back_off(self, exc: ProviderError, attempt: int, progress: _Progress) -> None:
        provider_wait = exc.retry_after_seconds
        delay = backoff_delay(
            attempt - 1,
            base_seconds=self._settings.retry_base_seconds,
            max_seconds=self._settings.retry_max_delay_seconds,
            random_unit=self._random(),
            provider_wait_seconds=provider_wait,
        )
        if self._can_wait(delay, progress):
            logger.info("retrying %s in %.2fs after: %s", progress.provider, delay, exc)
            self._pause(delay, progress)
            return
        if isinstance(exc, ProviderRateLimitError) or provider_wait is not None:
            raise _WaitRequired(delay, f"provider {progress.provider!r} asked to wait {delay:.0f}s") from None
        raise exc

    def _take_token(self, progress: _Progress) -> None:
        if progress.token_in_hand:  # taken by the start's own write
            progress.token_in_hand = False
            return
        waited = 0.0
        while True:
            wait = self._guard.take_token(
                progress.provider,
                self._clock.now(),
                weight=progress.weight,
                connection_scope=progress.connection_scope,
                feedback=progress.feedback,
            )
            progress.feedback = None  # applied by that write, granted or not
            if wait is None:
                return
            # A little jitter, so workers waiting for the same token do not all ask at the same instant.
            pause = max(wait, _MIN_TOKEN_WAIT_SECONDS) * (1.0 + 0.2 * self._random())
            if waited + pause > self._settings.provider_wait_max_seconds or not self._can_wait(pause, progress):
                raise _WaitRequired(wait, f"provider {progress.provider!r} is at its rate limit")
            self._pause(pause, progress)
            waited += pause

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

    def _store_page(self, key: DatasetKey, page: Page, generation: str | None, progress: _Progress) -> SyncCounts:
        """Upsert one page. ``generation`` is set on full passes so the final sweep can find deletions.

        Records the provider could not parse, and records the store cannot hold (an id over
        512 bytes, more than 350 KB of JSON), are skipped and named in the run; the rest are kept.
        """
        skipped = list(page.skipped)
        latest = {}
        for record in page.records:
            problem = record_problem(record)
            if problem is None:
                latest[record.record_id] = record
            else:
                skipped.append(problem)
        for item in skipped:
            if len(progress.skipped_samples) < _SKIPPED_SAMPLES:
                progress.skipped_samples.append(describe_skipped(item))
        if skipped:
            logger.warning("sync of %s skipped %d record(s): %s", key.describe(), len(skipped), skipped[0].reason)
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
            inserted=inserted,
            updated=updated,
            unchanged=unchanged,
            deleted=len(deleted),
            pages=1,
            skipped=len(skipped),
        )

    @staticmethod
    def _advance(checkpoint: Checkpoint, page: Page) -> Checkpoint:
        newest = checkpoint.max_updated_at
        for stamp in [*(record.updated_at for record in page.records), page.covered_until]:
            if stamp and (newest is None or stamp > newest):
                newest = stamp
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
        self,
        run: SyncRun,
        progress: _Progress,
        checkpoint: Checkpoint,
        policy: SyncPolicy,
        connection: Connection,
    ) -> SyncOutcome:
        key = run.key
        owner = progress.owner
        record_count: int | None = None
        full_pass = checkpoint.since is None
        if full_pass and progress.complete_listing:
            self._fence(progress)
            deleted, record_count = self._store.sweep_unseen_records(key, checkpoint.generation)
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
            record_count_delta=counts.inserted - counts.deleted,
            watermark=watermark,
            next_sync_at=next_sync_at,
            full_pass=full_pass,
        )
        progress.slot_held = False  # given back by that write
        self._observe_limits(progress)
        if connection.auth_failures:
            self._store.reset_auth_failures(connection)

        logger.info("sync succeeded: %s run=%s %s", key.describe(), run.run_id, counts.as_dict())
        return SyncOutcome(OutcomeKind.SUCCEEDED, run.run_id, counts)

    def _fail(
        self,
        run: SyncRun,
        progress: _Progress,
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
        self._release_probe(progress)
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
            progress.slot_held = False  # given back by that write
        except LeaseLostError as exc:
            return self._abandon(run, progress, str(exc))
        self._observe_limits(progress)

        if isinstance(provider_error, ProviderGrantError):
            # The credential keeper already marked the connection NEEDS_REVIEW: retrying cannot help.
            logger.warning("connection %s/%s needs review: %s", connection.user_id, connection.connection_id, error)
            self._unschedule_connection(connection, now)
        elif isinstance(provider_error, ProviderAuthError):
            self._count_auth_failure(connection, error, now)
        return SyncOutcome(OutcomeKind.FAILED, run.run_id, counts, error=error)

    def _count_auth_failure(self, connection: Connection, error: str, now: float) -> None:
        threshold = self._settings.needs_review_after_auth_failures
        reason = f"the provider rejected the credentials {threshold} times in a row ({error}); update them with PUT"
        if not self._store.record_auth_failure(connection, threshold=threshold, reason=reason, now=now):
            return
        logger.warning("connection %s/%s needs review: %s", connection.user_id, connection.connection_id, error)
        self._unschedule_connection(connection, now)

    def _unschedule_connection(self, connection: Connection, now: float) -> None:
        keys = [
            DatasetKey(connection.user_id, connection.connection_id, data_type)
            for data_type in self._registry.get(connection.provider).data_types()
        ]
        self._store.set_schedule(keys, None)
        # A PUT may have revived the connection meanwhile. It writes the connection before it reschedules,
        # so if we still see it broken here, its rescheduling comes after ours; if not, reschedule it now.
        current = self._store.get_connection(connection.user_id, connection.connection_id, consistent=True)
        if current is not None and current.status is ConnectionStatus.ACTIVE:
            self._store.set_schedule(keys, now)

    def _hand_off(
        self, run: SyncRun, progress: _Progress, *, delay_seconds: float = 0.0, reason: str | None = None
    ) -> SyncOutcome:
        """Pass the lease to a queued continuation job: the caller's budget ran out, or the provider said wait."""
        now = self._clock.now()
        job = Job(key=run.key, run_id=new_run_id(now), trigger=Trigger.BACKGROUND, created_at=now)
        self._release_probe(progress)
        try:
            self._store.hand_off(run.key, progress.owner, now, job.run_id)
        except LeaseLostError as exc:  # nothing queued; if the dataset was deleted, finish the purge
            return self._abandon(run, progress, str(exc))
        self.queue_claimed_job(job, delay_seconds=delay_seconds)
        counts = progress.totals()
        status = RunStatus.DEFERRED if delay_seconds > 0 else RunStatus.HANDED_OFF
        self._finish_run(run, status, counts, reason, progress)
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
            self.retention_seconds,
        )
        try:
            self._queue.send(job, delay_seconds)
        except Exception:
            logger.exception("could not queue a sync of %s", job.key.describe())
            self._store.release_queue_claim(job.key, job.run_id)
            self._store.mark_run(job.key, job.run_id, RunStatus.FAILED, only_if=RunStatus.QUEUED)
            return False
        return True

    def _abandon(self, run: SyncRun, progress: _Progress, error: str) -> SyncOutcome:
        """Our lease is gone. If the dataset was deleted, finish the deletion: a page we stored after
        the DELETE read its keys would otherwise outlive it."""
        logger.warning("sync lost its lease: %s run=%s", run.key.describe(), run.run_id)
        self._release_probe(progress)
        counts = progress.totals()
        if self._store.get_state(run.key) is None:
            self._store.delete_dataset(run.key)
        else:
            self._finish_run(run, RunStatus.LEASE_LOST, counts, error, progress)
        return SyncOutcome(OutcomeKind.LEASE_LOST, run.run_id, counts, error=error)

    def _observe_limits(self, progress: _Progress) -> None:
        """The last answer's rate-limit headers had no next take to ride on: let the guard decide if
        they are worth a write (only when clearly tighter than the shared state)."""
        if not progress.feedback:
            return
        try:
            self._guard.observe(
                progress.provider, progress.feedback, self._clock.now(), connection_scope=progress.connection_scope
            )
        except Exception:  # feedback is advice; it must never fail a finished sync
            logger.exception("could not record %s rate-limit feedback", progress.provider)
        progress.feedback = None

    def _finish_run(
        self, run: SyncRun, status: RunStatus, counts: SyncCounts, error: str | None, progress: _Progress
    ) -> None:
        self._store.put_run(self._finished(run, status, counts, error, progress).run, self.retention_seconds)

    def _finished(
        self,
        run: SyncRun,
        status: RunStatus,
        counts: SyncCounts,
        error: str | None,
        progress: _Progress,
        end: SyncEnd | None = None,
    ) -> FinishedRun:
        """The run's final record; with ``end``, also the slot back and the sync counted (same write)."""
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
            skipped_records=tuple(progress.skipped_samples),
        )
        if end is None or not progress.slot_held:
            return FinishedRun(finished, self.retention_seconds)
        return FinishedRun(
            finished, self.retention_seconds, self._guard.end_update(progress.provider, progress.owner, end)
        )

    def _fence(self, progress: _Progress) -> None:
        """Before records are written: renew the lease unless it surely is still ours. A holder whose
        lease ran past half its TTL renews first (a holder that lost it writes nothing); a dataset
        deleted meanwhile is caught by the end's own fence, and its records purged (``_abandon``)."""
        now = self._clock.now()
        if now < progress.safe_until:
            return
        self._store.renew_lease(progress.key, progress.owner, now, self._settings.lease_ttl_seconds)
        progress.safe_until = now + self._settings.lease_ttl_seconds / 2
