"""The scheduled fan-out: find due datasets through the sharded index, plan, claim, send to SQS.

A tick never scans the table and never writes per dataset: one Query per shard, one
TransactWriteItems per 100 claims, one SendMessageBatch per 10 jobs. Claims make a
double-fired tick (EventBridge delivers at least once) or a manual ``POST /sync/run``
racing the schedule harmless: a dataset is claimed by one of them only.

Each provider gets a quota per tick: what its tightest rate window sustains (``tick_quota``).
Fractions carry over in the scheduler state, so a tick fired twice plans nothing twice and a
daily limit is spread over the day. What each tick saw is kept per provider under ``quota``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Protocol

from chalicelib.domain.breaker import admit
from chalicelib.domain.clock import Clock
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import SmartSyncError
from chalicelib.domain.model import DatasetKey, Trigger, new_run_id
from chalicelib.domain.planner import (
    DueDataset,
    ProviderGate,
    TickPlan,
    TickQuota,
    all_shards,
    jobs_allowed,
    per_connection_jobs,
    plan_tick,
    quota_credit,
    quota_report,
    tick_quota,
)
from chalicelib.providers import LimitScope, ProviderRegistry
from chalicelib.providers.policies import PolicyResolver
from chalicelib.store.shared import SharedStore
from chalicelib.sync.jobs import Job, JobQueue
from chalicelib.sync.pacing import ProviderGuard

logger = logging.getLogger(__name__)

SCHEDULER_KEY = "scheduler"
_PARALLEL_CALLS = 8
_CLAIM_CHUNK = 100


class FanOutStore(Protocol):
    """What the tick touches: the schedule index, queue claims and the scheduler item."""

    @property
    def shared(self) -> SharedStore: ...

    def claim_due(
        self, claims: Sequence[tuple[DueDataset, str]], now: float, claim_ttl_seconds: float
    ) -> list[str]: ...

    def due_datasets(self, shard: str, now: float, limit: int) -> list[DueDataset]: ...

    def release_queue_claim(self, key: DatasetKey, job_id: str, *, unschedule: bool = False) -> None: ...


@dataclass(frozen=True)
class SchedulerState:
    paused: bool = False
    changed_at: float | None = None
    """When it was last paused or resumed."""
    first_seen_at: float | None = None
    last_tick_at: float | None = None
    last_tick: dict[str, Any] = field(default_factory=dict)
    quota: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per provider: what the last tick saw against its quota (``quota_report``) and the ``credit`` it left."""

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> SchedulerState:
        """Unknown keys (written by a newer or older version) are ignored, never fatal."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (raw or {}).items() if k in known})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class FanOut:
    def __init__(
        self,
        store: FanOutStore,
        registry: ProviderRegistry,
        policies: PolicyResolver,
        guard: ProviderGuard,
        queue: JobQueue,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._store = store
        self._registry = registry
        self._policies = policies
        self._guard = guard
        self._queue = queue
        self._clock = clock
        self._settings = settings

    # --- scheduler state -------------------------------------------------------

    def state(self) -> SchedulerState:
        return SchedulerState.from_dict(self._store.shared.get_json(SCHEDULER_KEY))

    def set_paused(self, paused: bool) -> SchedulerState:
        now = self._clock.now()

        def decide(current: dict[str, Any] | None) -> tuple[SchedulerState, dict[str, Any] | None]:
            state = SchedulerState.from_dict(current)
            if state.paused == paused and current is not None:
                return state, None
            changed = replace(state, paused=paused, changed_at=now, first_seen_at=state.first_seen_at or now)
            return changed, changed.to_dict()

        state = self._store.shared.update_json(SCHEDULER_KEY, decide)
        logger.warning("scheduler %s", "paused" if paused else "resumed")
        return state

    def _record_tick(self, summary: dict[str, Any], now: float, quota: dict[str, dict[str, Any]] | None) -> None:
        def decide(current: dict[str, Any] | None) -> tuple[None, dict[str, Any]]:
            state = SchedulerState.from_dict(current)
            ticked = replace(state, last_tick_at=now, last_tick=summary, first_seen_at=state.first_seen_at or now)
            if quota is not None:
                ticked = replace(ticked, quota=quota)
            return None, ticked.to_dict()

        self._store.shared.update_json(SCHEDULER_KEY, decide)

    # --- the tick --------------------------------------------------------------

    def tick(self, *, trigger: str = "schedule") -> dict[str, Any]:
        """Queue a sync for every due dataset the plan allows; returns what it did."""
        now = self._clock.now()
        state = self.state()
        summary: dict[str, Any] = {"trigger": trigger, "due": 0, "queued": 0, "skipped": {}}
        if state.paused:
            summary["skipped"] = {"service_paused": "all"}
            self._record_tick(summary, now, None)
            return summary
        quotas = self._quotas()
        credits = self._credits(quotas, state, now)
        gates = self._gates(now, quotas, credits)
        candidates = self._due(now)
        plan = plan_tick(
            candidates,
            now,
            paused=False,
            gates=gates,
            on_demand=self._on_demand(),
            claim_ttl_seconds=self._settings.queue_claim_ttl_seconds,
        )
        jobs = [
            (due, Job(key=due.key, run_id=new_run_id(now), trigger=Trigger.SCHEDULE, created_at=now))
            for due in plan.jobs
        ]
        chunks = [jobs[start : start + _CLAIM_CHUNK] for start in range(0, len(jobs), _CLAIM_CHUNK)]
        skipped = Counter(plan.skipped)
        queued = 0
        with ThreadPoolExecutor(max_workers=_PARALLEL_CALLS) as pool:
            for sent, lost_claims, unsent in pool.map(lambda chunk: self._claim_and_send(chunk, now), chunks):
                queued += sent
                skipped["claimed_elsewhere"] += lost_claims
                skipped["queue_unavailable"] += unsent
        summary.update(
            due=len(candidates),
            queued=queued,
            skipped={reason: count for reason, count in sorted(skipped.items()) if count},
            duration_seconds=round(self._clock.now() - now, 3),
        )
        self._record_tick(summary, now, self._quota_state(plan, candidates, quotas, credits, now))
        logger.info("tick: %s", summary)
        return summary

    # --- provider quotas -------------------------------------------------------

    def _per_connection(self, provider: str) -> bool:
        return self._registry.limits(provider).scope is LimitScope.CONNECTION

    def _quotas(self) -> dict[str, TickQuota]:
        """Per provider: the syncs per tick its tightest rate window sustains."""
        quotas: dict[str, TickQuota] = {}
        for provider in self._registry.names():
            limits = self._registry.limits(provider)
            quotas[provider] = tick_quota(
                limits.windows,
                tick_interval_seconds=self._settings.tick_interval_seconds,
                weight_per_sync=limits.calls_per_sync * self._call_weight(provider),
            )
        return quotas

    def _call_weight(self, provider: str) -> float:
        """The average weight of one call, over the provider's scheduled data types."""
        specs = self._registry.get(provider).data_types()
        scheduled = [
            spec.weight
            for name, spec in specs.items()
            if self._policies.policy(provider, name).schedule_every_seconds is not None
        ]
        weights = scheduled or [spec.weight for spec in specs.values()]
        return max(1.0, sum(weights) / len(weights)) if weights else 1.0

    def _credits(self, quotas: dict[str, TickQuota], state: SchedulerState, now: float) -> dict[str, float]:
        interval = self._settings.tick_interval_seconds
        elapsed = 1.0 if state.last_tick_at is None else (now - state.last_tick_at) / interval
        credits: dict[str, float] = {}
        for provider, quota in quotas.items():
            carried = (state.quota.get(provider) or {}).get("credit")
            credits[provider] = quota_credit(quota.per_tick, None if carried is None else float(carried), elapsed)
        return credits

    def _quota_state(
        self,
        plan: TickPlan,
        candidates: Sequence[DueDataset],
        quotas: dict[str, TickQuota],
        credits: dict[str, float],
        now: float,
    ) -> dict[str, dict[str, Any]]:
        intervals = self._schedule_intervals(candidates)
        recorded: dict[str, dict[str, Any]] = {}
        for provider, quota in quotas.items():
            seen = plan.providers.get(provider)
            per_connection = self._per_connection(provider)
            report = quota_report(
                provider,
                seen,
                quota,
                now=now,
                tick_interval_seconds=self._settings.tick_interval_seconds,
                schedule_every_seconds=intervals.get(provider),
                per_connection=per_connection,
            )
            planned = 0 if seen is None or per_connection else seen.planned
            report["credit"] = round(max(0.0, credits[provider] - planned), 6)
            recorded[provider] = report
            if report["deferred_by_quota"]:
                logger.info("%s", report["summary"])
        return recorded

    def _schedule_intervals(self, candidates: Sequence[DueDataset]) -> dict[str, float]:
        """Per provider, the mean schedule interval of its due datasets (to say how much it stretches)."""
        every: dict[tuple[str, str], int | None] = {}
        sums: Counter[str] = Counter()
        counts: Counter[str] = Counter()
        for due in candidates:
            pair = (due.provider, due.key.data_type)
            if pair not in every:
                try:
                    every[pair] = self._policies.policy(*pair).schedule_every_seconds
                except SmartSyncError:  # a provider or data type no longer configured
                    every[pair] = None
            interval = every[pair]
            if interval:
                sums[due.provider] += interval
                counts[due.provider] += 1
        return {provider: sums[provider] / counts[provider] for provider in counts}

    def _gates(self, now: float, quotas: dict[str, TickQuota], credits: dict[str, float]) -> dict[str, ProviderGate]:
        """Per provider: closed, probing (one job) or open (none), and the jobs its quota allows."""
        providers = self._registry.names()
        not_closed = self._guard.open_breakers(providers, now)
        config = self._guard.breaker_config
        gates: dict[str, ProviderGate] = {}
        for provider in providers:
            per_connection = self._per_connection(provider)
            allowed = (
                per_connection_jobs(quotas[provider].per_tick) if per_connection else jobs_allowed(credits[provider])
            )
            breaker = not_closed.get(provider)
            if breaker is None:
                gates[provider] = ProviderGate(max_jobs=allowed, per_connection=per_connection)
            elif admit(breaker, "schedule", now, config).allowed:
                gates[provider] = ProviderGate(probe_only=True)
            else:
                gates[provider] = ProviderGate(breaker_open=True)
        return gates

    def _on_demand(self) -> frozenset[tuple[str, str]]:
        return frozenset(
            (provider, data_type)
            for provider in self._registry.names()
            for data_type in self._policies.data_types(provider)
            if self._policies.policy(provider, data_type).schedule_every_seconds is None
        )

    def _due(self, now: float) -> list[DueDataset]:
        per_shard = math.ceil(self._settings.max_jobs_per_tick / len(all_shards()))
        with ThreadPoolExecutor(max_workers=_PARALLEL_CALLS) as pool:
            pages = pool.map(lambda shard: self._store.due_datasets(shard, now, per_shard), all_shards())
            return [due for page in pages for due in page]

    def _claim_and_send(self, chunk: Sequence[tuple[DueDataset, Job]], now: float) -> tuple[int, int, int]:
        try:
            won = set(
                self._store.claim_due(
                    [(due, job.run_id) for due, job in chunk], now, self._settings.queue_claim_ttl_seconds
                )
            )
        except Exception:  # throttling, a transient error: these stay due for the next tick
            logger.exception("could not claim %d due datasets; they stay due", len(chunk))
            return 0, 0, len(chunk)
        claimed = [job for _, job in chunk if job.run_id in won]
        unsent = self._queue.send_many(claimed)
        for job in unsent:
            self._store.release_queue_claim(job.key, job.run_id)
        return len(claimed) - len(unsent), len(chunk) - len(claimed), len(unsent)
