"""A provider's shared limits, as every Lambda sees them: breaker, running syncs, rate windows, users' shares.

The decisions are pure (``domain/gate.py``, ``domain/breaker.py``, ``domain/limits.py``); this module
reads and writes their state so every worker agrees. A provider's breaker, its running syncs, its
shared rate windows and its statistics sit in ONE gate item, so a sync's start (admission, slot and
first call) is one conditional write, each later call one more, and its end (slot back, statistics)
one unguarded write. A provider whose limits are per connection keeps each connection's windows in
an item of their own. Each user's share of the slots and of the shared windows
(``chalicelib/domain/tenants.py``) is kept in the gate's document too, written by the same writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from chalicelib.domain.breaker import (
    BreakerConfig,
    BreakerState,
    BreakerStatus,
    after_failure,
    after_success,
)
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import StoreBusyError
from chalicelib.domain.gate import GateLimits, Start, decide_start
from chalicelib.domain.limits import RateWindow, WindowLevels, hold_all, may_tighten, observe, take_weight
from chalicelib.domain.tenants import (
    TenantBook,
    user_of_scope,
)
from chalicelib.providers import LimitScope, ProviderLimits, ProviderRegistry
from chalicelib.store.items import LimitItem
from chalicelib.store.shared import (
    SharedStore,
    SharedUpdate,
    holder_actions,
    holder_path,
    holders_of,
    shared_json_write,
)
from chalicelib.sync.gate_items import Changes, GateStep, connection_windows_key, legacy_windows_key, stats_actions
from chalicelib.sync.gate_items import SyncEnd as SyncEnd  # as the engine and the tests have always named them
from chalicelib.sync.gate_items import connection_scope_of as connection_scope_of
from chalicelib.sync.gate_items import gate_key as gate_key
from chalicelib.sync.limits_view import breaker_of, gate_document, legacy_windows, provider_views, windows_of
from chalicelib.sync.shares import gate_limits, share_take_step, slot_step

logger = logging.getLogger(__name__)
T = TypeVar("T")

_ATTEMPTS = 8
_TOKEN_ATTEMPTS = 3


class ProviderGuard:
    def __init__(self, shared: SharedStore, registry: ProviderRegistry, settings: Settings) -> None:
        self._shared = shared
        self._registry = registry
        self._settings = settings

    @property
    def breaker_config(self) -> BreakerConfig:
        return BreakerConfig(
            failure_threshold=self._settings.breaker_failure_threshold,
            cool_off_seconds=float(self._settings.breaker_cool_off_seconds),
            probe_ttl_seconds=float(self._settings.lease_ttl_seconds),
        )

    def _shares_windows(self, limits: ProviderLimits) -> bool:
        return limits.scope is LimitScope.PROVIDER

    def _gate_limits(self, provider: str) -> GateLimits:
        return gate_limits(self._registry.limits(provider), self._settings)

    def _update_gate(
        self,
        provider: str,
        step: GateStep[T],
        *,
        attempts: int = _ATTEMPTS,
        confirm_no_write: bool | Callable[[T], bool] = True,
    ) -> T:
        """Read-decide-write on the gate item (see ``GateStep``; ``SharedStore.update`` for the rest)."""

        def decide(item: LimitItem | None) -> tuple[T, list[Any] | None]:
            answer, document, extra = step(item, gate_document(item))
            actions = [*([] if document is None else shared_json_write(document)), *extra]
            return answer, (actions or None)

        return self._shared.update(
            gate_key(provider),
            decide,
            attempts=attempts,
            companion=legacy_windows_key(provider),
            confirm_no_write=confirm_no_write,
        )

    def _gate_windows(self, provider: str, item: LimitItem | None, windows: Sequence[RateWindow]) -> WindowLevels:
        """The gate's windows; before its first write, what an earlier version left (a hold is kept)."""
        if item is not None:
            return windows_of(item, windows, in_gate=True)
        return legacy_windows(self._shared.peek(legacy_windows_key(provider)), windows)

    # --- a sync's start and end ----------------------------------------------------

    def start(
        self,
        provider: str,
        owner: str,
        now: float,
        *,
        weight: float = 1,
        feedback: Mapping[str, str] | None = None,
        user: str | None = None,
    ) -> Start:
        """Admission, a running-sync slot and (when the windows are the provider's) the first call's
        weight, in one write; each within ``user``'s share (none asked without a user). Nothing is written
        for a refusal, nor when only the first call must wait (the caller waits and starts again: a slot
        is never held, nor a probe claimed, just to wait)."""
        gate = self._gate_limits(provider)
        shared_windows = gate.windows

        def step(item: LimitItem | None, document: dict[str, Any]) -> Changes[Start]:
            breaker = BreakerState.from_dict(document.get("breaker"))
            levels = None if shared_windows is None else self._gate_windows(provider, item, shared_windows)
            start = decide_start(
                breaker,
                holders_of(item),
                levels,
                owner=owner,
                now=now,
                limits=gate,
                config=self.breaker_config,
                weight=weight,
                feedback=feedback,
                user=user,
                book=TenantBook.from_document(document.get("tenants"), gate.user_windows),
            )
            if start.waits_for_weight:
                return start, None, []
            changed = dict(document)
            if start.admission.state_after != breaker:
                changed["breaker"] = start.admission.state_after.to_dict()
            if shared_windows is not None and start.take is not None and start.take.state_after is not None:
                changed["windows"] = start.take.state_after.to_dict(shared_windows)
            if start.book_after is not None:
                changed["tenants"] = start.book_after.to_document(gate.user_windows)
            holders = (
                [] if start.slot is None or not start.slot.granted else holder_actions(item, start.slot.holders_after)
            )
            return start, (changed if changed != document else None), holders

        # Few attempts: in a burst of starts, losers back off with jitter (``ProviderWaits.start``) rather
        # than spend a write on every other winner.
        return self._update_gate(
            provider, step, attempts=_TOKEN_ATTEMPTS, confirm_no_write=lambda start: not start.waits_for_weight
        )

    def take_slot(self, provider: str, owner: str, now: float, *, user: str | None = None) -> float | None:
        """Take (or renew) ``owner``'s slot, within ``user``'s share; ``None`` when held, else seconds to wait."""
        step = slot_step(self._gate_limits(provider), owner, user, now)
        try:
            return self._update_gate(provider, step, attempts=_TOKEN_ATTEMPTS)
        except StoreBusyError:
            return 0.2  # lost every race: somebody else just joined; try again shortly

    def end_update(self, provider: str, owner: str, end: SyncEnd) -> SharedUpdate:
        """The slot back and the sync counted, as an update to ride in the dataset's final transaction."""
        return SharedUpdate(gate_key(provider), (holder_path(owner).remove(), *stats_actions(end)))

    def slot_given_back(self, provider: str, owner: str) -> None:
        """The sync's final transaction carried ``end_update``: the slot is free (this instance's memory too)."""
        self._shared.forget_holder(gate_key(provider), owner)

    def finish(self, provider: str, owner: str, end: SyncEnd | None) -> None:
        """Give the slot back and count the sync, in one write that needs no read (it may race anyone)."""
        actions = [holder_path(owner).remove(), *([] if end is None else stats_actions(end))]
        try:
            self._shared.add(gate_key(provider), actions)
        except ClientError as exc:  # no holders map at all (the gate was reset): only the statistics are left
            if exc.response.get("Error", {}).get("Code") != "ValidationException" or end is None:
                logger.warning("could not give back a %s slot; it frees itself when it expires", provider)
                return
            self._shared.add(gate_key(provider), stats_actions(end))
        except Exception:
            logger.exception("could not give back a %s slot or count its sync", provider)

    # --- breaker ---------------------------------------------------------------------

    def breaker(self, provider: str) -> BreakerState:
        return breaker_of(self._shared.get(gate_key(provider)))

    def _change_breaker(
        self, provider: str, change: Callable[[BreakerState], BreakerState], *, attempts: int = _ATTEMPTS
    ) -> BreakerState:
        def step(
            _item: LimitItem | None, document: dict[str, Any]
        ) -> tuple[BreakerState, dict[str, Any] | None, list[Any]]:
            state = BreakerState.from_dict(document.get("breaker"))
            after = change(state)
            return after, (None if after == state else {**document, "breaker": after.to_dict()}), []

        return self._update_gate(provider, step, attempts=attempts)

    def record_success(self, provider: str, seen: BreakerState) -> None:
        """The provider answered. Free when the breaker was already clean (the usual case)."""
        if seen.status is BreakerStatus.CLOSED and seen.consecutive_failures == 0:
            return
        self._change_breaker(provider, after_success)
        if seen.status is not BreakerStatus.CLOSED:
            logger.warning("provider %s answered again: circuit closed", provider)

    def release_probe(self, provider: str, owner: str) -> None:
        """Our probe will not report (it was deferred or handed off): let the next caller probe at once."""

        def freed(state: BreakerState) -> BreakerState:
            if state.status is not BreakerStatus.HALF_OPEN or state.probe_owner != owner:
                return state
            return replace(state, probe_owner=None, probe_expires_at=None)

        try:
            self._change_breaker(provider, freed, attempts=30)
        except StoreBusyError:
            logger.warning("could not free the %s probe; it frees itself when it expires", provider)

    def record_failure(self, provider: str, error: str, now: float) -> BreakerState:
        config = self.breaker_config
        after = self._change_breaker(provider, lambda state: after_failure(state, error, now, config))
        if after.status is BreakerStatus.OPEN and after.opened_at == now:
            logger.warning(
                "provider %s failed %d times in a row: circuit open for %ss",
                provider,
                after.consecutive_failures,
                config.cool_off_seconds,
            )
        return after

    # --- rate windows ----------------------------------------------------------------

    def _update_windows(
        self,
        provider: str,
        connection_scope: str | None,
        step: Callable[[Sequence[RateWindow], WindowLevels], tuple[T, WindowLevels | None]],
        *,
        attempts: int = _ATTEMPTS,
        confirm_no_write: bool = True,
    ) -> T:
        """Read one limit scope's windows (the gate's, or a connection's own item), decide, write once."""
        limits = self._registry.limits(provider)
        windows = limits.windows
        if self._shares_windows(limits):

            def on_gate(item: LimitItem | None, document: dict[str, Any]) -> Changes[T]:
                answer, after = step(windows, self._gate_windows(provider, item, windows))
                return answer, (None if after is None else {**document, "windows": after.to_dict(windows)}), []

            return self._update_gate(provider, on_gate, attempts=attempts, confirm_no_write=confirm_no_write)
        if not connection_scope:
            raise ValueError(f"provider {provider!r} limits each connection: a connection_scope is needed")

        def on_item(item: LimitItem | None) -> tuple[T, list[Any] | None]:
            answer, after = step(windows, windows_of(item, windows, in_gate=False))
            return answer, (None if after is None else shared_json_write(after.to_dict(windows)))

        key = connection_windows_key(provider, connection_scope)
        return self._shared.update(key, on_item, attempts=attempts, confirm_no_write=confirm_no_write)

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
        is "connection"; when the windows are the provider's, it names the user whose part of
        them the call must also fit.
        """

        def step(windows: Sequence[RateWindow], state: WindowLevels) -> tuple[float | None, WindowLevels | None]:
            result = take_weight(windows, state, now, weight=weight, feedback=feedback)
            return (None if result.granted else result.retry_after_seconds), result.state_after

        gate = self._gate_limits(provider)
        user = user_of_scope(connection_scope)
        try:
            # A wait decided on what this instance last saw is never shorter than the true one (other workers
            # only take), so it needs no read to confirm: the write after the wait meets any newer version.
            shared = gate.windows
            if shared is not None and gate.user_windows is not None and user is not None:
                share = share_take_step(
                    gate,
                    user,
                    now,
                    lambda item: self._gate_windows(provider, item, shared),
                    weight=weight,
                    feedback=feedback,
                )
                return self._update_gate(provider, share, attempts=_TOKEN_ATTEMPTS, confirm_no_write=False)
            return self._update_windows(
                provider, connection_scope, step, attempts=_TOKEN_ATTEMPTS, confirm_no_write=False
            )
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

    # --- reading several providers at once -------------------------------------------

    def gates(self, providers: Sequence[str]) -> dict[str, LimitItem]:
        """Each provider's gate item, from one BatchGetItem (absent for a provider never used)."""
        items = self._shared.get_many([gate_key(p) for p in providers])
        return {provider: items[gate_key(provider)] for provider in providers if gate_key(provider) in items}

    def snapshot(
        self, providers: Sequence[str], now: float, gates: Mapping[str, LimitItem] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Breaker, rate windows and running syncs of each provider (from one BatchGetItem unless given)."""
        gates = self.gates(providers) if gates is None else gates
        limits = {provider: self._registry.limits(provider) for provider in providers}
        return provider_views(limits, gates, self.breaker_config, now)

    def open_breakers(self, providers: list[str], now: float) -> dict[str, BreakerState]:
        """The breakers that are not closed, from one BatchGetItem (the tick's gate)."""
        gates = self.gates(providers)
        states = {provider: breaker_of(gates.get(provider)) for provider in providers}
        return {provider: state for provider, state in states.items() if state.status is not BreakerStatus.CLOSED}
