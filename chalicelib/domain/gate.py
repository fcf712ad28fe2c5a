"""A provider's gate: may a sync start calling it, and with its first call's weight taken?

One decision over the three things a start must agree with at once (the breaker, the running
syncs and, when the provider's windows are shared, the rate windows), so the gate item holding
all three is written once per start. Pure: state and ``now`` in, decision out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from chalicelib.domain.breaker import Admission, BreakerConfig, BreakerState, admit
from chalicelib.domain.limits import RateWindow, SlotTake, WindowLevels, WindowTake, take_slot, take_weight


@dataclass(frozen=True)
class GateLimits:
    capacity: int
    """How many syncs of the provider may run at once."""
    slot_ttl_seconds: float
    windows: Sequence[RateWindow] | None
    """The provider's shared rate windows; ``None`` when each connection has its own (taken elsewhere)."""


@dataclass(frozen=True)
class Start:
    admission: Admission
    slot: SlotTake | None
    """``None`` when the breaker refused (nothing else was asked)."""
    take: WindowTake | None
    """The first call's weight; ``None`` when not asked (refused earlier, or windows kept elsewhere)."""

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
) -> Start:
    """Ask the breaker, then for a slot, then (when the windows are shared) for the first call's weight."""
    admission = admit(breaker, owner, now, config)
    if not admission.allowed:
        return Start(admission, None, None)
    slot = take_slot(holders, owner, limits.capacity, now, limits.slot_ttl_seconds)
    if not slot.granted or limits.windows is None or levels is None:
        return Start(admission, slot, None)
    return Start(admission, slot, take_weight(limits.windows, levels, now, weight=weight, feedback=feedback))
