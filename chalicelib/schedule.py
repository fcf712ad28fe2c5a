"""The periodic fan-out's pure decisions: which due datasets become jobs, and how healthy the service is.

No I/O and no clock reads: the tick (``fanout.py``) reads the index and the breakers, then
asks ``plan_tick``; the status page asks ``health_status``.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from chalicelib.domain import DatasetKey

TICK_INTERVAL_MINUTES = 1
"""The EventBridge rate (``app.py``); change it here, then redeploy."""
TICK_INTERVAL_SECONDS = TICK_INTERVAL_MINUTES * 60

SCHEDULE_SHARDS = 16
"""Partitions of the ``by_next_sync`` index. Changing it strands datasets on old shards until they sync again."""


def schedule_shard(dataset_id: str) -> str:
    """A stable shard for a dataset: a hash, so one user's datasets spread over every partition."""
    digest = hashlib.sha256(dataset_id.encode()).digest()
    return f"s{int.from_bytes(digest[:4], 'big') % SCHEDULE_SHARDS:02d}"


def all_shards() -> list[str]:
    return [f"s{index:02d}" for index in range(SCHEDULE_SHARDS)]


@dataclass(frozen=True)
class DueDataset:
    """A dataset as the schedule index shows it (only the projected attributes)."""

    key: DatasetKey
    provider: str
    next_sync_at: float
    lease_expires_at: float | None = None
    queued_job_id: str | None = None
    queued_at: float | None = None


class SkipReason(StrEnum):
    PAUSED = "service_paused"
    NOT_DUE = "not_due"
    RUNNING = "running"
    QUEUED = "already_queued"
    ON_DEMAND = "on_demand_only"
    UNKNOWN_PROVIDER = "unknown_provider"
    BREAKER_OPEN = "provider_circuit_open"
    PROVIDER_QUOTA = "provider_tick_quota"


@dataclass(frozen=True)
class ProviderGate:
    """What the tick may send to one provider this time."""

    breaker_open: bool = False
    """Refusing calls: its datasets stay due (deferred, not failed)."""
    probe_only: bool = False
    """Cool-off over: let one job through to probe it."""
    max_jobs: int | None = None
    """At most this many jobs per tick (about what its rate limit can serve before the next tick)."""


@dataclass(frozen=True)
class TickPlan:
    jobs: list[DueDataset]
    skipped: Counter[str] = field(default_factory=Counter)


def plan_tick(
    candidates: Iterable[DueDataset],
    now: float,
    *,
    paused: bool,
    gates: Mapping[str, ProviderGate],
    on_demand: frozenset[tuple[str, str]],
    claim_ttl_seconds: float,
) -> TickPlan:
    """Due datasets + now -> the datasets to queue a sync for, oldest due first.

    ``gates`` has an entry for every provider the service knows; ``on_demand`` holds the
    (provider, data type) pairs whose policy has no schedule (their index entry is left
    over from an older policy).
    """
    skipped: Counter[str] = Counter()
    ordered = sorted(candidates, key=lambda d: (d.next_sync_at, d.key.dataset_id))
    if paused:
        skipped[SkipReason.PAUSED.value] = len(ordered)
        return TickPlan([], skipped)
    jobs: list[DueDataset] = []
    per_provider: Counter[str] = Counter()
    for due in ordered:
        gate = gates.get(due.provider)
        reason: SkipReason | None = None
        if due.next_sync_at > now:
            reason = SkipReason.NOT_DUE
        elif gate is None:
            reason = SkipReason.UNKNOWN_PROVIDER
        elif (due.provider, due.key.data_type) in on_demand:
            reason = SkipReason.ON_DEMAND
        elif due.lease_expires_at is not None and due.lease_expires_at > now:
            reason = SkipReason.RUNNING
        elif due.queued_job_id and due.queued_at is not None and now - due.queued_at < claim_ttl_seconds:
            reason = SkipReason.QUEUED
        elif gate.breaker_open:
            reason = SkipReason.BREAKER_OPEN
        else:
            limit = 1 if gate.probe_only else gate.max_jobs
            if limit is not None and per_provider[due.provider] >= limit:
                reason = SkipReason.BREAKER_OPEN if gate.probe_only else SkipReason.PROVIDER_QUOTA
        if reason is not None:
            skipped[reason.value] += 1
            continue
        per_provider[due.provider] += 1
        jobs.append(due)
    return TickPlan(jobs, skipped)


# --- health ---------------------------------------------------------------------------------------


class Health(StrEnum):
    HEALTHY = "healthy"
    WARNING = "warning"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


MIN_SYNCS_FOR_RATE = 10
LATE_TICKS = 5


@dataclass(frozen=True)
class HealthInputs:
    total_syncs: int
    succeeded_syncs: int
    consecutive_failures: int
    open_breakers: list[str]
    paused: bool
    last_tick_at: float | None
    started_at: float | None
    """When the scheduler state was first written (a fresh deployment has not ticked yet)."""
    failure_threshold: int


def health_status(inputs: HealthInputs, now: float, tick_interval_seconds: float) -> tuple[Health, list[str]]:
    """healthy / warning / degraded / unhealthy, with the reasons (README: "Health")."""
    rate = inputs.succeeded_syncs / inputs.total_syncs * 100.0 if inputs.total_syncs >= MIN_SYNCS_FOR_RATE else None
    late_after = LATE_TICKS * tick_interval_seconds
    reference = inputs.last_tick_at if inputs.last_tick_at is not None else inputs.started_at
    unhealthy: list[str] = []
    degraded: list[str] = []
    warning: list[str] = []
    if not inputs.paused and reference is not None and now - reference > late_after:
        unhealthy.append(f"the schedule has not ticked for {int(now - reference)}s")
    if rate is not None and rate < 50:
        unhealthy.append(f"success rate {rate:.1f}% is below 50%")
    if inputs.open_breakers:
        degraded.append(f"circuit open for {', '.join(sorted(inputs.open_breakers))}")
    if inputs.consecutive_failures >= inputs.failure_threshold:
        degraded.append(f"{inputs.consecutive_failures} syncs failed in a row")
    if rate is not None and rate < 80:
        degraded.append(f"success rate {rate:.1f}% is below 80%")
    if 0 < inputs.consecutive_failures < inputs.failure_threshold:
        warning.append(f"{inputs.consecutive_failures} sync(s) failed in a row")
    if rate is not None and rate < 95:
        warning.append(f"success rate {rate:.1f}% is below 95%")
    if inputs.last_tick_at is None and not inputs.paused:
        warning.append("the schedule has not ticked yet")
    for level, reasons in ((Health.UNHEALTHY, unhealthy), (Health.DEGRADED, degraded), (Health.WARNING, warning)):
        if reasons:
            return level, reasons
    return Health.HEALTHY, []
