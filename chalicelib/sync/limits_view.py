"""What ``/sync/status`` shows of each provider's gate: breaker, rate windows, running syncs, statistics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from chalicelib.domain.breaker import BreakerConfig, BreakerState, BreakerStatus, retry_at
from chalicelib.domain.clock import to_iso
from chalicelib.domain.limits import RateWindow, WindowLevels, levels_at
from chalicelib.providers import LimitScope, ProviderLimits
from chalicelib.store.items import LimitItem
from chalicelib.store.shared import holders_of, shared_json


def gate_document(item: LimitItem | None) -> dict[str, Any]:
    return shared_json(item) or {}


def breaker_of(item: LimitItem | None) -> BreakerState:
    return BreakerState.from_dict(gate_document(item).get("breaker"))


def legacy_windows(item: LimitItem | None, windows: Sequence[RateWindow]) -> WindowLevels:
    """A provider's windows as the versions before the gate kept them (``bucket#<provider>``): a JSON
    document of levels, or before that a single bucket's tokens."""
    document = shared_json(item)
    if item is None or document is not None:
        return WindowLevels.from_dict(document, windows)
    return WindowLevels.from_single_bucket(item.tokens, item.updated_at, windows)


def windows_of(item: LimitItem | None, windows: Sequence[RateWindow], *, in_gate: bool) -> WindowLevels:
    document = gate_document(item).get("windows") if in_gate else shared_json(item)
    return WindowLevels.from_dict(document, windows)


def provider_views(
    limits_of: Mapping[str, ProviderLimits],
    gates: Mapping[str, LimitItem],
    config: BreakerConfig,
    now: float,
) -> dict[str, dict[str, Any]]:
    """Breaker, rate windows and running syncs of each provider, from their gate items."""
    out: dict[str, dict[str, Any]] = {}
    for provider, limits in limits_of.items():
        gate = gates.get(provider)
        breaker = breaker_of(gate)
        running = sum(1 for expiry in holders_of(gate).values() if expiry > now)
        out[provider] = {
            "breaker": {
                "state": breaker.status.value,
                "consecutive_failures": breaker.consecutive_failures,
                "opened_at": to_iso(breaker.opened_at) if breaker.status is not BreakerStatus.CLOSED else None,
                "next_probe_at": to_iso(retry_at(breaker, now, config)),
                "last_failure": breaker.last_failure,
                "last_failure_at": to_iso(breaker.last_failure_at),
            },
            **rate_view(limits, windows_of(gate, limits.windows, in_gate=True), now),
            "concurrency": {"running_syncs": running, "max_concurrent_syncs": limits.max_concurrent_syncs},
        }
    return out


def service_statistics(gates: Iterable[LimitItem]) -> LimitItem:
    """The whole service's sync statistics, summed over its providers' gates. Its consecutive failures
    are the longest current streak of any provider; its last sync and error, the latest of any."""
    total = LimitItem("statistics")
    for gate in gates:
        for name in ("total_syncs", "succeeded_syncs", "failed_syncs", "duration_sum"):
            value = getattr(gate, name)
            if value is not None:
                setattr(total, name, (getattr(total, name) or 0) + value)
        total.consecutive_failures = max(total.consecutive_failures or 0, gate.consecutive_failures or 0)
        if gate.last_finished_at is not None and (total.last_finished_at or 0) <= gate.last_finished_at:
            total.last_finished_at, total.last_duration = gate.last_finished_at, gate.last_duration
        if gate.last_error_at is not None and (total.last_error_at or 0) <= gate.last_error_at:
            total.last_error_at, total.last_error = gate.last_error_at, gate.last_error
    return total


def rate_view(limits: ProviderLimits, state: WindowLevels, now: float) -> dict[str, Any]:
    """``scope``, each window's level and capacity, and ``bucket`` (the emptiest window, as before windows).

    A provider limited per connection has one state per connection: its levels are not listed here.
    """
    windows = limits.windows
    shared = limits.scope is LimitScope.PROVIDER
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
