"""Operator routes: run the fan-out now, pause and resume it, and the service's status (seed 001)."""

from __future__ import annotations

from typing import Any

from chalicelib.domain.clock import Clock, to_iso
from chalicelib.domain.config import Settings
from chalicelib.domain.errors import ConflictError
from chalicelib.domain.planner import SCHEDULE_SHARDS, STRETCH_WARNING, HealthInputs, health_status
from chalicelib.providers import ProviderRegistry
from chalicelib.store.dynamo import DynamoStore
from chalicelib.store.items import LimitItem
from chalicelib.sync.limits_view import service_statistics
from chalicelib.sync.pacing import ProviderGuard
from chalicelib.usecases.fanout import FanOut, SchedulerState


class SchedulerPausedError(ConflictError):
    """The scheduler is paused."""


def _statistics(item: LimitItem | None) -> dict[str, Any]:
    total = int(item.total_syncs or 0) if item else 0
    succeeded = int(item.succeeded_syncs or 0) if item else 0
    failed = int(item.failed_syncs or 0) if item else 0
    duration_sum = float(item.duration_sum or 0) if item else 0.0
    return {
        "total_syncs": total,
        "successful_syncs": succeeded,
        "failed_syncs": failed,
        "success_rate_percent": round(succeeded / total * 100, 2) if total else None,
        "last_sync_time": to_iso(item.last_finished_at) if item else None,
        "last_sync_duration_seconds": float(item.last_duration) if item and item.last_duration is not None else None,
        "average_sync_duration_seconds": round(duration_sum / total, 3) if total else None,
        "consecutive_failures": int(item.consecutive_failures or 0) if item else 0,
        "last_error": item.last_error if item else None,
        "last_error_time": to_iso(item.last_error_at) if item else None,
    }


def _quota_view(scheduler: SchedulerState, provider: str) -> dict[str, Any] | None:
    """What the last tick saw of the provider against its quota; ``None`` before its first tick."""
    recorded = scheduler.quota.get(provider)
    if not recorded:
        return None
    return {key: value for key, value in recorded.items() if key != "credit"}


class OperatorService:
    def __init__(
        self,
        fanout: FanOut,
        guard: ProviderGuard,
        store: DynamoStore,
        registry: ProviderRegistry,
        clock: Clock,
        settings: Settings,
    ) -> None:
        self._fanout = fanout
        self._guard = guard
        self._store = store
        self._registry = registry
        self._clock = clock
        self._settings = settings

    def run_now(self) -> dict[str, Any]:
        if self._fanout.state().paused:
            raise SchedulerPausedError("the scheduler is paused; POST /sync/resume first")
        return {"status": "ran", "tick": self._fanout.tick(trigger="operator")}

    def pause(self) -> dict[str, Any]:
        self._fanout.set_paused(True)
        return self.status()

    def resume(self) -> dict[str, Any]:
        self._fanout.set_paused(False)
        return self.status()

    def status(self) -> dict[str, Any]:
        now = self._clock.now()
        scheduler = self._fanout.state()
        providers = self._registry.names()
        gates = self._guard.gates(providers)  # breaker, windows, running syncs and statistics: one BatchGetItem
        limits = self._guard.snapshot(providers, now, gates)
        statistics = _statistics(service_statistics(gates.values()))
        open_breakers = [p for p, view in limits.items() if view["breaker"]["state"] != "closed"]
        quotas = {p: _quota_view(scheduler, p) for p in providers}
        stretched = tuple(
            view["summary"]
            for view in quotas.values()
            if view is not None and view.get("stretch_factor", 1.0) >= STRETCH_WARNING
        )
        health, reasons = health_status(
            HealthInputs(
                total_syncs=statistics["total_syncs"],
                succeeded_syncs=statistics["successful_syncs"],
                consecutive_failures=statistics["consecutive_failures"],
                open_breakers=open_breakers,
                paused=scheduler.paused,
                last_tick_at=scheduler.last_tick_at,
                started_at=scheduler.first_seen_at,
                failure_threshold=self._settings.breaker_failure_threshold,
                stretched_schedules=stretched,
            ),
            now,
            self._settings.tick_interval_seconds,
        )
        statistics.update(health_status=health.value, health_reasons=reasons)
        return {
            "is_running": not scheduler.paused,
            "status": "paused" if scheduler.paused else "running",
            "paused_since": to_iso(scheduler.changed_at) if scheduler.paused else None,
            **self._ticks(scheduler, now),
            "config": self._config(),
            "statistics": statistics,
            "providers": {
                provider: {
                    **limits[provider],
                    "quota": quotas[provider],
                    "statistics": _statistics(gates.get(provider)),
                }
                for provider in providers
            },
            "check_timestamp": to_iso(now),
        }

    def _ticks(self, scheduler: SchedulerState, now: float) -> dict[str, Any]:
        last = scheduler.last_tick_at
        next_tick = None if scheduler.paused or last is None else last + self._settings.tick_interval_seconds
        return {
            "last_tick_at": to_iso(last),
            "last_tick": scheduler.last_tick or None,
            "next_tick_at": to_iso(next_tick),
            "next_tick_in_seconds": None if next_tick is None else max(0, int(next_tick - now)),
        }

    def _config(self) -> dict[str, Any]:
        settings = self._settings
        return {
            "tick_interval_seconds": settings.tick_interval_seconds,
            "schedule_shards": SCHEDULE_SHARDS,
            "max_jobs_per_tick": settings.max_jobs_per_tick,
            "breaker_failure_threshold": settings.breaker_failure_threshold,
            "breaker_cool_off_seconds": settings.breaker_cool_off_seconds,
            "retry_max_attempts": settings.retry_max_attempts,
            "retry_base_seconds": settings.retry_base_seconds,
            "retry_max_delay_seconds": settings.retry_max_delay_seconds,
            "provider_wait_max_seconds": settings.provider_wait_max_seconds,
            "needs_review_after_auth_failures": settings.needs_review_after_auth_failures,
            "default_cooldown_seconds": settings.default_cooldown_seconds,
            "default_max_staleness_seconds": settings.default_max_staleness_seconds,
            "read_budget_seconds": settings.read_budget_seconds,
        }
