"""Shared provider limits: the pure arithmetic. The shared state lives in DynamoDB (``DynamoStore``).

- a token bucket (``take``): per user for manual refreshes, per provider for upstream calls;
- concurrency slots (``take_slot``): at most N syncs of one provider at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# Float refill arithmetic can leave 0.9999999 of a token: that is a token (and a wait too short to sleep).
_EPSILON = 1e-6


@dataclass(frozen=True)
class Bucket:
    capacity: float
    refill_per_second: float

    @classmethod
    def per_window(cls, limit: int, window_seconds: float) -> Bucket:
        """``limit`` takes in a burst, then one every ``window_seconds / limit``: never more than
        ``limit`` in any ``window_seconds`` after a full bucket."""
        return cls(capacity=float(limit), refill_per_second=limit / window_seconds)


@dataclass(frozen=True)
class Take:
    granted: bool
    tokens_after: float
    retry_after_seconds: float


def take(bucket: Bucket, tokens: float | None, updated_at: float | None, now: float) -> Take:
    """Refill since ``updated_at`` (a missing bucket is full), then try to take one token.

    ``updated_at`` in the future means the bucket is held empty until then (a provider's
    ``Retry-After``): nothing refills before it.
    """
    if tokens is None or updated_at is None:
        level = bucket.capacity
        held_for = 0.0
    else:
        level = min(bucket.capacity, tokens + max(0.0, now - updated_at) * bucket.refill_per_second)
        held_for = max(0.0, updated_at - now)
    if level >= 1.0 - _EPSILON and held_for == 0.0:
        return Take(True, max(0.0, level - 1.0), 0.0)
    return Take(False, level, held_for + max(0.0, 1.0 - level) / bucket.refill_per_second)


def level_at(bucket: Bucket, tokens: float | None, updated_at: float | None, now: float) -> float:
    """Tokens available at ``now`` (for status pages)."""
    if tokens is None or updated_at is None:
        return bucket.capacity
    if updated_at > now:
        return 0.0
    return min(bucket.capacity, tokens + (now - updated_at) * bucket.refill_per_second)


@dataclass(frozen=True)
class SlotTake:
    granted: bool
    holders_after: dict[str, float]
    """owner -> expiry, expired holders pruned."""
    retry_after_seconds: float


def take_slot(holders: Mapping[str, float], owner: str, capacity: int, now: float, ttl_seconds: float) -> SlotTake:
    """Join the holders of a provider's concurrency slots if fewer than ``capacity`` are live.

    Holders that crashed drop out when their expiry passes; a holder renewing its own
    slot always succeeds.
    """
    live = {name: expiry for name, expiry in holders.items() if expiry > now}
    if owner in live or len(live) < capacity:
        live[owner] = now + ttl_seconds
        return SlotTake(True, live, 0.0)
    return SlotTake(False, live, max(0.0, min(live.values(), default=now) - now))
