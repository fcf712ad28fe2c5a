"""A provider's gate: may a sync start calling it, and with its first call's weight taken?

One decision over the things a start must agree with at once (the breaker, the running syncs,
the starting user's share of them and, when the provider's windows are shared, the rate windows
and the user's part of them: ``chalicelib/domain/tenants.py``), so the gate item holding all of
them is written once per start. Pure: state and ``now`` in, decision out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chalicelib.domain.breaker import Admission, BreakerConfig, BreakerState, admit
from chalicelib.domain.limits import RateWindow, SlotTake, WindowLevels, WindowTake
from chalicelib.domain.tenants import TenantBook, take_for_user, take_user_slot


@dataclass(frozen=True)
class GateLimits:
    capacity: int
    """How many syncs of the provider may run at once."""
    slot_ttl_seconds: float
    windows: Sequence[RateWindow] | None
    """The provider's shared rate windows; ``None`` when each connection has its own (taken elsewhere)."""
    user_slots: int | None = None
    """The most slots one user's syncs may hold at once; ``None``: only ``capacity`` bounds them."""
    user_windows: Sequence[RateWindow] | None = None
    """One user's part of the shared windows (``tenants.user_windows``); ``None``: no per-user part."""


@dataclass(frozen=True)
class Start:
    admission: Admission
    slot: SlotTake | None
    """``None`` when the breaker refused (nothing else was asked)."""
    take: WindowTake | None
    """The first call's weight; ``None`` when not asked (refused earlier, or windows kept elsewhere)."""
    book_after: TenantBook | None = None
    """The gate's tenant book to write (the slot's user, the user's levels); ``None``: unchanged."""

    @property
    def waits_for_weight(self) -> bool:
        """Admitted and a slot free, but the first call must wait for the rate windows."""
        return (
            self.admission.allowed
            and self.slot is not None
            and self.slot.granted
            and (self.take is not None and not self.take.granted)
        )

    @property
    def slot_wait(self) -> float | None:
        """Seconds until a slot may free; ``None`` once the slot is held."""
        if self.slot is None or self.slot.granted:
            return None
        return self.slot.retry_after_seconds


def decide_start(
    breaker: BreakerState,
    holders: Mapping[str, float],
    levels: WindowLevels | None,
    *,
    owner: str,
    now: float,
    limits: GateLimits,
    config: BreakerConfig,
    weight: float,
    feedback: Mapping[str, str] | None = None,
    user: str | None = None,
    book: TenantBook | None = None,
) -> Start:
    """Ask the breaker, then for a slot (within ``user``'s share), then (when the windows are shared) for
    the first call's weight (within the user's part of them)."""
    admission = admit(breaker, owner, now, config)
    if not admission.allowed:
        return Start(admission, None, None)
    book = book or TenantBook()
    slot = take_user_slot(
        holders,
        book.slot_users,
        owner,
        user,
        capacity=limits.capacity,
        user_cap=limits.user_slots,
        now=now,
        ttl_seconds=limits.slot_ttl_seconds,
    )
    if not slot.granted:
        return Start(admission, slot, None)
    after = book.with_slot(owner, user, slot.holders_after)
    if limits.windows is None or levels is None:
        return Start(admission, slot, None, None if after == book else after)
    parts = limits.user_windows if user is not None else None
    take, mine = take_for_user(
        limits.windows,
        levels,
        parts,
        None if parts is None or user is None else book.levels_of(user, parts),
        now,
        weight=weight,
        feedback=feedback,
    )
    if mine is not None and parts is not None and user is not None:
        after = after.with_levels(user, mine, parts, now)
    return Start(admission, slot, take, None if after == book else after)
