"""Token-bucket, rate-window and concurrency-slot arithmetic: pure, no clock."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import pytest

from chalicelib.domain.limits import (
    Bucket,
    RateWindow,
    WindowLevels,
    default_burst,
    hold_all,
    levels_at,
    may_tighten,
    observe,
    provider_level,
    take,
    take_slot,
    take_weight,
    tighten,
)

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


# --- rate windows: the shape of a window -------------------------------------------------------------

T0 = 1_700_000_000.0
# WHOOP's published defaults: 100 requests per minute and 10,000 per day, for the whole app.
WHOOP_MINUTE = RateWindow(
    requests=100,
    per_seconds=60,
    burst=10,
    remaining_header="x-ratelimit-remaining",
    reset_header="x-ratelimit-reset",
    limit_header="x-ratelimit-limit",
)
WHOOP_DAY = RateWindow(
    requests=10_000,
    per_seconds=86_400,
    burst=1_000,
    remaining_header="x-ratelimit-remaining",
    reset_header="x-ratelimit-reset",
    limit_header="x-ratelimit-limit",
)
WHOOP = (WHOOP_MINUTE, WHOOP_DAY)
# Binance spot: 6,000 request weight per minute per IP, reported as X-MBX-USED-WEIGHT-1M.
BINANCE = (RateWindow(requests=6_000, per_seconds=60, burst=600, used_header="x-mbx-used-weight-1m"),)


@pytest.mark.parametrize(
    ("requests", "burst"), [(1, 1), (2, 1), (9, 1), (10, 1), (100, 10), (10_000, 1_000), (6_000, 600)]
)
def test_the_default_burst_is_a_tenth_of_the_window_and_at_least_one(requests: int, burst: int) -> None:
    assert default_burst(requests) == burst


def test_a_window_refills_what_its_burst_leaves_over_its_length() -> None:
    # Given 100 per minute with a burst of 10
    # Then the other 90 come at 1.5 per second, so a burst plus a minute of refill is exactly 100
    assert WHOOP_MINUTE.capacity == 10
    assert WHOOP_MINUTE.refill_per_second == pytest.approx(1.5)
    assert WHOOP_MINUTE.capacity + WHOOP_MINUTE.refill_per_second * 60 == pytest.approx(100)


def test_a_one_request_window_refills_strictly_slower_than_its_length() -> None:
    window = RateWindow(requests=1, per_seconds=60, burst=1)
    assert 0 < window.refill_per_second < 1 / 60


def test_the_old_requests_per_second_and_burst_are_one_window_with_the_same_bucket() -> None:
    window = RateWindow.per_second(2.0, 2)
    assert (window.capacity, window.refill_per_second) == pytest.approx((2.0, 2.0))
    assert window.describe() == "2 requests/second"


@pytest.mark.parametrize(
    ("window", "text"),
    [
        (WHOOP_MINUTE, "100 requests/minute"),
        (WHOOP_DAY, "10,000 requests/day"),
        (RateWindow(requests=150, per_seconds=3600, burst=15), "150 requests/hour"),
        (RateWindow(requests=61_000, per_seconds=300, burst=6_100), "61,000 requests/5 minutes"),
        (RateWindow(requests=10, per_seconds=2.5, burst=1), "10 requests/2.5s"),
    ],
)
def test_a_window_describes_itself_in_plain_words(window: RateWindow, text: str) -> None:
    assert window.describe() == text


# --- rate windows: all or nothing, with weights ------------------------------------------------------


def state(*levels: float, at: float = T0, hold: float | None = None) -> WindowLevels:
    return WindowLevels(tuple(levels), at, hold)


def test_a_scope_never_used_is_full_in_every_window() -> None:
    result = take_weight(WHOOP, WindowLevels.fresh(WHOOP), T0)
    assert result.granted is True
    assert result.state_after == WindowLevels((9.0, 999.0), T0, None)


def test_a_call_takes_from_every_window_at_once() -> None:
    # Given room in both windows
    result = take_weight(WHOOP, state(5.0, 300.0), T0)
    # Then one call is one token off each
    assert result.granted is True and result.retry_after_seconds == 0.0
    assert result.state_after is not None and result.state_after.levels == (4.0, 299.0)


def test_a_call_needs_room_in_every_window_and_takes_nothing_when_one_is_empty() -> None:
    # Given room for a minute's burst but a day window that is empty
    result = take_weight(WHOOP, state(10.0, 0.0), T0)
    # Then the call is refused, nothing is written (the minute window keeps its 10), and the wait
    # is the day window's: one token at 9,000 / 86,400 per second
    assert result.granted is False
    assert result.state_after is None
    assert result.retry_after_seconds == pytest.approx(86_400 / 9_000)


def test_the_wait_is_the_longest_of_the_windows_waits() -> None:
    # Given half a token short in the minute window (1/3 s) and a tenth short in the day one (~0.96 s)
    result = take_weight(WHOOP, state(0.5, 0.9), T0)
    assert result.granted is False
    assert result.retry_after_seconds == pytest.approx(max(0.5 / 1.5, 0.1 * 86_400 / 9_000))


def test_a_weighted_call_takes_its_weight_from_every_window() -> None:
    # Given Binance's account endpoint, which weighs 20
    result = take_weight(BINANCE, state(600.0), T0, weight=20)
    assert result.granted is True
    assert result.state_after is not None and result.state_after.levels == (580.0,)


def test_a_weighted_call_waits_until_its_whole_weight_has_refilled() -> None:
    # Given 15 of the 20 it needs (the window refills 5,400 / 60 = 90 per second)
    result = take_weight(BINANCE, state(15.0), T0, weight=20)
    assert result.granted is False
    assert result.retry_after_seconds == pytest.approx(5 / 90)


def test_levels_refill_independently_and_stop_at_each_capacity() -> None:
    levels = levels_at(WHOOP, state(0.0, 0.0), T0 + 60)
    assert levels == pytest.approx((10.0, 60 * 9_000 / 86_400))


def test_a_weight_above_a_burst_waits_for_a_full_window_and_leaves_a_debt() -> None:
    # Given a call heavier than the whole burst (the config check refuses this; the math stays safe)
    window = (RateWindow(requests=100, per_seconds=60, burst=10),)
    assert take_weight(window, state(9.0), T0, weight=25).granted is False
    result = take_weight(window, state(10.0), T0, weight=25)
    # Then it goes only from a full bucket, and the next call waits for the debt to be repaid
    assert result.granted is True
    assert result.state_after is not None and result.state_after.levels == (-15.0,)
    after = take_weight(window, result.state_after, T0)
    assert after.retry_after_seconds == pytest.approx(16 / 1.5)


# --- rate windows: never more than `requests` in any interval of `per_seconds` --------------------------


def _worst_interval(grants: Sequence[tuple[float, float]], per_seconds: float) -> float:
    """The most weight granted in any half-open interval (t - per_seconds, t]."""
    worst = 0.0
    for index, (end, _) in enumerate(grants):
        inside = sum(weight for at, weight in grants[: index + 1] if at > end - per_seconds)
        worst = max(worst, inside)
    return worst


def _greedy(windows: Sequence[RateWindow], weights: Sequence[int], *, follow_waits: bool) -> list[tuple[float, float]]:
    """Takers that ask again and again for three lengths of the longest window; the clock is fake."""
    horizon = T0 + 3 * max(w.per_seconds for w in windows)
    current = WindowLevels.fresh(windows)
    grants: list[tuple[float, float]] = []
    now, turn = T0, 0
    while now < horizon:
        weight = weights[turn % len(weights)]
        result = take_weight(windows, current, now, weight=weight)
        turn += 1
        if result.granted:
            assert result.state_after is not None
            current = result.state_after
            grants.append((now, weight))
            continue  # a greedy taker asks again at once
        # Either come back exactly when told (the tightest timing) or poll on a fine grid.
        now += result.retry_after_seconds if follow_waits else 0.01
    return grants


@pytest.mark.parametrize("follow_waits", [True, False])
@pytest.mark.parametrize(
    ("windows", "weights"),
    [
        ((RateWindow(requests=5, per_seconds=2, burst=1), RateWindow(requests=12, per_seconds=10, burst=3)), [1]),
        (
            (RateWindow(requests=10, per_seconds=3, burst=4), RateWindow(requests=20, per_seconds=12, burst=2)),
            [1, 2, 1],
        ),
        ((RateWindow(requests=1, per_seconds=2, burst=1), RateWindow(requests=3, per_seconds=9, burst=1)), [1]),
        ((RateWindow(requests=60, per_seconds=6, burst=30),), [3, 1, 5]),
        ((RateWindow.per_second(2.0, 2),), [1]),
    ],
)
def test_greedy_takers_never_get_more_than_a_window_allows_in_any_interval(
    windows: tuple[RateWindow, ...], weights: list[int], follow_waits: bool
) -> None:
    # Given takers that ask as soon and as often as they can, for three lengths of the longest window
    grants = _greedy(windows, weights, follow_waits=follow_waits)
    # Then no interval of any window's length ever held more than its requests (sliding or fixed,
    # the provider is safe), and the takers did get calls through in every window length
    assert grants
    for window in windows:
        assert _worst_interval(grants, window.per_seconds) <= window.requests + 1e-9
    assert grants[-1][0] > T0 + 2 * max(w.per_seconds for w in windows)


def test_over_a_long_run_the_tightest_window_sets_the_pace() -> None:
    # Given a minute window and a tighter ten-minute window
    windows = (RateWindow(requests=10, per_seconds=60, burst=1), RateWindow(requests=20, per_seconds=600, burst=2))
    grants = _greedy(windows, [1], follow_waits=True)
    # Then over 30 minutes, what went through is the burst plus the ten-minute window's refill
    assert len(grants) == pytest.approx(2 + 30 * 60 * 18 / 600, abs=1)


# --- rate windows: the provider's own count tightens them ---------------------------------------------


def test_remaining_lowers_the_level_so_workers_slow_down_before_a_429() -> None:
    # Given a full minute window and a provider that says 3 are left, the minute resetting in 20 s
    headers = {"x-ratelimit-remaining": "3", "x-ratelimit-reset": "20"}
    # Then the window may hold at most 3; the reset is not charged against a positive count
    # (on a sliding window it means "whole again", and would stall a fleet within its limit)
    assert provider_level(WHOOP_MINUTE, headers, T0) == 3.0


def test_remaining_without_a_reset_header_is_taken_as_is() -> None:
    window = replace(WHOOP_MINUTE, reset_header=None, limit_header=None)
    assert provider_level(window, {"x-ratelimit-remaining": "4"}, T0) == 4.0


def test_nothing_left_until_the_reset_holds_the_window_until_then() -> None:
    # Given 0 left and a reset 40 s away
    window = replace(WHOOP_MINUTE, limit_header=None)
    result = take_weight((window,), state(10.0), T0, feedback={"x-ratelimit-remaining": "0", "x-ratelimit-reset": "40"})
    # Then nobody calls before the reset (plus the one token the bucket needs after it)
    assert result.granted is False
    assert result.retry_after_seconds == pytest.approx(40 + 1 / 1.5)
    # And the tightened level is written, so every worker sees it
    assert result.state_after is not None and result.state_after.levels == pytest.approx((-60.0,))


def test_an_epoch_reset_is_read_as_a_moment() -> None:
    window = replace(WHOOP_MINUTE, limit_header=None)
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(T0 + 10))}
    assert provider_level(window, headers, T0) == pytest.approx(-15.0)


def test_a_reset_further_than_the_window_counts_as_one_window() -> None:
    window = replace(WHOOP_MINUTE, limit_header=None)
    headers = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "1700000000000"}  # milliseconds
    assert provider_level(window, headers, T0) == pytest.approx(-90.0)


def test_used_weight_means_the_rest_of_the_window_is_left() -> None:
    # Given Binance saying 5,950 of the minute's 6,000 weight is used
    assert provider_level(BINANCE[0], {"x-mbx-used-weight-1m": "5950"}, T0) == 50.0
    result = take_weight(BINANCE, state(600.0), T0, weight=20, feedback={"x-mbx-used-weight-1m": "5950"})
    # Then the next call of weight 20 still goes, from the 50 left
    assert result.granted is True
    assert result.state_after is not None and result.state_after.levels == (30.0,)


def test_feedback_about_the_other_window_is_ignored() -> None:
    # Given WHOOP naming the day limit first: the remaining count is about the day window
    headers = {"x-ratelimit-limit": "10000, 100;window=60, 10000;window=86400", "x-ratelimit-remaining": "7"}
    # Then it lowers the day window only
    assert provider_level(WHOOP_MINUTE, headers, T0) is None
    assert provider_level(WHOOP_DAY, headers, T0) == 7.0
    assert tighten(WHOOP, (10.0, 1000.0), headers, T0) == (10.0, 7.0)


def test_feedback_naming_the_minute_window_lowers_the_minute_window() -> None:
    headers = {"x-ratelimit-limit": "100, 100;window=60, 10000;window=86400", "x-ratelimit-remaining": "2"}
    assert tighten(WHOOP, (10.0, 1000.0), headers, T0) == (2.0, 1000.0)


def test_header_names_are_matched_whatever_their_case() -> None:
    window = replace(WHOOP_MINUTE, reset_header=None, limit_header=None)
    assert tighten((window,), (10.0,), {"X-RateLimit-Remaining": "4"}, T0) == (4.0,)


@pytest.mark.parametrize("value", ["", "soon", "nan", "inf", "-5"])
def test_unusable_or_negative_counts_never_raise_a_level(value: str) -> None:
    window = replace(WHOOP_MINUTE, reset_header=None, limit_header=None)
    (level,) = tighten((window,), (10.0,), {"x-ratelimit-remaining": value}, T0)
    assert level <= 10.0
    assert level == (0.0 if value == "-5" else 10.0)


def test_feedback_never_raises_a_level() -> None:
    # Given a provider that says plenty is left while our window is nearly empty
    headers = {"x-ratelimit-remaining": "99", "x-ratelimit-limit": "100"}
    assert tighten(WHOOP, (0.5, 20.0), headers, T0) == (0.5, 20.0)


def test_a_refusal_without_tighter_feedback_writes_nothing() -> None:
    # Given an empty minute window and a provider that says 90 of the minute's 100 are left
    feedback = {"x-ratelimit-limit": "100", "x-ratelimit-remaining": "90"}
    result = take_weight(WHOOP, state(0.0, 500.0), T0, feedback=feedback)
    # Then the refusal costs no write
    assert result.granted is False and result.state_after is None


def test_remaining_without_a_limit_header_is_applied_to_every_window_that_reads_it() -> None:
    # Given WHOOP's remaining count without the limit header that says which window it is about
    # Then both windows take it (the safe reading)
    assert tighten(WHOOP, (10.0, 500.0), {"x-ratelimit-remaining": "90"}, T0) == (10.0, 90.0)


def test_observe_writes_only_when_clearly_tighter() -> None:
    # Given a minute window holding 6
    current = state(6.0, 900.0)
    minute = {"x-ratelimit-limit": "100"}
    # Then "5.5 left" is not worth a write, "2 left" is
    assert observe(WHOOP, current, {**minute, "x-ratelimit-remaining": "5.5"}, T0) is None
    tighter = observe(WHOOP, current, {**minute, "x-ratelimit-remaining": "2"}, T0)
    assert tighter is not None and tighter.levels == (2.0, 900.0)


def test_feedback_that_could_not_lower_any_window_needs_no_read() -> None:
    assert may_tighten(BINANCE, {"x-mbx-used-weight-1m": "40"}, T0) is False  # 5,960 left > the 600 burst
    assert may_tighten(BINANCE, {"x-mbx-used-weight-1m": "5900"}, T0) is True
    assert may_tighten(WHOOP, {"content-type": "application/json"}, T0) is False


# --- rate windows: a provider's hold ------------------------------------------------------------------


def test_a_hold_stops_every_call_and_empties_the_shortest_window() -> None:
    # Given room everywhere, then a Retry-After of 30 s
    held = hold_all(WHOOP, state(8.0, 700.0), T0 + 30)
    # Then the minute window restarts empty and the day window keeps its level, frozen until then
    assert held == WindowLevels((0.0, 700.0), T0 + 30, T0 + 30)
    # And nothing goes before it ends; after it, the minute window's first token
    during = take_weight(WHOOP, held, T0 + 10)
    assert during.granted is False
    assert during.retry_after_seconds == pytest.approx(20 + 1 / 1.5)
    assert levels_at(WHOOP, held, T0 + 29) == (0.0, 700.0)


def test_a_minutes_429_does_not_leave_the_day_window_refilling_at_a_days_pace() -> None:
    # Given a 429 that held the provider for 5 s with most of the day's quota left
    held = hold_all(WHOOP, state(3.0, 5_000.0), T0 + 5)
    assert held is not None
    # When the hold is over and the minute window has refilled one token
    result = take_weight(WHOOP, held, T0 + 5 + 1 / 1.5)
    # Then the call goes (the day window was not emptied)
    assert result.granted is True


def test_a_hold_keeps_a_debt_the_provider_reported() -> None:
    held = hold_all(WHOOP, state(-6.0, 50.0), T0 + 5)
    assert held is not None and held.levels == (-6.0, 50.0)


def test_a_shorter_hold_does_not_shorten_a_longer_one() -> None:
    held = hold_all(WHOOP, state(8.0, 700.0), T0 + 30)
    assert held is not None
    assert hold_all(WHOOP, held, T0 + 20) is None
    longer = hold_all(WHOOP, held, T0 + 45)
    assert longer is not None and longer.hold_until == T0 + 45


def test_feedback_during_a_hold_keeps_the_hold() -> None:
    window = replace(WHOOP_MINUTE, limit_header=None, reset_header=None)
    held = WindowLevels((5.0,), T0, T0 + 30)
    result = take_weight((window,), held, T0 + 1, feedback={"x-ratelimit-remaining": "1"})
    assert result.granted is False
    assert result.state_after is not None and result.state_after.hold_until == T0 + 30


# --- rate windows: the stored state ---------------------------------------------------------------------


def test_state_round_trips_and_matches_windows_by_key() -> None:
    saved = WindowLevels((3.5, 420.0), T0, T0 + 5).to_dict(WHOOP)
    assert saved["windows"] == ["100/60", "10000/86400"]
    # When the config lists the windows the other way round, each keeps its own level
    assert WindowLevels.from_dict(saved, (WHOOP_DAY, WHOOP_MINUTE)) == WindowLevels((420.0, 3.5), T0, T0 + 5)


def test_a_window_added_since_the_state_was_written_starts_full() -> None:
    saved = WindowLevels((3.5,), T0).to_dict((WHOOP_MINUTE,))
    assert WindowLevels.from_dict(saved, WHOOP).levels == (3.5, 1000.0)


def test_a_single_bucket_item_from_before_windows_is_read_with_its_hold() -> None:
    # Given the old item: 0 tokens, "updated" 20 s in the future (a Retry-After hold)
    migrated = WindowLevels.from_single_bucket(0.0, T0 + 20, (RateWindow.per_second(10.0, 10),))
    assert take_weight((RateWindow.per_second(10.0, 10),), migrated, T0).retry_after_seconds == pytest.approx(20.1)
    assert WindowLevels.from_single_bucket(None, None, WHOOP) == WindowLevels.fresh(WHOOP)
