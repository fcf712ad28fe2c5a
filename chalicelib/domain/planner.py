"""The periodic fan-out's pure decisions: which due datasets become jobs, and how healthy the service is.

No I/O and no clock reads: the tick (``fanout.py``) reads the index and the breakers, then
asks ``tick_quota`` / ``plan_tick`` / ``quota_report``; the status page asks ``health_status``.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from chalicelib.domain.limits import RateWindow
from chalicelib.domain.model import DatasetKey

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
    per_connection: bool = False
    """``max_jobs`` is per connection (each connection has its own limit), not for the whole provider."""


@dataclass
class ProviderTick:
    """What one tick saw of one provider's due datasets (recorded for ``/sync/status``)."""

    due: int = 0
    """Due datasets that reached the provider's gate (not running, not queued, scheduled)."""
    planned: int = 0
    deferred_by_quota: int = 0
    deferred_by_breaker: int = 0
    oldest_due_at: float | None = None
    """``next_sync_at`` of the longest waiting one among those planned or deferred by the quota."""


@dataclass(frozen=True)
class TickPlan:
    jobs: list[DueDataset]
    skipped: Counter[str] = field(default_factory=Counter)
    providers: dict[str, ProviderTick] = field(default_factory=dict)


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
    taken: Counter[str] = Counter()
    seen: dict[str, ProviderTick] = {}
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
        if gate is not None and reason is None:
            # Oldest first, so a provider over its quota serves its longest waiting datasets: every
            # dataset's interval stretches by the same factor instead of some never being synced.
            view = seen.setdefault(due.provider, ProviderTick())
            view.due += 1
            limit = gate.max_jobs
            counter = _quota_counter(due, gate)
            if gate.breaker_open or (gate.probe_only and taken[counter] >= 1):
                reason = SkipReason.BREAKER_OPEN
                view.deferred_by_breaker += 1
            elif limit is not None and taken[counter] >= limit:
                reason = SkipReason.PROVIDER_QUOTA
                view.deferred_by_quota += 1
            else:
                view.planned += 1
                taken[counter] += 1
            if reason is not SkipReason.BREAKER_OPEN and view.oldest_due_at is None:
                view.oldest_due_at = due.next_sync_at
        if reason is not None:
            skipped[reason.value] += 1
            continue
        jobs.append(due)
    return TickPlan(jobs, skipped, seen)


def _quota_counter(due: DueDataset, gate: ProviderGate) -> str:
    if gate.per_connection and not gate.probe_only:
        return f"{due.provider}#{due.key.user_id}#{due.key.connection_id}"
    return due.provider


# --- provider quotas: how many syncs a tick may plan --------------------------------------------

QUOTA_HEADROOM = 1.5
"""A window no longer than the tick may be over-planned a little: its workers wait seconds for tokens."""
STRETCH_WARNING = 1.25
"""Scheduled intervals this much longer than configured are worth a health warning."""


@dataclass(frozen=True)
class TickQuota:
    per_tick: float
    """Syncs one tick may plan (a fraction carries over to the next tick)."""
    window: RateWindow
    """The tightest window: the one that gives the smallest ``per_tick``."""
    weight_per_sync: float


def tick_quota(windows: Sequence[RateWindow], *, tick_interval_seconds: float, weight_per_sync: float) -> TickQuota:
    """What the tightest window sustains over one tick, in syncs of ``weight_per_sync`` (at least 1).

    A window's sustained rate is its refill (its burst is spent once); a window longer than the
    tick gets no headroom, so a day's quota is spread over the day instead of spent by noon.
    """
    weight = max(1.0, weight_per_sync)

    def per_tick(window: RateWindow) -> float:
        headroom = QUOTA_HEADROOM if window.per_seconds <= tick_interval_seconds else 1.0
        return window.refill_per_second * tick_interval_seconds * headroom / weight

    tightest = min(windows, key=per_tick)
    return TickQuota(per_tick(tightest), tightest, weight)


def quota_credit(per_tick: float, carried: float | None, ticks_elapsed: float) -> float:
    """Syncs this tick may plan: the quota accrued since the last tick plus what it left unused.

    Fractions carry over (0.4 per tick plans one job every 2-3 ticks); at most one tick and one job
    are kept, so a provider with nothing due does not save up a burst. With no earlier tick the
    provider counts as idle: it starts at that cap.
    """
    cap = per_tick + 1.0
    if carried is None:
        return cap
    return min(cap, max(0.0, carried) + per_tick * max(0.0, ticks_elapsed))


def jobs_allowed(credit: float) -> int:
    return math.floor(credit + 1e-9)


def per_connection_jobs(per_tick: float) -> int:
    """A connection-scoped limit has no shared credit (one per connection would be one item each):
    at least one job per connection and tick, a connection's few datasets rarely need more."""
    return max(1, math.ceil(per_tick - 1e-9))


def stretch_factor(
    seen: ProviderTick,
    *,
    per_tick: float,
    now: float,
    tick_interval_seconds: float,
    schedule_every_seconds: float | None,
    per_connection: bool,
) -> float:
    """About how much longer than configured a scheduled interval gets when the quota cannot keep up.

    Served oldest first at ``c`` syncs per interval ``I``, a fleet of ``N`` datasets is synced every
    ``N / c`` intervals: that is the factor. ``N - c`` of them are due at any time and the oldest
    has waited ``(N / c - 1) * I``, so either count gives it; the larger is taken (the queue may
    still be growing). 1.0 when nothing was deferred by the quota.
    """
    if seen.deferred_by_quota == 0 or not schedule_every_seconds:
        return 1.0
    waited = 0.0 if seen.oldest_due_at is None else max(0.0, now - seen.oldest_due_at)
    by_age = 1.0 + waited / schedule_every_seconds
    if per_connection:
        return by_age  # the quota is per connection: the fleet's backlog says nothing about one of them
    per_interval = per_tick * schedule_every_seconds / tick_interval_seconds
    by_backlog = 1.0 + (seen.planned + seen.deferred_by_quota) / per_interval if per_interval > 0 else by_age
    return max(by_age, by_backlog)


def _count(value: float) -> str:
    if value >= 10:
        return f"{round(value):,}"
    return f"{value:.1f}".removesuffix(".0")


def quota_report(
    provider: str,
    seen: ProviderTick | None,
    quota: TickQuota,
    *,
    now: float,
    tick_interval_seconds: float,
    schedule_every_seconds: float | None,
    per_connection: bool,
) -> dict[str, Any]:
    """What the tick saw of one provider against its quota, with one plain sentence (``/sync/status``)."""
    seen = seen or ProviderTick()
    stretch = stretch_factor(
        seen,
        per_tick=quota.per_tick,
        now=now,
        tick_interval_seconds=tick_interval_seconds,
        schedule_every_seconds=schedule_every_seconds,
        per_connection=per_connection,
    )
    allowed = f"{_count(quota.per_tick)} per tick{' per connection' if per_connection else ''}"
    by = quota.window.describe()
    if quota.weight_per_sync != 1:
        by += f" at about {quota.weight_per_sync:g} per sync"
    due = f"{seen.due:,} dataset{'' if seen.due == 1 else 's'} due"
    if seen.due == 0:
        sentence = f"{provider}: nothing due ({allowed} allowed by {by})"
    elif seen.deferred_by_quota == 0:
        sentence = f"{provider}: {due}, all within the {allowed} allowed by {by}"
    else:
        sentence = (
            f"{provider}: {due}, {allowed} allowed by {by}; "
            f"scheduled syncs are spaced out evenly (about {stretch:.1f}x their interval)"
        )
    return {
        "due": seen.due,
        "planned": seen.planned,
        "deferred_by_quota": seen.deferred_by_quota,
        "deferred_by_breaker": seen.deferred_by_breaker,
        "oldest_due_age_seconds": None if seen.oldest_due_at is None else round(max(0.0, now - seen.oldest_due_at)),
        "per_tick": round(quota.per_tick, 3),
        "per_connection": per_connection,
        "limited_by": by,
        "stretch_factor": round(stretch, 2),
        "summary": sentence,
    }


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
    stretched_schedules: tuple[str, ...] = ()
    """Sentences about providers whose quota spaces scheduled syncs out (``quota_report``'s summary)."""


def health_status(inputs: HealthInputs, now: float, tick_interval_seconds: float) -> tuple[Health, list[str]]:
    """healthy / warning / degraded / unhealthy, with the reasons (docs/api.md: ``health_status``)."""
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
    warning.extend(inputs.stretched_schedules)
    for level, reasons in ((Health.UNHEALTHY, unhealthy), (Health.DEGRADED, degraded), (Health.WARNING, warning)):
        if reasons:
            return level, reasons
    return Health.HEALTHY, []
