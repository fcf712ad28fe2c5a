"""What a provider's gate item is called and holds, beside the decisions: the items' keys, the statistics a
sync's end adds, and the shape of one read-decide-write step on the gate (``chalicelib/sync/pacing.py``)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from chalicelib.store.items import LimitItem

T = TypeVar("T")
GateStep = Callable[[LimitItem | None, dict[str, Any]], tuple[T, dict[str, Any] | None, list[Any]]]
"""Gets the gate item and its document; gives the answer, the new document (``None``: unchanged), holder actions."""
Changes = tuple[T, dict[str, Any] | None, list[Any]]


def gate_key(provider: str) -> str:
    """The item holding a provider's breaker, running syncs, shared rate windows and statistics."""
    return f"gate#{provider}"


def legacy_windows_key(provider: str) -> str:
    """Where versions before the gate kept a provider's windows (read along with a gate never written)."""
    return f"bucket#{provider}"


def connection_windows_key(provider: str, connection_scope: str) -> str:
    """The item holding one connection's rate windows (providers that limit each API key)."""
    return f"bucket#{provider}#{connection_scope}"


def connection_scope_of(user_id: str, connection_id: str) -> str:
    """What the engine passes as ``connection_scope`` for a connection."""
    return f"{user_id}#{connection_id}"


@dataclass(frozen=True)
class SyncEnd:
    """How a sync ended, for the provider's statistics."""

    succeeded: bool
    duration_seconds: float
    error: str | None
    at: float


def stats_actions(end: SyncEnd) -> list[Any]:
    duration = round(end.duration_seconds, 3)
    actions: list[Any] = [
        LimitItem.total_syncs.add(1),
        LimitItem.duration_sum.add(duration),
        LimitItem.last_duration.set(duration),
        LimitItem.last_finished_at.set(end.at),
    ]
    if end.succeeded:
        return [*actions, LimitItem.succeeded_syncs.add(1), LimitItem.consecutive_failures.set(0)]
    return [
        *actions,
        LimitItem.failed_syncs.add(1),
        LimitItem.consecutive_failures.add(1),
        LimitItem.last_error.set((end.error or "failed")[:500]),
        LimitItem.last_error_at.set(end.at),
    ]
