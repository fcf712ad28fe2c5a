"""Retry timing for upstream calls: pure functions of their inputs (no clock, no randomness inside).

Exponential backoff with full jitter (a random share of ``base * 2**attempt``, capped),
never shorter than what the provider asked for with ``Retry-After`` or its own reset header.
"""

from __future__ import annotations

from email.utils import parsedate_to_datetime

# A reset header above this is an epoch timestamp (2001-09-09); below, a number of seconds.
_EPOCH_THRESHOLD = 1_000_000_000


def parse_retry_after(value: str | None, now: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date (RFC 9110). ``None`` if unusable."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:  # RFC dates are GMT
        return None
    return max(0.0, moment.timestamp() - now)


def parse_reset_header(value: str | None, now: float) -> float | None:
    """A provider's rate-limit reset header (``X-RateLimit-Reset`` and kin) as seconds from ``now``.

    Providers send either an epoch timestamp or seconds until the reset; large numbers are
    taken as timestamps. An HTTP date is accepted too.
    """
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return parse_retry_after(value, now)
    if number >= _EPOCH_THRESHOLD:
        return max(0.0, number - now)
    return max(0.0, number)


def backoff_delay(
    attempt: int,
    *,
    base_seconds: float,
    max_seconds: float,
    random_unit: float,
    provider_wait_seconds: float | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` counts from 0).

    Full jitter: ``random_unit * min(max, base * 2**attempt)`` with ``random_unit`` in [0, 1).
    The provider's own wait (``Retry-After`` / reset header) is a floor, and it may exceed
    ``max_seconds``: the caller decides whether it can wait that long.
    """
    ceiling = min(max_seconds, base_seconds * 2 ** min(attempt, 30))
    delay = float(random_unit * ceiling)
    if provider_wait_seconds is not None:
        delay = max(delay, provider_wait_seconds)
    return delay
