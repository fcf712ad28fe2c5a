"""Token-bucket and concurrency-slot arithmetic: pure, no clock."""

from __future__ import annotations

import pytest

from chalicelib.limits import Bucket, level_at, take, take_slot

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


def test_per_window_builds_capacity_and_refill_rate() -> None:
    assert BUCKET.capacity == 5.0
    assert BUCKET.refill_per_second == pytest.approx(5 / 60)


# --- a bucket held until a moment in the future (a provider's Retry-After) -------------------------


def test_a_held_bucket_refuses_until_the_hold_ends_plus_one_token() -> None:
    # Given an empty bucket held until 30 s from now (one token every 12 s)
    now = 1000.0
    # When a caller asks
    result = take(BUCKET, 0.0, now + 30, now)
    # Then it is refused and told to wait for the hold (30 s) plus one refill (12 s)
    assert result.granted is False
    assert result.tokens_after == 0.0
    assert result.retry_after_seconds == pytest.approx(42.0)


def test_a_held_bucket_refills_nothing_before_the_hold_ends() -> None:
    # Given an empty bucket held until t=1030
    # When asked just before, at, and just after the hold ends
    before = take(BUCKET, 0.0, 1030.0, 1029.0)
    at_end = take(BUCKET, 0.0, 1030.0, 1030.0)
    after = take(BUCKET, 0.0, 1030.0, 1036.0)
    # Then each waits for the rest of the hold plus whatever the first token still needs
    assert (before.granted, at_end.granted, after.granted) == (False, False, False)
    assert before.retry_after_seconds == pytest.approx(1 + 12)
    assert at_end.retry_after_seconds == pytest.approx(12.0)
    assert after.retry_after_seconds == pytest.approx(6.0)


def test_a_held_bucket_grants_once_the_wait_it_gave_has_passed() -> None:
    # Given the wait a held bucket asked for
    now, held_until = 1000.0, 1030.0
    wait = take(BUCKET, 0.0, held_until, now).retry_after_seconds
    # When the caller comes back exactly then
    result = take(BUCKET, 0.0, held_until, now + wait)
    # Then it is granted and the bucket is empty again
    assert result.granted is True
    assert result.tokens_after == pytest.approx(0.0, abs=1e-6)


def test_a_held_bucket_with_tokens_left_still_refuses_during_the_hold() -> None:
    # Given a bucket with tokens that the provider told us to leave alone for 20 s
    result = take(BUCKET, 3.0, 1020.0, 1000.0)
    # Then it refuses for the rest of the hold only (the tokens are there afterwards)
    assert result.granted is False
    assert result.retry_after_seconds == pytest.approx(20.0)
    assert take(BUCKET, 3.0, 1020.0, 1020.0).granted is True


# --- float rounding ---------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", [0.9999999, 0.99999999, 1.0 - 1e-7])
def test_a_token_short_by_float_noise_counts_as_a_token(tokens: float) -> None:
    # Given a level just under 1 because of float arithmetic
    result = take(BUCKET, tokens, 1000.0, 1000.0)
    # Then the token is granted and the level never goes negative
    assert result.granted is True
    assert result.retry_after_seconds == 0.0
    assert result.tokens_after == 0.0


def test_refill_that_lands_a_hair_under_one_token_is_granted() -> None:
    # Given 12 s of refill at 5/60 per second, computed in floats
    result = take(BUCKET, 0.0, 1000.0, 1000.0 + 12.0 - 1e-9)
    assert result.granted is True


def test_a_clearly_partial_token_is_not_granted() -> None:
    # Given 0.999 of a token (a real shortfall, not float noise)
    result = take(BUCKET, 0.999, 1000.0, 1000.0)
    # Then it waits for the missing thousandth: 0.001 * 12 s
    assert result.granted is False
    assert result.tokens_after == pytest.approx(0.999)
    assert result.retry_after_seconds == pytest.approx(0.012)


# --- level_at -----------------------------------------------------------------------------------------


def test_level_of_a_missing_bucket_is_full() -> None:
    assert level_at(BUCKET, None, None, 1000.0) == 5.0
    assert level_at(BUCKET, 2.0, None, 1000.0) == 5.0
    assert level_at(BUCKET, None, 900.0, 1000.0) == 5.0


@pytest.mark.parametrize(("elapsed", "level"), [(0.0, 1.0), (6.0, 1.5), (24.0, 3.0), (48.0, 5.0), (10_000.0, 5.0)])
def test_level_refills_over_time_up_to_capacity(elapsed: float, level: float) -> None:
    assert level_at(BUCKET, 1.0, 1000.0, 1000.0 + elapsed) == pytest.approx(level)


def test_level_of_a_held_bucket_is_zero_until_the_hold_ends() -> None:
    assert level_at(BUCKET, 3.0, 1030.0, 1000.0) == 0.0
    assert level_at(BUCKET, 3.0, 1030.0, 1030.0) == pytest.approx(3.0)


def test_level_agrees_with_what_take_sees() -> None:
    level = level_at(BUCKET, 0.5, 1000.0, 1003.0)
    result = take(BUCKET, 0.5, 1000.0, 1003.0)
    assert result.granted is False
    assert result.tokens_after == pytest.approx(level) == pytest.approx(0.75)


# --- concurrency slots ------------------------------------------------------------------------------

NOW = 5000.0
TTL = 300.0


def test_a_slot_is_granted_below_capacity() -> None:
    # Given one live holder of two slots
    holders = {"sync-a": NOW + 100}
    # When another sync asks
    result = take_slot(holders, "sync-b", capacity=2, now=NOW, ttl_seconds=TTL)
    # Then it joins with its own expiry and the other holder is kept
    assert result.granted is True
    assert result.retry_after_seconds == 0.0
    assert result.holders_after == {"sync-a": NOW + 100, "sync-b": NOW + TTL}


def test_the_first_slot_of_an_empty_provider_is_granted() -> None:
    result = take_slot({}, "sync-a", capacity=1, now=NOW, ttl_seconds=TTL)
    assert result.granted is True
    assert result.holders_after == {"sync-a": NOW + TTL}


def test_a_full_provider_refuses_until_the_earliest_holder_expires() -> None:
    # Given both slots are held, one until NOW + 40 and one until NOW + 200
    holders = {"sync-a": NOW + 200, "sync-b": NOW + 40}
    # When a third sync asks
    result = take_slot(holders, "sync-c", capacity=2, now=NOW, ttl_seconds=TTL)
    # Then it is refused, told when the first slot frees up, and the holders are unchanged
    assert result.granted is False
    assert result.retry_after_seconds == pytest.approx(40.0)
    assert result.holders_after == holders


def test_expired_holders_are_pruned_and_free_their_slot() -> None:
    # Given two slots, one held by a crashed sync whose expiry has passed (and one expiring right now)
    holders = {"crashed": NOW - 1, "just-expired": NOW, "live": NOW + 60}
    # When a new sync asks
    result = take_slot(holders, "sync-new", capacity=2, now=NOW, ttl_seconds=TTL)
    # Then the expired holders are dropped and the new sync takes the freed slot
    assert result.granted is True
    assert result.holders_after == {"live": NOW + 60, "sync-new": NOW + TTL}


def test_a_refusal_also_prunes_expired_holders() -> None:
    holders = {"crashed": NOW - 10, "a": NOW + 30, "b": NOW + 90}
    result = take_slot(holders, "c", capacity=2, now=NOW, ttl_seconds=TTL)
    assert result.granted is False
    assert result.holders_after == {"a": NOW + 30, "b": NOW + 90}
    assert result.retry_after_seconds == pytest.approx(30.0)


def test_an_existing_holder_renews_even_when_full() -> None:
    # Given both slots are held, one by sync-a
    holders = {"sync-a": NOW + 10, "sync-b": NOW + 200}
    # When sync-a renews
    result = take_slot(holders, "sync-a", capacity=2, now=NOW, ttl_seconds=TTL)
    # Then it keeps its slot with a fresh expiry
    assert result.granted is True
    assert result.holders_after == {"sync-a": NOW + TTL, "sync-b": NOW + 200}


def test_an_existing_holder_renews_even_when_capacity_shrank_below_the_holders() -> None:
    holders = {"sync-a": NOW + 10, "sync-b": NOW + 200, "sync-c": NOW + 100}
    result = take_slot(holders, "sync-b", capacity=1, now=NOW, ttl_seconds=TTL)
    assert result.granted is True
    assert result.holders_after["sync-b"] == NOW + TTL


def test_a_holder_whose_slot_expired_must_queue_like_anyone_else() -> None:
    # Given sync-a's slot expired and the other slot is taken
    holders = {"sync-a": NOW - 1, "sync-b": NOW + 50, "sync-c": NOW + 80}
    # When sync-a tries to renew
    result = take_slot(holders, "sync-a", capacity=2, now=NOW, ttl_seconds=TTL)
    # Then it is not a holder any more and the provider is full
    assert result.granted is False
    assert "sync-a" not in result.holders_after
    assert result.retry_after_seconds == pytest.approx(50.0)


def test_take_slot_does_not_change_the_holders_it_was_given() -> None:
    holders = {"crashed": NOW - 1, "live": NOW + 60}
    take_slot(holders, "sync-new", capacity=2, now=NOW, ttl_seconds=TTL)
    assert holders == {"crashed": NOW - 1, "live": NOW + 60}
