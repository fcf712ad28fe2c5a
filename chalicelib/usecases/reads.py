"""The read path: answer from the cache at once, or wait for a sync within the budget.

One Query answers a cached read (state item + first page of records). Behaviour
follows the tier table in docs/operations.md; the decision itself is ``policy.decide_read``.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Mapping
from typing import Any, Protocol

from chalicelib.domain.breaker import retry_at
from chalicelib.domain.clock import Clock, to_iso
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import (
    ClaimNotWonError,
    ConnectionNotActiveError,
    NotFoundError,
    QueueUnavailableError,
    RateLimitedError,
)
from chalicelib.domain.limits import Bucket
from chalicelib.domain.model import Connection, ConnectionStatus, DatasetKey, DatasetState, Trigger, validate_id
from chalicelib.domain.policy import (
    DatasetSnapshot,
    Freshness,
    ReadAction,
    SyncPolicy,
    decide_read,
    humanize_age,
    lease_is_held,
)
from chalicelib.providers.policies import PolicyResolver
from chalicelib.store.convert import decode_next_token
from chalicelib.store.records import DatasetPage
from chalicelib.store.shared import SharedStore
from chalicelib.sync.coordinator import SyncCoordinator
from chalicelib.sync.engine import OutcomeKind, SyncOutcome
from chalicelib.sync.pacing import ProviderGuard
from chalicelib.usecases.query_params import parse_bool, parse_limit
from chalicelib.usecases.responses import ApiResponse


def snapshot_of(state: DatasetState) -> DatasetSnapshot:
    return DatasetSnapshot(
        last_successful_at=state.last_successful_at,
        last_attempted_at=state.last_attempted_at,
        lease_expires_at=state.lease_expires_at,
        queued_at=state.queued_at if state.queued_job_id else None,
        consecutive_failures=state.consecutive_failures,
        failed=state.status.value in ("FAILED", "NEEDS_REVIEW"),
    )


def enforce_manual_refresh_limit(shared: SharedStore, user_id: str, now: float, settings: Settings) -> None:
    """Count one forced sync against the user's window; 429 with Retry-After when over."""
    bucket = Bucket.per_window(settings.force_refresh_limit, settings.force_refresh_window_seconds)
    wait = shared.take_token(f"force#{user_id}", bucket, now)
    if wait is not None:
        raise RateLimitedError(
            f"at most {settings.force_refresh_limit} forced refreshes per {settings.force_refresh_window_seconds}s",
            retry_after_seconds=math.ceil(wait),
        )


class ReadStore(Protocol):
    """What a read touches: the connection and a page of its dataset (with the state, in one call)."""

    @property
    def shared(self) -> SharedStore: ...

    def get_connection(self, user_id: str, connection_id: str, *, consistent: bool = False) -> Connection | None: ...

    def read_dataset_page(
        self, key: DatasetKey, limit: int, after_sort_key: str | None, *, consistent: bool = False
    ) -> DatasetPage: ...


class DatasetReader:
    def __init__(
        self,
        store: ReadStore,
        policies: PolicyResolver,
        coordinator: SyncCoordinator,
        guard: ProviderGuard,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._store = store
        self._policies = policies
        self._coordinator = coordinator
        self._guard = guard
        self._clock = clock
        self._settings = settings

    def read(self, user_id: str, connection_id: str, data_type: str, params: Mapping[str, str]) -> ApiResponse:
        started = self._clock.now()  # the budget counts from the request, not from after the lookups
        key = DatasetKey(
            validate_id("user_id", user_id),
            validate_id("connection_id", connection_id),
            validate_id("data_type", data_type),
        )
        force = parse_bool("force_refresh", params.get("force_refresh"))
        limit = parse_limit(params.get("limit"), self._settings.default_page_limit, self._settings.max_page_limit)
        token = params.get("next_token")
        after = decode_next_token(token) if token else None

        page = self._store.read_dataset_page(key, limit, after)
        connection: Connection | None = None
        if page.state is None:
            connection = self._require_connection(key)
            state = DatasetState.empty(key, connection.provider)
        else:
            state = page.state
        policy = self._policies.policy(state.provider, key.data_type)
        now = self._clock.now()
        decision = decide_read(
            snapshot_of(state),
            policy,
            now,
            force_refresh=force,
            queue_claim_ttl_seconds=self._settings.queue_claim_ttl_seconds,
            backoff_base_seconds=self._settings.failure_backoff_base_seconds,
            backoff_max_seconds=self._settings.failure_backoff_max_seconds,
        )
        answer = _Answer(state, policy, decision.freshness, page, now)

        if decision.action is ReadAction.SERVE_CACHE:
            answer.sync_in_progress = decision.sync_in_progress
            answer.background_sync = decision.sync_in_progress or decision.sync_queued
            return answer.from_cache()

        # Past the fresh tier every answer may involve the provider: name its outage if it has one.
        outage = self._outage(state.provider, now)
        if decision.action is ReadAction.SERVE_CACHE_BACKING_OFF:
            if outage is not None:
                return answer.provider_down(*outage)
            retry = int(decision.retry_after_seconds or 0) + 1
            return answer.after_failure(state.last_error or "the last sync failed", retry_after=retry)

        connection = connection or self._require_connection(key)
        if connection.status is not ConnectionStatus.ACTIVE:
            return answer.connection_inactive(connection)
        if outage is not None:
            return answer.provider_down(*outage)

        if decision.action is ReadAction.SERVE_CACHE_AND_QUEUE:
            try:
                self._coordinator.queue_background(key, state.provider, policy, trigger=Trigger.BACKGROUND)
                answer.background_sync = True
            except ClaimNotWonError:
                # Someone else queued or is running it: still "updating in background".
                answer.background_sync = True
            except QueueUnavailableError as exc:
                answer.warning = f"could not start a background refresh: {exc.message}"
            return answer.from_cache()

        if force:
            enforce_manual_refresh_limit(self._store.shared, key.user_id, now, self._settings)
        trigger = Trigger.FORCE if force else Trigger.READ
        outcome = self._coordinator.sync_or_join(
            connection,
            state,
            policy,
            trigger=trigger,
            deadline=started + self._settings.read_budget_seconds,
        )
        fresh_page = self._store.read_dataset_page(key, limit, after, consistent=True)
        if fresh_page.state is None:
            raise NotFoundError(f"connection {key.connection_id!r} was deleted")
        answer = _Answer(fresh_page.state or state, policy, decision.freshness, fresh_page, self._clock.now())
        answer.outcome = outcome
        if outcome.succeeded:
            return answer.from_upstream()
        if outcome.kind is OutcomeKind.FAILED:
            return answer.after_failure(outcome.error or "the sync failed", retry_after=None)
        if outcome.kind is OutcomeKind.DEFERRED and outcome.breaker_open:
            return answer.provider_down(outcome.error or "the provider is failing", outcome.retry_after_seconds)
        if outcome.kind is OutcomeKind.DEFERRED:
            # The provider is busy (every slot taken, or its rate limit reached): a background job waits instead.
            # (Already queued or running elsewhere, or SQS is down: the next read tries again.)
            with contextlib.suppress(ClaimNotWonError, QueueUnavailableError):
                self._coordinator.queue_background(
                    key, state.provider, policy, trigger=Trigger.BACKGROUND, respect_cooldown=False
                )
        return answer.budget_exceeded(
            self._settings.read_budget_seconds, reason=outcome.error, retry_after=outcome.retry_after_seconds
        )

    def _outage(self, provider: str, now: float) -> tuple[str, float] | None:
        """(warning, seconds until the next probe) while the provider's breaker refuses calls."""
        config = self._guard.breaker_config
        breaker = self._guard.breaker(provider)
        next_try = retry_at(breaker, now, config)
        if next_try is None:
            return None
        since = f" since {to_iso(breaker.opened_at)}" if breaker.opened_at else ""
        warning = (
            f"Provider {provider!r} is having an outage (circuit open{since} after "
            f"{breaker.consecutive_failures} failed syncs in a row)"
        )
        return warning, next_try - now

    def _require_connection(self, key: DatasetKey) -> Connection:
        connection = self._store.get_connection(key.user_id, key.connection_id)
        if connection is None:
            raise NotFoundError(f"connection {key.connection_id!r} not found")
        self._policies.policy(connection.provider, key.data_type)  # 404 for an unknown data type
        return connection


def _error(status: int, code: str, message: str, headers: dict[str, str]) -> ApiResponse:
    """A read that has nothing to show: the API's usual error body, with its Retry-After."""
    return ApiResponse(status, {"error": {"code": code, "message": message}}, headers)


class _Answer:
    """Builds the response body and its metadata for one read."""

    def __init__(
        self, state: DatasetState, policy: SyncPolicy, freshness: Freshness, page: DatasetPage, now: float
    ) -> None:
        self.state = state
        self.policy = policy
        self.freshness = freshness
        self.page = page
        self.now = now
        self.background_sync = False
        self.sync_in_progress = lease_is_held(state.lease_expires_at, now)
        self.outcome: SyncOutcome | None = None
        self.warning: str | None = None

    @property
    def has_cache(self) -> bool:
        return self.state.last_successful_at is not None

    @property
    def age(self) -> float | None:
        last = self.state.last_successful_at
        return None if last is None else max(0.0, self.now - last)

    def _body(
        self,
        status: str,
        source: str,
        message: str,
        *,
        cached: bool,
        warning: str | None = None,
        error: str | None = None,
        include_data: bool = True,
    ) -> dict[str, Any]:
        age = self.age
        skipped = self.state.last_counts.skipped if self.state.last_counts else 0
        metadata: dict[str, Any] = {
            "source": source,
            "freshness": self.freshness.value,
            "cached": cached,
            "background_sync": self.background_sync,
            "sync_in_progress": self.sync_in_progress,
            "last_synced_at": to_iso(self.state.last_successful_at),
            "staleness_seconds": None if age is None else int(age),
            "cooldown_seconds": self.policy.cooldown_seconds,
            "max_staleness_seconds": self.policy.max_staleness_seconds,
            "record_count": self.state.record_count,
            "skipped_records": skipped,
            "message": message,
        }
        if skipped and not warning:
            warning = (
                f"{skipped} record(s) from the provider were left out of the last sync (malformed or too large "
                "to store); the run history names them"
            )
        if warning:
            metadata["warning"] = warning
        if error:
            metadata["error"] = error
        if self.outcome is not None:
            metadata["sync"] = {
                "run_id": self.outcome.run_id,
                "joined_running_sync": self.outcome.joined,
                "continuation_run_id": self.outcome.continuation_run_id,
                **self.outcome.counts.as_dict(),
            }
        records = [r.public() for r in self.page.records] if include_data else []
        return {
            "status": status,
            "data": records,
            "next_token": self.page.next_token if include_data else None,
            "metadata": metadata,
        }

    def from_cache(self) -> ApiResponse:
        message = f"Using data from {humanize_age(self.age)}"
        if self.background_sync:
            message += " (updating in background)"
        if self.warning:
            return ApiResponse(
                200, self._body("success_with_warning", "cache", message, cached=True, warning=self.warning)
            )
        return ApiResponse(200, self._body("success", "cache", message, cached=True))

    def from_upstream(self) -> ApiResponse:
        assert self.outcome is not None
        counts = self.outcome.counts
        if self.outcome.joined:
            message = "Fresh data from a sync that just finished"
        else:
            message = (
                f"Synced just now: {counts.inserted} new, {counts.updated} updated, "
                f"{counts.unchanged} unchanged, {counts.deleted} deleted"
            )
        self.sync_in_progress = False
        return ApiResponse(200, self._body("success", "upstream", message, cached=False))

    def after_failure(self, error: str, *, retry_after: int | None) -> ApiResponse:
        headers = {"Retry-After": str(retry_after)} if retry_after else {}
        if not self.has_cache:
            return _error(502, "upstream_error", f"The provider failed and nothing is cached yet: {error}", headers)
        message = f"Using data from {humanize_age(self.age)} because the refresh failed"
        if retry_after:
            message += f" (next try in {retry_after}s)"
        body = self._body(
            "success_with_warning",
            "stale_cache",
            message,
            cached=True,
            warning="Using stale cached data due to sync failure",
            error=error,
        )
        return ApiResponse(200, body, headers)

    def budget_exceeded(
        self, budget_seconds: float, *, reason: str | None = None, retry_after: float | None = None
    ) -> ApiResponse:
        self.sync_in_progress = True
        self.background_sync = True
        warning = f"The sync did not finish within {budget_seconds:g}s; it continues in the background"
        if reason:
            warning = f"The sync continues in the background: {reason}"
        if not self.has_cache:
            body = self._body(
                "pending",
                "upstream",
                "No data yet: the first sync is still running. Ask again in a few seconds.",
                cached=False,
                warning=warning,
                include_data=False,
            )
            # Asking again before a delayed continuation is due would only supersede it.
            return ApiResponse(202, body, {"Retry-After": str(max(5, math.ceil(retry_after or 0)))})
        message = f"Using data from {humanize_age(self.age)} (a refresh is still running)"
        return ApiResponse(
            200, self._body("success_with_warning", "stale_cache", message, cached=True, warning=warning)
        )

    def provider_down(self, warning: str, retry_after: float | None) -> ApiResponse:
        """The provider's breaker (or its limits) refuse calls: the cache with a warning, or 503."""
        retry = max(1, math.ceil(retry_after or 1))
        headers = {"Retry-After": str(retry)}
        if not self.has_cache:
            return _error(
                503, "provider_unavailable", f"{warning}; nothing is cached yet. Try again in {retry}s.", headers
            )
        message = f"Using data from {humanize_age(self.age)}; not refreshing now (next try in {retry}s)"
        body = self._body("success_with_warning", "stale_cache", message, cached=True, warning=warning)
        return ApiResponse(200, body, headers)

    def connection_inactive(self, connection: Connection) -> ApiResponse:
        why = f"connection is {connection.inactive_reason()}"
        if not self.has_cache:
            raise ConnectionNotActiveError(f"Nothing is cached yet and the {why}, so it is not synced")
        message = f"Using data from {humanize_age(self.age)}; not refreshing because the {why}"
        return ApiResponse(200, self._body("success_with_warning", "stale_cache", message, cached=True, warning=why))
