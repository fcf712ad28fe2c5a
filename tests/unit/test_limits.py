"""Token-bucket arithmetic: pure, no clock."""

from __future__ import annotations

import pytest

from chalicelib.limits import Bucket, take

BUCKET = Bucket.per_window(5, 60)  # 5 at once, then one every 12 s


def test_a_new_bucket_is_full() -> None:
    result = take(BUCKET, None, None, now=100.0)
    assert result.granted is True
    assert result.tokens_after == 4.0


def test_an_empty_bucket_says_when_the_next_token_comes() -> None:
    result = take(BUCKET, 0.0, 100.0, now=106.0)  # half a token refilled
    assert result.granted is False
    assert result.retry_after_seconds == pytest.approx(6.0)


def test_refill_is_capped_at_capacity() -> None:
    result = take(BUCKET, 0.0, 0.0, now=10_000.0)
    assert result.tokens_after == 4.0


def test_no_more_than_the_limit_in_any_window_after_a_burst() -> None:
    # Given a full bucket drained as fast as possible for a minute
    tokens, updated, granted = None, None, 0
    for step in range(600):  # every 0.1 s
        now = 1000.0 + step * 0.1
        result = take(BUCKET, tokens, updated, now)
        if result.granted:
            granted += 1
            tokens, updated = result.tokens_after, now
    # Then the burst of 5 plus one per 12 s (4 more within the 60 s) is all it ever gave
    assert granted == 5 + 4
