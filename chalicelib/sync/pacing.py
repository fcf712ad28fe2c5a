"""A provider's shared limits, as every Lambda sees them: breaker, concurrency slots, rate windows.

The decisions are pure (``breaker.py``, ``limits.py``); this module only reads and writes
their state in DynamoDB (one item each, version-guarded) so every worker agrees. All of a
provider's rate windows live in ONE item per limit scope, so taking from every window is one
read and one conditional write.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from chalicelib.domain.breaker import (
    Admission,
    BreakerConfig,
    BreakerState,
    BreakerStatus,
    admit,
    after_failure,
    after_success,
    retry_at,
)
from chalicelib.domain.clock import to_iso
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import StoreBusyError
from chalicelib.domain.limits import (
    RateWindow,
    WindowLevels,
    hold_all,
    levels_at,
    may_tighten,
    observe,
    take_slot,
    take_weight,
)
from chalicelib.providers import LimitScope, ProviderLimits, ProviderRegistry
from chalicelib.store.dynamo import DynamoStore, shared_json, shared_json_write
from chalicelib.store.items import LimitItem

logger = logging.getLogger(__name__)
T = TypeVar("T")

_TOKEN_ATTEMPTS = 3
# Giving a slot back must not fail under contention (a leaked slot lowers the cap until it expires).
_RELEASE_ATTEMPTS = 30


def breaker_key(provider: str) -> str:
    return f"breaker#{provider}"


def slots_key(provider: str) -> str:
    return f"slots#{provider}"


def bucket_key(provider: str, connection_scope: str | None = None) -> str:
    """The item holding a limit scope's rate windows: the provider's, or one connection's own."""
    return f"bucket#{provider}" if connection_scope is None else f"bucket#{provider}#{connection_scope}"


def connection_scope_of(user_id: str, connection_id: str) -> str:
    """What the engine passes as ``connection_scope`` for a connection."""
    return f"{user_id}#{connection_id}"


def window_state(item: LimitItem | None, windows: Sequence[RateWindow]) -> WindowLevels:
    """A bucket item as window levels: the JSON document, or a single-bucket item from before windows."""
    document = shared_json(item)
    if item is None or document is not None:
        return WindowLevels.from_dict(document, windows)
    return WindowLevels.from_single_bucket(item.tokens, item.updated_at, windows)


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

    def _update_windows(
        self,
        provider: str,
        connection_scope: str | None,
        step: Callable[[Sequence[RateWindow], WindowLevels], tuple[T, WindowLevels | None]],
        *,
        attempts: int | None = None,
    ) -> T:
        """Read one limit scope's windows, let ``step`` decide (an answer, and the state to write or
        ``None``), and write it guarded by the item's version: one read and at most one write."""
        limits = self._registry.limits(provider)
        windows = limits.windows
        key = self._limit_key(provider, limits, connection_scope)

        def decide(item: LimitItem | None) -> tuple[T, list[Any] | None]:
            answer, after = step(windows, window_state(item, windows))
            return answer, (None if after is None else shared_json_write(after.to_dict(windows)))

        if attempts is None:
            return self._store.update_shared(key, decide)
        return self._store.update_shared(key, decide, attempts=attempts)

    def _limit_key(self, provider: str, limits: ProviderLimits, connection_scope: str | None) -> str:
        if limits.scope is LimitScope.CONNECTION:
            if not connection_scope:
                raise ValueError(f"provider {provider!r} limits each connection: a connection_scope is needed")
            return bucket_key(provider, connection_scope)
        return bucket_key(provider)

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

    # --- rate windows ----------------------------------------------------------

    def take_token(
        self,
        provider: str,
        now: float,
        *,
        weight: int = 1,
        connection_scope: str | None = None,
        feedback: Mapping[str, str] | None = None,
    ) -> float | None:
        """One call's ``weight`` from every rate window at once; ``None`` when granted, else seconds to wait.

        ``feedback`` (the previous answer's lower-cased headers) lowers the windows to the
        provider's own count in the same conditional write. ``connection_scope``
        (``user_id#connection_id``) picks the connection's own limit when the provider's scope
        is "connection"; it is ignored otherwise.
        """

        def step(windows: Sequence[RateWindow], state: WindowLevels) -> tuple[float | None, WindowLevels | None]:
            result = take_weight(windows, state, now, weight=weight, feedback=feedback)
            return (None if result.granted else result.retry_after_seconds), result.state_after

        try:
            return self._update_windows(provider, connection_scope, step, attempts=_TOKEN_ATTEMPTS)
        except StoreBusyError:
            # Other workers took the room in between: ask again about when the fastest window refills a call.
            windows = self._registry.limits(provider).windows
            return min(1.0, min(weight / w.refill_per_second for w in windows))

    def hold(self, provider: str, until: float, *, connection_scope: str | None = None) -> None:
        """The provider said "wait until ``until``": no worker calls it (in this scope) before then."""
        self._update_windows(provider, connection_scope, lambda windows, state: (None, hold_all(windows, state, until)))

    def observe(
        self, provider: str, headers: Mapping[str, str], now: float, *, connection_scope: str | None = None
    ) -> None:
        """The last answer's rate-limit headers, at the end of a sync: written only when clearly tighter.

        Headers that could not lower any window cost no call at all; otherwise one read, and a
        write only if the stored state is clearly above what the provider counts.
        """
        if not may_tighten(self._registry.limits(provider).windows, headers, now):
            return
        try:
            self._update_windows(
                provider,
                connection_scope,
                lambda windows, state: (None, observe(windows, state, headers, now)),
                attempts=_TOKEN_ATTEMPTS,
            )
        except StoreBusyError:
            logger.info("%s rate-limit feedback dropped: other workers are writing the same limit", provider)

    # --- status ----------------------------------------------------------------

    def snapshot(self, providers: list[str], now: float) -> dict[str, dict[str, Any]]:
        """Breaker, rate windows and slots of each provider, from one BatchGetItem."""
        keys = [k for p in providers for k in (breaker_key(p), bucket_key(p), slots_key(p))]
        items = self._store.get_shared_many(keys)
        config = self.breaker_config
        out: dict[str, dict[str, Any]] = {}
        for provider in providers:
            limits = self._registry.limits(provider)
            breaker = BreakerState.from_dict(shared_json(items.get(breaker_key(provider))))
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
                **rate_view(limits, items.get(bucket_key(provider)), now),
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


def rate_view(limits: ProviderLimits, item: LimitItem | None, now: float) -> dict[str, Any]:
    """``scope``, each window's level and capacity, and ``bucket`` (the emptiest window, as before windows).

    A provider limited per connection has one state per connection: its levels are not listed here.
    """
    windows = limits.windows
    shared = limits.scope is LimitScope.PROVIDER
    state = window_state(item, windows)
    held = shared and state.hold_until is not None and state.hold_until > now
    levels: Sequence[float | None] = (
        [0.0 if held else max(0.0, level) for level in levels_at(windows, state, now)]
        if shared
        else [None] * len(windows)
    )
    views = [
        {
            "limit": window.describe(),
            "requests": window.requests,
            "per_seconds": window.per_seconds,
            "capacity": window.capacity,
            "refill_per_second": round(window.refill_per_second, 6),
            "tokens": None if level is None else round(level, 2),
        }
        for window, level in zip(windows, levels, strict=True)
    ]
    emptiest = min(
        range(len(windows)), key=lambda i: (levels[i] or 0.0) / windows[i].capacity if shared else windows[i].capacity
    )
    return {
        "scope": limits.scope.value,
        "windows": views,
        "held_until": to_iso(state.hold_until) if held else None,
        "bucket": {
            "tokens": views[emptiest]["tokens"],
            "capacity": windows[emptiest].capacity,
            "requests_per_second": views[emptiest]["refill_per_second"],
        },
    }
