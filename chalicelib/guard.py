"""A provider's shared limits, as every Lambda sees them: breaker, concurrency slots, token bucket.

The decisions are pure (``breaker.py``, ``limits.py``); this module only reads and writes
their state in DynamoDB (one item each, version-guarded) so every worker agrees.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

from chalicelib.breaker import (
    Admission,
    BreakerConfig,
    BreakerState,
    BreakerStatus,
    admit,
    after_failure,
    after_success,
    retry_at,
)
from chalicelib.clock import to_iso
from chalicelib.config import Settings
from chalicelib.errors import StoreBusyError
from chalicelib.limits import Bucket, level_at, take_slot
from chalicelib.providers import ProviderRegistry
from chalicelib.store import DynamoStore, shared_json

logger = logging.getLogger(__name__)

_TOKEN_ATTEMPTS = 3
# Giving a slot back must not fail under contention (a leaked slot lowers the cap until it expires).
_RELEASE_ATTEMPTS = 30


def breaker_key(provider: str) -> str:
    return f"breaker#{provider}"


def slots_key(provider: str) -> str:
    return f"slots#{provider}"


def bucket_key(provider: str) -> str:
    return f"bucket#{provider}"


class ProviderGuard:
    def __init__(self, store: DynamoStore, registry: ProviderRegistry, settings: Settings) -> None:
        self._store = store
        self._registry = registry
        self._settings = settings

    @property
    def breaker_config(self) -> BreakerConfig:
        return BreakerConfig(
            failure_threshold=self._settings.breaker_failure_threshold,
            cool_off_seconds=float(self._settings.breaker_cool_off_seconds),
            probe_ttl_seconds=float(self._settings.lease_ttl_seconds),
        )

    def bucket(self, provider: str) -> Bucket:
        limits = self._registry.limits(provider)
        return Bucket(capacity=float(limits.burst), refill_per_second=limits.requests_per_second)

    # --- breaker ---------------------------------------------------------------

    def breaker(self, provider: str) -> BreakerState:
        return BreakerState.from_dict(self._store.get_shared_json(breaker_key(provider)))

    def admit(self, provider: str, owner: str, now: float) -> Admission:
        """May ``owner`` start calling the provider? A won half-open probe is written; nothing else is."""
        config = self.breaker_config

        def decide(current: dict[str, Any] | None) -> tuple[Admission, dict[str, Any] | None]:
            state = BreakerState.from_dict(current)
            admission = admit(state, owner, now, config)
            return admission, (admission.state_after.to_dict() if admission.state_after != state else None)

        return self._store.update_shared_json(breaker_key(provider), decide)

    def record_success(self, provider: str, seen: BreakerState) -> None:
        """The provider answered. Free when the breaker was already clean (the usual case)."""
        if seen.status is BreakerStatus.CLOSED and seen.consecutive_failures == 0:
            return

        def decide(current: dict[str, Any] | None) -> tuple[None, dict[str, Any] | None]:
            state = BreakerState.from_dict(current)
            after = after_success(state)
            return None, (after.to_dict() if after != state else None)

        self._store.update_shared_json(breaker_key(provider), decide)
        if seen.status is not BreakerStatus.CLOSED:
            logger.warning("provider %s answered again: circuit closed", provider)

    def release_probe(self, provider: str, owner: str) -> None:
        """Our probe will not report (it was deferred or handed off): let the next caller probe at once."""

        def decide(current: dict[str, Any] | None) -> tuple[None, dict[str, Any] | None]:
            state = BreakerState.from_dict(current)
            if state.status is not BreakerStatus.HALF_OPEN or state.probe_owner != owner:
                return None, None
            return None, replace(state, probe_owner=None, probe_expires_at=None).to_dict()

        try:
            self._store.update_shared_json(breaker_key(provider), decide, attempts=_RELEASE_ATTEMPTS)
        except StoreBusyError:
            logger.warning("could not free the %s probe; it frees itself when it expires", provider)

    def record_failure(self, provider: str, error: str, now: float) -> BreakerState:
        config = self.breaker_config

        def decide(current: dict[str, Any] | None) -> tuple[BreakerState, dict[str, Any] | None]:
            after = after_failure(BreakerState.from_dict(current), error, now, config)
            return after, after.to_dict()

        after = self._store.update_shared_json(breaker_key(provider), decide)
        if after.status is BreakerStatus.OPEN and after.opened_at == now:
            logger.warning(
                "provider %s failed %d times in a row: circuit open for %ss",
                provider,
                after.consecutive_failures,
                config.cool_off_seconds,
            )
        return after

    # --- concurrency slots -----------------------------------------------------

    def take_slot(self, provider: str, owner: str, now: float) -> float | None:
        """Join (or renew) the provider's running syncs; ``None`` when granted, else seconds to wait."""
        capacity = self._registry.limits(provider).max_concurrent_syncs
        ttl = float(self._settings.lease_ttl_seconds)

        def decide(current: dict[str, Any] | None) -> tuple[float | None, dict[str, Any] | None]:
            holders = dict((current or {}).get("holders", {}))
            result = take_slot(holders, owner, capacity, now, ttl)
            if not result.granted:
                return result.retry_after_seconds, None
            return None, {"holders": result.holders_after}

        try:
            return self._store.update_shared_json(slots_key(provider), decide, attempts=_TOKEN_ATTEMPTS)
        except StoreBusyError:
            return 0.2  # lost every race: somebody else just joined; try again shortly

    def release_slot(self, provider: str, owner: str) -> None:
        def decide(current: dict[str, Any] | None) -> tuple[None, dict[str, Any] | None]:
            holders = dict((current or {}).get("holders", {}))
            if holders.pop(owner, None) is None:
                return None, None
            return None, {"holders": holders}

        try:
            self._store.update_shared_json(slots_key(provider), decide, attempts=_RELEASE_ATTEMPTS)
        except StoreBusyError:
            logger.warning("could not release a %s slot; it frees itself when it expires", provider)

    # --- token bucket ----------------------------------------------------------

    def take_token(self, provider: str, now: float) -> float | None:
        """One upstream call's worth of the provider's rate; ``None`` when granted, else seconds to wait."""
        bucket = self.bucket(provider)
        try:
            return self._store.take_token(bucket_key(provider), bucket, now, attempts=_TOKEN_ATTEMPTS)
        except StoreBusyError:
            return 1.0 / bucket.refill_per_second  # other workers took the tokens in between

    def hold(self, provider: str, until: float) -> None:
        """The provider said "wait until ``until``": no worker calls it before then."""
        self._store.hold_bucket(bucket_key(provider), until)

    # --- status ----------------------------------------------------------------

    def snapshot(self, providers: list[str], now: float) -> dict[str, dict[str, Any]]:
        """Breaker, bucket and slots of each provider, from one BatchGetItem."""
        keys = [k for p in providers for k in (breaker_key(p), bucket_key(p), slots_key(p))]
        items = self._store.get_shared_many(keys)
        config = self.breaker_config
        out: dict[str, dict[str, Any]] = {}
        for provider in providers:
            limits = self._registry.limits(provider)
            breaker = BreakerState.from_dict(shared_json(items.get(breaker_key(provider))))
            bucket_item = items.get(bucket_key(provider))
            tokens = level_at(
                self.bucket(provider),
                bucket_item.tokens if bucket_item else None,
                bucket_item.updated_at if bucket_item else None,
                now,
            )
            holders = (shared_json(items.get(slots_key(provider))) or {}).get("holders", {})
            running = sum(1 for expiry in holders.values() if expiry > now)
            next_try = retry_at(breaker, now, config)
            out[provider] = {
                "breaker": {
                    "state": breaker.status.value,
                    "consecutive_failures": breaker.consecutive_failures,
                    "opened_at": to_iso(breaker.opened_at) if breaker.status is not BreakerStatus.CLOSED else None,
                    "next_probe_at": to_iso(next_try),
                    "last_failure": breaker.last_failure,
                    "last_failure_at": to_iso(breaker.last_failure_at),
                },
                "bucket": {
                    "tokens": round(tokens, 2),
                    "capacity": limits.burst,
                    "requests_per_second": limits.requests_per_second,
                },
                "concurrency": {"running_syncs": running, "max_concurrent_syncs": limits.max_concurrent_syncs},
            }
        return out

    def open_breakers(self, providers: list[str], now: float) -> dict[str, BreakerState]:
        """The breakers that are not closed, from one BatchGetItem (the tick's gate)."""
        items = self._store.get_shared_many([breaker_key(p) for p in providers])
        states: dict[str, BreakerState] = {}
        for provider in providers:
            state = BreakerState.from_dict(shared_json(items.get(breaker_key(provider))))
            if state.status is not BreakerStatus.CLOSED:
                states[provider] = state
        return states
