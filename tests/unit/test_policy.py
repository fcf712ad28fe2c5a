"""The read decision and policy resolution are pure: no AWS, no clock."""

from __future__ import annotations

import pytest

from chalicelib.domain.errors import ValidationError
from chalicelib.domain.policy import (
    DatasetSnapshot,
    Freshness,
    ReadAction,
    SyncPolicy,
    decide_read,
    failure_backoff_seconds,
    humanize_age,
    resolve_policy,
)
from chalicelib.domain.upstream import PolicyDefaults

POLICY = SyncPolicy(cooldown_seconds=300, max_staleness_seconds=3600)
NOW = 1_000_000.0


def decide(snapshot: DatasetSnapshot, *, force: bool = False, now: float = NOW):  # type: ignore[no-untyped-def]
    return decide_read(
        snapshot,
        POLICY,
        now,
        force_refresh=force,
        queue_claim_ttl_seconds=900,
        backoff_base_seconds=30,
        backoff_max_seconds=900,
    )


@pytest.mark.parametrize(
    ("age", "freshness", "action"),
    [
        (0, Freshness.FRESH, ReadAction.SERVE_CACHE),
        (299, Freshness.FRESH, ReadAction.SERVE_CACHE),
        (300, Freshness.STALE, ReadAction.SERVE_CACHE_AND_QUEUE),
        (3599, Freshness.STALE, ReadAction.SERVE_CACHE_AND_QUEUE),
        (3600, Freshness.EXPIRED, ReadAction.SYNC_AND_WAIT),
        (86400, Freshness.EXPIRED, ReadAction.SYNC_AND_WAIT),
    ],
)
def test_tier_follows_age_against_the_policy(age: float, freshness: Freshness, action: ReadAction) -> None:
    # Given a dataset last synced `age` seconds ago
    snapshot = DatasetSnapshot(last_successful_at=NOW - age, last_attempted_at=NOW - age)
    # When a read decides
    decision = decide(snapshot)
    # Then the tier and action follow the tier table in docs/operations.md
    assert decision.freshness is freshness
    assert decision.action is action
    assert decision.staleness_seconds == age


def test_never_synced_waits_for_a_sync() -> None:
    decision = decide(DatasetSnapshot())
    assert decision.freshness is Freshness.NEVER_SYNCED
    assert decision.action is ReadAction.SYNC_AND_WAIT
    assert decision.staleness_seconds is None


def test_force_refresh_waits_even_when_fresh() -> None:
    decision = decide(DatasetSnapshot(last_successful_at=NOW - 1), force=True)
    assert decision.freshness is Freshness.FORCED
    assert decision.action is ReadAction.SYNC_AND_WAIT


def test_stale_read_does_not_queue_when_a_sync_is_running_or_queued() -> None:
    # Given a stale dataset whose lease is held
    running = DatasetSnapshot(last_successful_at=NOW - 600, lease_expires_at=NOW + 60)
    # And another with a live queue claim
    queued = DatasetSnapshot(last_successful_at=NOW - 600, queued_at=NOW - 10)
    # Then neither queues another sync
    assert decide(running).action is ReadAction.SERVE_CACHE
    assert decide(running).sync_in_progress is True
    assert decide(queued).action is ReadAction.SERVE_CACHE
    assert decide(queued).sync_queued is True


def test_an_expired_lease_or_old_claim_does_not_count() -> None:
    crashed = DatasetSnapshot(last_successful_at=NOW - 600, lease_expires_at=NOW - 1, queued_at=NOW - 901)
    decision = decide(crashed)
    assert decision.sync_in_progress is False
    assert decision.sync_queued is False
    assert decision.action is ReadAction.SERVE_CACHE_AND_QUEUE


def test_recent_failure_backs_off_instead_of_hammering_the_provider() -> None:
    # Given an expired dataset whose last two syncs failed 10 s ago
    snapshot = DatasetSnapshot(
        last_successful_at=NOW - 7200, last_attempted_at=NOW - 10, consecutive_failures=2, failed=True
    )
    # When a read decides
    decision = decide(snapshot)
    # Then it serves what it has and says when it will try again (30 * 2 - 10 = 50 s)
    assert decision.action is ReadAction.SERVE_CACHE_BACKING_OFF
    assert decision.retry_after_seconds == pytest.approx(50)
    # And once the backoff has passed, it syncs again
    assert decide(snapshot, now=NOW + 60).action is ReadAction.SYNC_AND_WAIT


def test_force_refresh_ignores_the_failure_backoff() -> None:
    snapshot = DatasetSnapshot(
        last_successful_at=NOW - 7200, last_attempted_at=NOW, consecutive_failures=5, failed=True
    )
    assert decide(snapshot, force=True).action is ReadAction.SYNC_AND_WAIT


@pytest.mark.parametrize(("failures", "delay"), [(0, 0), (1, 30), (2, 60), (3, 120), (6, 900), (60, 900)])
def test_failure_backoff_doubles_and_is_capped(failures: int, delay: float) -> None:
    assert failure_backoff_seconds(failures, base_seconds=30, max_seconds=900) == delay


def test_policy_resolution_order() -> None:
    # Given service defaults, a provider's own policy and configuration overrides
    own = PolicyDefaults(cooldown_seconds=120, schedule_every_seconds=3600)
    overrides = {"*": {"max_staleness_seconds": 7200}, "whoop/sleep": {"cooldown_seconds": 60}}
    # When the policy of whoop/sleep and whoop/recovery is resolved
    sleep = resolve_policy(
        "whoop", "sleep", own, default_cooldown_seconds=300, default_max_staleness_seconds=3600, overrides=overrides
    )
    recovery = resolve_policy(
        "whoop", "recovery", own, default_cooldown_seconds=300, default_max_staleness_seconds=3600, overrides=overrides
    )
    # Then the most specific setting wins
    assert sleep == SyncPolicy(cooldown_seconds=60, max_staleness_seconds=7200, schedule_every_seconds=3600)
    assert recovery == SyncPolicy(cooldown_seconds=120, max_staleness_seconds=7200, schedule_every_seconds=3600)


def test_policy_defaults_come_from_the_seeds() -> None:
    policy = resolve_policy(
        "demo", "x", PolicyDefaults(), default_cooldown_seconds=300, default_max_staleness_seconds=3600, overrides={}
    )
    assert policy == SyncPolicy(300, 3600, None)


def test_inconsistent_policy_is_rejected() -> None:
    with pytest.raises(ValidationError):
        resolve_policy(
            "demo",
            "x",
            PolicyDefaults(cooldown_seconds=4000),
            default_cooldown_seconds=300,
            default_max_staleness_seconds=3600,
            overrides={},
        )


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "never"),
        (2, "just now"),
        (42, "42s ago"),
        (600, "10m ago"),
        (7200, "2h ago"),
        (5400, "1h 30m ago"),
        (200000, "2d ago"),
    ],
)
def test_ages_read_naturally(seconds: float | None, text: str) -> None:
    assert humanize_age(seconds) == text
