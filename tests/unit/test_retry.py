"""Retry timing: pure functions of their inputs (no clock, no randomness, no sleeping)."""

from __future__ import annotations

from email.utils import formatdate

import pytest

from chalicelib.domain.retry import backoff_delay, parse_reset_header, parse_retry_after

# Wed, 21 Oct 2015 07:28:00 GMT (the RFC 9110 example date)
RFC_EXAMPLE_DATE = "Wed, 21 Oct 2015 07:28:00 GMT"
RFC_EXAMPLE_EPOCH = 1_445_412_480.0
NOW = RFC_EXAMPLE_EPOCH - 120.0  # two minutes before the example date


def http_date(epoch: float) -> str:
    """An IMF-fixdate (``..., dd Mon yyyy hh:mm:ss GMT``) as an HTTP server sends it."""
    return formatdate(epoch, usegmt=True)


# --- parse_retry_after ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("1", 1.0), ("120", 120.0), ("  30  ", 30.0), ("2.5", 2.5), ("86400", 86400.0)],
)
def test_retry_after_delta_seconds_are_taken_as_they_are(value: str, seconds: float) -> None:
    # Given a Retry-After header in delta-seconds
    # When it is parsed
    result = parse_retry_after(value, now=NOW)
    # Then it is that many seconds, whatever `now` is
    assert result == pytest.approx(seconds)


def test_retry_after_delta_seconds_do_not_depend_on_now() -> None:
    assert parse_retry_after("45", now=0.0) == parse_retry_after("45", now=NOW) == pytest.approx(45.0)


def test_retry_after_negative_delta_is_clamped_to_zero() -> None:
    # Given a malformed negative delta
    # Then it never produces a negative wait
    assert parse_retry_after("-5", now=NOW) == 0.0


def test_retry_after_http_date_in_the_future_is_seconds_until_that_date() -> None:
    # Given the RFC example date, two minutes after `now`
    # When it is parsed
    result = parse_retry_after(RFC_EXAMPLE_DATE, now=NOW)
    # Then it is the 120 s left until that moment
    assert result == pytest.approx(120.0)


@pytest.mark.parametrize("ahead", [1.0, 7.0, 3600.0, 86_400.0])
def test_retry_after_http_date_is_measured_from_the_given_now(ahead: float) -> None:
    # Given an HTTP date `ahead` seconds after an arbitrary `now`
    now = 1_700_000_000.0
    # Then the wait is exactly `ahead`
    assert parse_retry_after(http_date(now + ahead), now=now) == pytest.approx(ahead)


def test_retry_after_http_date_in_the_past_means_no_wait() -> None:
    # Given a date one hour before `now`
    # When it is parsed
    result = parse_retry_after(RFC_EXAMPLE_DATE, now=RFC_EXAMPLE_EPOCH + 3600.0)
    # Then the provider asks for no wait at all (not a negative one)
    assert result == 0.0


def test_retry_after_http_date_exactly_now_means_no_wait() -> None:
    assert parse_retry_after(RFC_EXAMPLE_DATE, now=RFC_EXAMPLE_EPOCH) == 0.0


def test_retry_after_http_date_with_surrounding_whitespace_is_accepted() -> None:
    assert parse_retry_after(f"  {RFC_EXAMPLE_DATE}\t", now=NOW) == pytest.approx(120.0)


def test_retry_after_http_date_with_a_numeric_offset_is_converted_to_utc() -> None:
    # Given the example moment written in UTC+02:00
    value = "Wed, 21 Oct 2015 09:28:00 +0200"
    # Then it is the same moment as the GMT form
    assert parse_retry_after(value, now=NOW) == pytest.approx(120.0)


def test_retry_after_date_without_a_timezone_is_unusable() -> None:
    # Given a date with no zone at all (HTTP dates are always GMT; guessing a zone could be hours off)
    # Then it is refused rather than guessed
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00", now=NOW) is None


@pytest.mark.parametrize(
    "value",
    ["soon", "later please", "12 seconds", "1,5", "Mon, 99 Foo 2015", "0x10", "abc123", "--"],
)
def test_retry_after_garbage_is_unusable(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_retry_after_empty_is_unusable(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_retry_after_missing_is_unusable() -> None:
    assert parse_retry_after(None, now=NOW) is None


# --- parse_reset_header ---------------------------------------------------------------------------


def test_reset_header_small_number_is_seconds_from_now() -> None:
    # Given a reset header counting seconds until the window resets
    # When it is parsed at an arbitrary `now`
    result = parse_reset_header("30", now=NOW)
    # Then it is those 30 seconds (not 30 seconds after the epoch)
    assert result == pytest.approx(30.0)


def test_reset_header_epoch_timestamp_is_seconds_until_that_moment() -> None:
    # Given a reset header holding the epoch second the window resets at, 45 s from now
    now = 1_700_000_000.0
    # When it is parsed
    result = parse_reset_header(str(int(now + 45)), now=now)
    # Then it is the 45 s left
    assert result == pytest.approx(45.0)


def test_reset_header_fractional_epoch_timestamp_is_accepted() -> None:
    now = 1_700_000_000.0
    assert parse_reset_header(f"{now + 2.5:.1f}", now=now) == pytest.approx(2.5)


def test_reset_header_epoch_timestamp_in_the_past_means_no_wait() -> None:
    now = 1_700_000_000.0
    assert parse_reset_header(str(int(now - 10)), now=now) == 0.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("999999999", 999_999_999.0),  # just under the threshold: still a (very long) count of seconds
        ("1000000000", 0.0),  # at the threshold: a timestamp (2001-09-09), long past
    ],
)
def test_reset_header_threshold_between_seconds_and_timestamps(value: str, seconds: float) -> None:
    # Given `now` well after 2001
    now = 1_700_000_000.0
    # Then numbers from 1e9 up are timestamps, anything lower is seconds
    assert parse_reset_header(value, now=now) == pytest.approx(seconds)


def test_reset_header_http_date_is_seconds_until_that_date() -> None:
    assert parse_reset_header(RFC_EXAMPLE_DATE, now=NOW) == pytest.approx(120.0)


def test_reset_header_http_date_in_the_past_means_no_wait() -> None:
    assert parse_reset_header(RFC_EXAMPLE_DATE, now=RFC_EXAMPLE_EPOCH + 60) == 0.0


def test_reset_header_negative_seconds_are_clamped_to_zero() -> None:
    assert parse_reset_header("-3", now=NOW) == 0.0


def test_reset_header_whitespace_around_a_number_is_ignored() -> None:
    assert parse_reset_header(" 12 ", now=NOW) == pytest.approx(12.0)


@pytest.mark.parametrize("value", [None, "", "   ", "tomorrow", "12s"])
def test_reset_header_missing_empty_or_garbage_is_unusable(value: str | None) -> None:
    assert parse_reset_header(value, now=NOW) is None


# --- backoff_delay --------------------------------------------------------------------------------


@pytest.mark.parametrize("attempt", [0, 1, 2, 5, 10, 30, 100])
def test_backoff_with_random_zero_is_no_wait(attempt: int) -> None:
    # Given full jitter and the lowest random draw
    # Then the delay is zero, at every attempt
    assert backoff_delay(attempt, base_seconds=1.0, max_seconds=30.0, random_unit=0.0) == 0.0


@pytest.mark.parametrize(
    ("attempt", "ceiling"),
    [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 16.0), (5, 30.0), (6, 30.0), (20, 30.0)],
)
def test_backoff_with_the_highest_draw_approaches_the_capped_exponential(attempt: int, ceiling: float) -> None:
    # Given base 1 s, cap 30 s and a random draw just below 1
    # When the delay is computed
    delay = backoff_delay(attempt, base_seconds=1.0, max_seconds=30.0, random_unit=0.999)
    # Then it is just below min(cap, base * 2**attempt)
    assert delay == pytest.approx(0.999 * ceiling)
    assert delay < ceiling


def test_backoff_scales_with_the_base() -> None:
    # Given base 0.5 s, attempt 3 -> ceiling 4 s
    delay = backoff_delay(3, base_seconds=0.5, max_seconds=60.0, random_unit=0.5)
    # Then the jitter is a share of that ceiling
    assert delay == pytest.approx(2.0)


@pytest.mark.parametrize("attempt", [0, 1, 3, 7, 12, 31, 64, 1_000])
@pytest.mark.parametrize("random_unit", [0.0, 0.25, 0.5, 0.75, 0.999999])
def test_backoff_never_exceeds_the_cap_without_a_provider_wait(attempt: int, random_unit: float) -> None:
    delay = backoff_delay(attempt, base_seconds=2.0, max_seconds=45.0, random_unit=random_unit)
    assert 0.0 <= delay < 45.0


def test_backoff_huge_attempt_numbers_do_not_overflow() -> None:
    # Given an absurd attempt count (2**10_000 would not fit a float)
    delay = backoff_delay(10_000, base_seconds=1.0, max_seconds=300.0, random_unit=0.5)
    # Then the delay is simply half the cap
    assert delay == pytest.approx(150.0)


def test_backoff_is_a_float() -> None:
    assert isinstance(backoff_delay(0, base_seconds=1, max_seconds=10, random_unit=0), float)


def test_provider_wait_is_a_floor_over_a_shorter_jitter() -> None:
    # Given a jittered delay of 0.5 s and a provider asking for 10 s
    delay = backoff_delay(0, base_seconds=1.0, max_seconds=30.0, random_unit=0.5, provider_wait_seconds=10.0)
    # Then the provider's wait wins
    assert delay == pytest.approx(10.0)


def test_provider_wait_does_not_shorten_a_longer_jitter() -> None:
    # Given a jittered delay of 0.75 * 16 = 12 s and a provider asking for 3 s
    delay = backoff_delay(4, base_seconds=1.0, max_seconds=30.0, random_unit=0.75, provider_wait_seconds=3.0)
    # Then the longer jittered delay is kept
    assert delay == pytest.approx(12.0)


def test_provider_wait_may_exceed_the_cap() -> None:
    # Given a cap of 30 s and a provider asking for 120 s
    delay = backoff_delay(2, base_seconds=1.0, max_seconds=30.0, random_unit=0.999, provider_wait_seconds=120.0)
    # Then the provider's 120 s stands: the caller decides whether it can wait that long
    assert delay == pytest.approx(120.0)


def test_provider_wait_applies_even_with_random_zero() -> None:
    delay = backoff_delay(0, base_seconds=1.0, max_seconds=30.0, random_unit=0.0, provider_wait_seconds=5.0)
    assert delay == pytest.approx(5.0)


def test_provider_wait_of_zero_changes_nothing() -> None:
    without = backoff_delay(3, base_seconds=1.0, max_seconds=30.0, random_unit=0.3)
    with_zero = backoff_delay(3, base_seconds=1.0, max_seconds=30.0, random_unit=0.3, provider_wait_seconds=0.0)
    assert with_zero == pytest.approx(without) == pytest.approx(2.4)


def test_parsed_retry_after_feeds_the_backoff_floor() -> None:
    # Given a 429 whose Retry-After is an HTTP date 120 s away
    wait = parse_retry_after(RFC_EXAMPLE_DATE, now=NOW)
    # When the next delay is computed with a small jitter
    delay = backoff_delay(1, base_seconds=1.0, max_seconds=30.0, random_unit=0.1, provider_wait_seconds=wait)
    # Then the retry waits for the provider's date
    assert delay == pytest.approx(120.0)
