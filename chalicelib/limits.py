"""Token buckets: the pure arithmetic. The shared state lives in DynamoDB (``DynamoStore.take_token``)."""

from __future__ import annotations

from dataclasses import dataclass


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
    """Refill since ``updated_at`` (a missing bucket is full), then try to take one token."""
    if tokens is None or updated_at is None:
        level = bucket.capacity
    else:
        level = min(bucket.capacity, tokens + max(0.0, now - updated_at) * bucket.refill_per_second)
    if level >= 1.0:
        return Take(True, level - 1.0, 0.0)
    return Take(False, level, (1.0 - level) / bucket.refill_per_second)
