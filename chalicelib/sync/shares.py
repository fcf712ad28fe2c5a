"""Each user's share of a provider's gate, as read-decide-write steps on the gate item (``chalicelib/sync/pacing.py``
runs them). The decisions are pure (``chalicelib/domain/tenants.py``); these steps read the gate's tenant book
from its document and put what changed back in the same write, so a share costs no call of its own."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from chalicelib.domain.config import Settings
from chalicelib.domain.gate import GateLimits
from chalicelib.domain.limits import WindowLevels
from chalicelib.domain.tenants import (
    TenantBook,
    take_for_user,
    take_user_slot,
    user_slot_cap,
    user_windows,
)
from chalicelib.providers import LimitScope, ProviderLimits
from chalicelib.store.items import LimitItem
from chalicelib.store.shared import holder_actions, holders_of
from chalicelib.sync.gate_items import Changes, GateStep


def gate_limits(limits: ProviderLimits, settings: Settings) -> GateLimits:
    """The provider's slots and shared windows (``None`` when each connection has its own), and one user's share."""
    shared = limits.windows if limits.scope is LimitScope.PROVIDER else None
    return GateLimits(
        limits.max_concurrent_syncs,
        float(settings.lease_ttl_seconds),
        shared,
        user_slots=user_slot_cap(limits.max_concurrent_syncs, settings.user_max_slot_share),
        user_windows=None if shared is None else user_windows(shared, settings.user_max_rate_share),
    )


def slot_step(gate: GateLimits, owner: str, user: str | None, now: float) -> GateStep[float | None]:
    """Take (or renew) ``owner``'s slot within ``user``'s share: ``None`` when held, else seconds to wait."""

    def step(item: LimitItem | None, document: dict[str, Any]) -> Changes[float | None]:
        book = TenantBook.from_document(document.get("tenants"), gate.user_windows)
        result = take_user_slot(
            holders_of(item),
            book.slot_users,
            owner,
            user,
            capacity=gate.capacity,
            user_cap=gate.user_slots,
            now=now,
            ttl_seconds=gate.slot_ttl_seconds,
        )
        if not result.granted:
            return result.retry_after_seconds, None, []
        after = book.with_slot(owner, user, result.holders_after)
        changed = None if after == book else {**document, "tenants": after.to_document(gate.user_windows)}
        return None, changed, holder_actions(item, result.holders_after)

    return step


def share_take_step(
    gate: GateLimits,
    user: str,
    now: float,
    levels_of: Callable[[LimitItem | None], WindowLevels],
    *,
    weight: float,
    feedback: Mapping[str, str] | None,
) -> GateStep[float | None]:
    """One call's ``weight`` from the shared windows and from ``user``'s part of them, or from neither:
    ``None`` when granted, else seconds to wait. ``levels_of`` reads the shared windows off the gate item."""
    windows, parts = gate.windows, gate.user_windows
    if windows is None or parts is None:
        raise ValueError("a share's take needs the provider's shared windows and a user's part of them")

    def step(item: LimitItem | None, document: dict[str, Any]) -> Changes[float | None]:
        book = TenantBook.from_document(document.get("tenants"), parts)
        take, mine = take_for_user(
            windows, levels_of(item), parts, book.levels_of(user, parts), now, weight=weight, feedback=feedback
        )
        changed = dict(document)
        if take.state_after is not None:
            changed["windows"] = take.state_after.to_dict(windows)
        if mine is not None:
            changed["tenants"] = book.with_levels(user, mine, parts, now).to_document(parts)
        answer = None if take.granted else take.retry_after_seconds
        return answer, (changed if changed != document else None), []

    return step
