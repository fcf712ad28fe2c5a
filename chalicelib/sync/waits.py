"""A running sync's side of the provider guard: waiting on the provider, and keeping the lease alive meanwhile.

Every wait is short and the lease (and slot) are renewed between waits, so a sync that waits never
outlives its lease; a wait longer than the caller can afford raises ``WaitRequired`` (the engine hands
the rest of the sync to a delayed job). The breaker's reports (probe, first answer) and rate-limit
feedback go through here too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

from chalicelib.domain.breaker import BreakerState
from chalicelib.domain.clock import Clock
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import StoreBusyError
from chalicelib.domain.gate import Start
from chalicelib.domain.model import DatasetKey
from chalicelib.domain.retry import backoff_delay
from chalicelib.domain.upstream import ProviderError, ProviderRateLimitError
from chalicelib.sync.pacing import ProviderGuard
from chalicelib.sync.progress import SyncProgress

logger = logging.getLogger(__name__)

MIN_USEFUL_FETCH_SECONDS = 0.5
"""A fetch with less time than this left is not started."""
_MIN_TOKEN_WAIT_SECONDS = 0.001


class WaitsStore(Protocol):
    """What waiting touches: the lease, renewed as it waits."""

    def renew_lease(self, key: DatasetKey, owner: str, now: float, ttl_seconds: float) -> None: ...


class WaitRequired(Exception):
    """The provider's limits say wait longer than this caller can: continue as a delayed job."""

    def __init__(self, seconds: float, reason: str) -> None:
        super().__init__(reason)
        self.seconds = seconds
        self.reason = reason


class ProviderWaits:
    def __init__(
        self,
        store: WaitsStore,
        clock: Clock,
        settings: Settings,
        guard: ProviderGuard,
        random_unit: Callable[[], float],
    ) -> None:
        self._store = store
        self._clock = clock
        self._settings = settings
        self._guard = guard
        self._random = random_unit

    @property
    def renew_every(self) -> float:
        return self._settings.lease_ttl_seconds / 4

    @property
    def _longest_wait(self) -> float:
        """One wait in place: short enough that a renewal always comes before the lease expires."""
        return min(self._settings.provider_wait_max_seconds, self._settings.lease_ttl_seconds / 6)

    def start(self, progress: SyncProgress) -> Start | float:
        """The gate's answer to this sync's start, or the seconds to come back in. Tried again briefly when
        other workers kept winning the gate's write (a burst of syncs of one provider: with jitter), and
        when the rate windows are full (without holding a slot meanwhile: the start wrote nothing)."""
        waited = 0.0
        while True:
            try:
                start = self._guard.start(
                    progress.provider,
                    progress.owner,
                    self._clock.now(),
                    weight=progress.weight,
                    user=progress.key.user_id,
                )
            except StoreBusyError:
                poll, give_up = 0.05 + 0.25 * self._random(), 1.0
            else:
                if not start.waits_for_weight:
                    return start
                assert start.take is not None
                give_up = start.take.retry_after_seconds
                poll = max(give_up, _MIN_TOKEN_WAIT_SECONDS) * (1.0 + 0.2 * self._random())
            if waited + poll > self._settings.provider_wait_max_seconds or not self.can_wait(poll, progress):
                return max(give_up, 1.0)
            self._pause(poll, progress)
            waited += poll

    def wait_for_slot(self, progress: SyncProgress) -> float | None:
        """Wait (briefly) for one of the provider's concurrency slots, within the user's share of them (a user
        whose share is full waits while other users start); the wait left when giving up."""
        waited = 0.0
        while True:
            wait = self._guard.take_slot(
                progress.provider, progress.owner, self._clock.now(), user=progress.key.user_id
            )
            if wait is None:
                return None
            poll = min(max(wait, 0.05), 0.5 + 0.5 * self._random())
            if waited + poll > self._settings.provider_wait_max_seconds or not self.can_wait(poll, progress):
                return max(min(wait, self._settings.lease_ttl_seconds), 1.0)
            self._pause(poll, progress)
            waited += poll

    def can_wait(self, seconds: float, progress: SyncProgress) -> bool:
        if seconds > self._longest_wait:
            return False
        deadline = progress.deadline
        return deadline is None or self._clock.now() + seconds < deadline - MIN_USEFUL_FETCH_SECONDS

    def _pause(self, seconds: float, progress: SyncProgress) -> None:
        self.keep_alive(progress)
        self._clock.sleep(seconds)

    def keep_alive(self, progress: SyncProgress) -> None:
        """Renew the lease (and our slot) every quarter of the lease TTL, between waits and fetches."""
        now = self._clock.now()
        if now < progress.renew_at:
            return
        self._store.renew_lease(progress.key, progress.owner, now, self._settings.lease_ttl_seconds)
        progress.safe_until = now + self._settings.lease_ttl_seconds / 2
        if progress.slot_held:
            wait = self._guard.take_slot(progress.provider, progress.owner, now, user=progress.key.user_id)
            if wait is not None:  # our slot expired and others filled it: stop calling, continue later
                progress.slot_held = False
                raise WaitRequired(wait, f"provider {progress.provider!r} slot was lost")
        progress.renew_at = now + self.renew_every

    def fence(self, progress: SyncProgress) -> None:
        """Before records are written: renew the lease unless it surely is still ours. A holder whose
        lease ran past half its TTL renews first (a holder that lost it writes nothing); a dataset
        deleted meanwhile is caught by the end's own fence, and its records purged (``Handoff.abandon``)."""
        now = self._clock.now()
        if now < progress.safe_until:
            return
        self._store.renew_lease(progress.key, progress.owner, now, self._settings.lease_ttl_seconds)
        progress.safe_until = now + self._settings.lease_ttl_seconds / 2

    def take_token(self, progress: SyncProgress) -> None:
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
            if waited + pause > self._settings.provider_wait_max_seconds or not self.can_wait(pause, progress):
                raise WaitRequired(wait, f"provider {progress.provider!r} is at its rate limit")
            self._pause(pause, progress)
            waited += pause

    def back_off(self, exc: ProviderError, attempt: int, progress: SyncProgress) -> None:
        """Wait before retrying ``exc``; re-raise it (or ``WaitRequired``) when this caller cannot wait so long."""
        provider_wait = exc.retry_after_seconds
        delay = backoff_delay(
            attempt - 1,
            base_seconds=self._settings.retry_base_seconds,
            max_seconds=self._settings.retry_max_delay_seconds,
            random_unit=self._random(),
            provider_wait_seconds=provider_wait,
        )
        if self.can_wait(delay, progress):
            logger.info("retrying %s in %.2fs after: %s", progress.provider, delay, exc)
            self._pause(delay, progress)
            return
        if isinstance(exc, ProviderRateLimitError) or provider_wait is not None:
            raise WaitRequired(delay, f"provider {progress.provider!r} asked to wait {delay:.0f}s") from None
        raise exc

    def release_probe(self, progress: SyncProgress) -> None:
        """A probe that will not report (deferred, handed off) frees the half-open slot for the next caller."""
        if progress.probe:
            progress.probe = False
            self._guard.release_probe(progress.provider, progress.owner)

    def provider_answered(self, progress: SyncProgress, breaker_seen: BreakerState) -> None:
        if not progress.provider_answered:
            progress.provider_answered = True
            progress.probe = False  # the probe has reported
            self._guard.record_success(progress.provider, breaker_seen)

    def observe_limits(self, progress: SyncProgress) -> None:
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
