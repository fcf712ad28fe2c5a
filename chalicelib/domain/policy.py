"""Pure decisions about freshness: no I/O, no clock reads; ``now`` is always an argument."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from chalicelib.domain.errors import ValidationError
from chalicelib.domain.upstream import PolicyDefaults


@dataclass(frozen=True)
class SyncPolicy:
    cooldown_seconds: int
    max_staleness_seconds: int
    schedule_every_seconds: int | None = None


_POLICY_KEYS = ("cooldown_seconds", "max_staleness_seconds", "schedule_every_seconds")


def resolve_policy(
    provider: str,
    data_type: str,
    own: PolicyDefaults,
    *,
    default_cooldown_seconds: int,
    default_max_staleness_seconds: int,
    overrides: Mapping[str, Mapping[str, Any]],
) -> SyncPolicy:
    """Service default < the provider's data type < configuration (``*``, ``provider``, ``provider/type``)."""
    merged: dict[str, Any] = {
        "cooldown_seconds": default_cooldown_seconds,
        "max_staleness_seconds": default_max_staleness_seconds,
        "schedule_every_seconds": None,
    }
    for key in _POLICY_KEYS:
        value = getattr(own, key)
        if value is not None:
            merged[key] = value
    for scope in ("*", provider, f"{provider}/{data_type}"):
        for key, value in overrides.get(scope, {}).items():
            if key in _POLICY_KEYS:
                merged[key] = value
    policy = SyncPolicy(
        cooldown_seconds=int(merged["cooldown_seconds"]),
        max_staleness_seconds=int(merged["max_staleness_seconds"]),
        schedule_every_seconds=(
            None if merged["schedule_every_seconds"] is None else int(merged["schedule_every_seconds"])
        ),
    )
    if not 0 <= policy.cooldown_seconds <= policy.max_staleness_seconds:
        raise ValidationError(f"policy for {provider}/{data_type}: need 0 <= cooldown_seconds <= max_staleness_seconds")
    return policy


class Freshness(StrEnum):
    FRESH = "fresh"
    STALE = "stale"
    EXPIRED = "expired"
    NEVER_SYNCED = "never_synced"
    FORCED = "forced"


class ReadAction(StrEnum):
    SERVE_CACHE = "serve_cache"
    """Answer from the cache; nothing else to do."""
    SERVE_CACHE_AND_QUEUE = "serve_cache_and_queue"
    """Answer from the cache and try to win the claim to queue one background sync."""
    SYNC_AND_WAIT = "sync_and_wait"
    """Run (or join) a sync within the read budget."""
    SERVE_CACHE_BACKING_OFF = "serve_cache_backing_off"
    """The last sync failed recently: answer from what we have, do not retry yet."""


@dataclass(frozen=True)
class DatasetSnapshot:
    """The parts of a dataset's sync state a read decision depends on."""

    last_successful_at: float | None = None
    last_attempted_at: float | None = None
    lease_expires_at: float | None = None
    queued_at: float | None = None
    consecutive_failures: int = 0
    failed: bool = False


@dataclass(frozen=True)
class ReadDecision:
    freshness: Freshness
    action: ReadAction
    staleness_seconds: float | None
    sync_in_progress: bool
    sync_queued: bool
    retry_after_seconds: float | None = None


def lease_is_held(lease_expires_at: float | None, now: float) -> bool:
    return lease_expires_at is not None and lease_expires_at > now


def queue_claim_is_live(queued_at: float | None, now: float, claim_ttl_seconds: float) -> bool:
    return queued_at is not None and now - queued_at < claim_ttl_seconds


def failure_backoff_seconds(consecutive_failures: int, *, base_seconds: float, max_seconds: float) -> float:
    """How long reads wait before retrying a dataset whose syncs keep failing: base·2^(n-1), capped."""
    if consecutive_failures <= 0:
        return 0.0
    return float(min(max_seconds, base_seconds * 2 ** min(consecutive_failures - 1, 30)))


def decide_read(
    snapshot: DatasetSnapshot,
    policy: SyncPolicy,
    now: float,
    *,
    force_refresh: bool,
    queue_claim_ttl_seconds: float,
    backoff_base_seconds: float,
    backoff_max_seconds: float,
) -> ReadDecision:
    running = lease_is_held(snapshot.lease_expires_at, now)
    queued = queue_claim_is_live(snapshot.queued_at, now, queue_claim_ttl_seconds)
    staleness = None if snapshot.last_successful_at is None else max(0.0, now - snapshot.last_successful_at)

    retry_after: float | None = None
    if snapshot.failed and snapshot.last_attempted_at is not None:
        delay = failure_backoff_seconds(
            snapshot.consecutive_failures, base_seconds=backoff_base_seconds, max_seconds=backoff_max_seconds
        )
        remaining = snapshot.last_attempted_at + delay - now
        if remaining > 0:
            retry_after = remaining

    def decision(freshness: Freshness, action: ReadAction) -> ReadDecision:
        return ReadDecision(freshness, action, staleness, running, queued, retry_after)

    if force_refresh:
        return decision(Freshness.FORCED, ReadAction.SYNC_AND_WAIT)
    if staleness is None:
        if retry_after is not None and not running:
            return decision(Freshness.NEVER_SYNCED, ReadAction.SERVE_CACHE_BACKING_OFF)
        return decision(Freshness.NEVER_SYNCED, ReadAction.SYNC_AND_WAIT)
    if staleness < policy.cooldown_seconds:
        return decision(Freshness.FRESH, ReadAction.SERVE_CACHE)
    if staleness < policy.max_staleness_seconds:
        if running or queued or retry_after is not None:
            return decision(Freshness.STALE, ReadAction.SERVE_CACHE)
        return decision(Freshness.STALE, ReadAction.SERVE_CACHE_AND_QUEUE)
    if retry_after is not None and not running:
        return decision(Freshness.EXPIRED, ReadAction.SERVE_CACHE_BACKING_OFF)
    return decision(Freshness.EXPIRED, ReadAction.SYNC_AND_WAIT)


def humanize_age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    seconds = int(seconds)
    if seconds < 60:
        return "just now" if seconds < 5 else f"{seconds}s ago"
    if seconds < 3600:
        return f"{seconds // 60}m ago"
    if seconds < 86400:
        hours, minutes = divmod(seconds // 60, 60)
        return f"{hours}h ago" if minutes == 0 else f"{hours}h {minutes}m ago"
    return f"{seconds // 86400}d ago"
