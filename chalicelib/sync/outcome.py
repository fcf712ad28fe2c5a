"""What one sync attempt came to (``SyncEngine.execute``'s answer); callers import it from ``engine.py``."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from chalicelib.domain.model import SyncCounts


class OutcomeKind(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    HANDED_OFF = "handed_off"
    """The deadline passed (or the provider asked us to wait); the sync goes on as a queued job."""
    DEFERRED = "deferred"
    """Not started: the provider's breaker is open or all its slots are busy. Nothing was fetched."""
    LEASE_LOST = "lease_lost"
    TIMED_OUT = "timed_out"
    """A joiner's budget ran out while someone else's sync was still running."""


@dataclass(frozen=True)
class SyncOutcome:
    kind: OutcomeKind
    run_id: str | None
    counts: SyncCounts
    error: str | None = None
    joined: bool = False
    continuation_run_id: str | None = None
    retry_after_seconds: float | None = None
    """For DEFERRED: when trying again makes sense."""
    breaker_open: bool = False
    """For DEFERRED: the provider is failing (the job is dropped; the schedule sends it again later)."""

    @property
    def succeeded(self) -> bool:
        return self.kind is OutcomeKind.SUCCEEDED
