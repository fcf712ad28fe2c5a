"""One user's bounded share of a provider: of its concurrent slots, and of each of its shared rate windows.

Pure: state and ``now`` in, decision out. The gate item (``chalicelib/sync/pacing.py``) keeps a
``TenantBook`` in its JSON document beside the holders map (owner -> expiry): whose user each holder
is, and what each user took lately of the shared windows. So a user's share is decided and written in
the gate's own writes: a sync's start, each later call, a slot's renewal. Nothing costs a call of its own.

A user's part of a window (of a minute or longer) is a token bucket of its own, scaled from the
window: ``share`` of its burst and ``share`` of its requests per period, so within any period of the
window one user takes at most ``share`` of it (the argument of ``chalicelib/domain/limits.py``,
applied to the smaller bucket). A call must fit both the provider's bucket and the user's. A user
whose buckets are full again is dropped from the book: it is as if they had never called.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from chalicelib.domain.limits import (
    RateWindow,
    SlotTake,
    WindowLevels,
    WindowTake,
    levels_at,
    observe,
    take_slot,
    take_weight,
)

# A level this close to its capacity is full (float refill arithmetic never lands exactly on it).
_FULL_EPSILON = 1e-6
SHARED_PERIOD_SECONDS = 60.0
"""Windows this long or longer are split into users' parts. A shorter window refills before a wait for it
could starve anyone (the slots' share already bounds how many calls one user has in flight), and splitting
it would only slow a lone user's sync down."""


def user_slot_cap(capacity: int, share: float) -> int:
    """The most of ``capacity`` slots one user may hold: ``share`` below 1 is a fraction (rounded down,
    at least one slot), from 1 a count of slots (never more than ``capacity``)."""
    if share >= 1:
        return max(1, min(capacity, int(share)))
    return max(1, math.floor(capacity * share + _FULL_EPSILON))


def user_windows(windows: Sequence[RateWindow], share: float) -> tuple[RateWindow, ...] | None:
    """One user's part of each shared window of a minute or longer, or ``None`` when there is none (no such
    window, or ``share`` leaves every window whole).

    Each part keeps at least one call of burst (a user may always make a call, in time); its
    requests are never below its burst (a one-request part refills just under one call per period).
    """
    long_windows = [window for window in windows if window.per_seconds >= SHARED_PERIOD_SECONDS]
    if share >= 1 or not long_windows:
        return None
    parts: list[RateWindow] = []
    for window in long_windows:
        burst = min(window.burst, max(1.0, window.burst * share))
        requests = max(burst, window.requests * share)
        parts.append(RateWindow(requests=requests, per_seconds=window.per_seconds, burst=burst))
    return tuple(parts)


def take_user_slot(
    holders: Mapping[str, float],
    slot_users: Mapping[str, str],
    owner: str,
    user: str | None,
    *,
    capacity: int,
    user_cap: int | None,
    now: float,
    ttl_seconds: float,
) -> SlotTake:
    """``take_slot``, refused also when ``user``'s own live holders already number ``user_cap``.

    A holder renewing its own slot always succeeds. A refusal for the user's share says when the
    user's first slot may free (its expiry: a sync normally gives it back much sooner).
    """
    live = {name: expiry for name, expiry in holders.items() if expiry > now}
    if user is not None and user_cap is not None and owner not in live:
        mine = [expiry for name, expiry in live.items() if slot_users.get(name) == user]
        if len(mine) >= user_cap:
            return SlotTake(False, live, max(0.0, min(mine) - now))
    return take_slot(holders, owner, capacity, now, ttl_seconds)


def take_for_user(
    windows: Sequence[RateWindow],
    levels: WindowLevels,
    parts: Sequence[RateWindow] | None,
    user_levels: WindowLevels | None,
    now: float,
    *,
    weight: float = 1,
    feedback: Mapping[str, str] | None = None,
) -> tuple[WindowTake, WindowLevels | None]:
    """Take ``weight`` from the shared windows and from the user's part of them, or from neither.

    Returns the shared take (refused when either refused: then its wait is the longer one that
    refused) and the user's levels after a grant (``None``: nothing to write for the user). The
    provider's ``feedback`` still lowers the shared windows when only the user's part refused.
    """
    take = take_weight(windows, levels, now, weight=weight, feedback=feedback)
    if not take.granted or parts is None or user_levels is None:
        return take, None
    mine = take_weight(parts, user_levels, now, weight=weight)
    if mine.granted:
        return take, mine.state_after
    tightened = observe(windows, levels, feedback, now) if feedback else None
    return WindowTake(False, mine.retry_after_seconds, tightened), None


def _full(parts: Sequence[RateWindow], levels: WindowLevels, now: float) -> bool:
    return all(
        level >= part.capacity - _FULL_EPSILON for part, level in zip(parts, levels_at(parts, levels, now), strict=True)
    )


@dataclass(frozen=True)
class TenantBook:
    """What a gate knows of its users: who each slot holder's user is, and each user's part of the windows."""

    slot_users: Mapping[str, str] = field(default_factory=dict)
    """owner -> user, for the gate's holders (a holder with no entry counts for no user)."""
    levels: Mapping[str, WindowLevels] = field(default_factory=dict)
    """user -> the user's part of the shared windows (absent: full)."""

    @classmethod
    def from_document(cls, raw: Any, parts: Sequence[RateWindow] | None) -> TenantBook:
        """The book as the gate document keeps it; levels kept for other parts (a changed share) are dropped."""
        if not isinstance(raw, Mapping):
            return cls()
        slots = raw.get("slots")
        slot_users = {str(o): str(u) for o, u in slots.items()} if isinstance(slots, Mapping) else {}
        stored = raw.get("levels")
        if parts is None or raw.get("windows") != [p.key for p in parts] or not isinstance(stored, Mapping):
            return cls(slot_users, {})
        levels: dict[str, WindowLevels] = {}
        for user, entry in stored.items():
            if isinstance(entry, list) and len(entry) == len(parts) + 1:
                updated_at, *values = entry
                capped = tuple(min(p.capacity, float(v)) for p, v in zip(parts, values, strict=True))
                levels[str(user)] = WindowLevels(capped, float(updated_at), None)
        return cls(slot_users, levels)

    def to_document(self, parts: Sequence[RateWindow] | None) -> dict[str, Any]:
        """Compact: each user's levels as ``[updated_at, level...]`` in the order of ``windows``."""
        document: dict[str, Any] = {"slots": dict(self.slot_users)}
        if parts is not None and self.levels:
            document["windows"] = [p.key for p in parts]
            document["levels"] = {
                user: [state.updated_at, *(round(level, 6) for level in state.levels)]
                for user, state in self.levels.items()
            }
        return document

    def levels_of(self, user: str, parts: Sequence[RateWindow]) -> WindowLevels:
        return self.levels.get(user) or WindowLevels.fresh(parts)

    def with_slot(self, owner: str, user: str | None, holders_after: Mapping[str, float]) -> TenantBook:
        """The holders are now ``holders_after`` (with ``owner`` among them, as ``user``'s when named)."""
        slot_users = {name: u for name, u in self.slot_users.items() if name in holders_after}
        if user is not None and owner in holders_after:
            slot_users[owner] = user
        return TenantBook(slot_users, self.levels)

    def with_levels(self, user: str, levels: WindowLevels, parts: Sequence[RateWindow], now: float) -> TenantBook:
        """``user`` took from their part; users whose parts are full again leave the book."""
        kept = {name: state for name, state in self.levels.items() if name != user and not _full(parts, state, now)}
        kept[user] = levels
        return TenantBook(self.slot_users, kept)


def user_of_scope(connection_scope: str | None) -> str | None:
    """The user of a ``user#connection`` limit scope (``chalicelib/sync/pacing.py``'s ``connection_scope_of``)."""
    if not connection_scope or "#" not in connection_scope:
        return None
    return connection_scope.split("#", 1)[0] or None
