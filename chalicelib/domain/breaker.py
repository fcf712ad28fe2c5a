"""The per-provider circuit breaker: pure transitions. The state is shared in DynamoDB.

closed --(N consecutive failures)--> open --(cool-off passed, one caller wins the probe)--> half_open
half_open --(probe succeeds)--> closed;  half_open --(probe fails)--> open (cool-off starts again)
A probe that never reports (its Lambda died) frees the probe slot when ``probe_expires_at`` passes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from enum import StrEnum
from typing import Any


class BreakerStatus(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True)
class BreakerState:
    status: BreakerStatus = BreakerStatus.CLOSED
    consecutive_failures: int = 0
    opened_at: float | None = None
    probe_owner: str | None = None
    probe_expires_at: float | None = None
    last_failure: str | None = None
    last_failure_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> BreakerState:
        """Unknown keys (written by a newer or older version) are ignored, never fatal."""
        if not raw:
            return cls()
        known = {f.name for f in fields(cls)} - {"status"}
        try:
            status = BreakerStatus(raw.get("status", "closed"))
        except ValueError:
            status = BreakerStatus.CLOSED
        return cls(status=status, **{k: v for k, v in raw.items() if k in known})


@dataclass(frozen=True)
class BreakerConfig:
    failure_threshold: int = 5
    cool_off_seconds: float = 60.0
    probe_ttl_seconds: float = 120.0


@dataclass(frozen=True)
class Admission:
    allowed: bool
    state_after: BreakerState
    """What to store when it differs from the state read (a won probe); same object otherwise."""
    probe: bool = False
    retry_after_seconds: float = 0.0


def admit(state: BreakerState, owner: str, now: float, config: BreakerConfig) -> Admission:
    """May ``owner`` call the provider now?"""
    if state.status is BreakerStatus.CLOSED:
        return Admission(True, state)
    if state.status is BreakerStatus.OPEN:
        reopen_at = (state.opened_at or now) + config.cool_off_seconds
        if now < reopen_at:
            return Admission(False, state, retry_after_seconds=reopen_at - now)
        return _probe(state, owner, now, config)
    # half-open: one probe at a time
    if state.probe_owner == owner:
        return Admission(True, state, probe=True)
    if state.probe_expires_at is not None and now < state.probe_expires_at:
        return Admission(False, state, retry_after_seconds=state.probe_expires_at - now)
    return _probe(state, owner, now, config)


def _probe(state: BreakerState, owner: str, now: float, config: BreakerConfig) -> Admission:
    probing = replace(
        state, status=BreakerStatus.HALF_OPEN, probe_owner=owner, probe_expires_at=now + config.probe_ttl_seconds
    )
    return Admission(True, probing, probe=True)


def after_success(state: BreakerState) -> BreakerState:
    if state.status is BreakerStatus.CLOSED and state.consecutive_failures == 0:
        return state
    return BreakerState(last_failure=state.last_failure, last_failure_at=state.last_failure_at)


def after_failure(state: BreakerState, error: str, now: float, config: BreakerConfig) -> BreakerState:
    failures = state.consecutive_failures + 1
    failed = replace(state, consecutive_failures=failures, last_failure=error[:300], last_failure_at=now)
    if state.status is BreakerStatus.HALF_OPEN or (
        state.status is BreakerStatus.CLOSED and failures >= config.failure_threshold
    ):
        return replace(failed, status=BreakerStatus.OPEN, opened_at=now, probe_owner=None, probe_expires_at=None)
    return failed


def retry_at(state: BreakerState, now: float, config: BreakerConfig) -> float | None:
    """When a caller may next try (``None`` when the breaker lets calls through now)."""
    admission = admit(state, "status-page", now, config)
    return None if admission.allowed else now + admission.retry_after_seconds
