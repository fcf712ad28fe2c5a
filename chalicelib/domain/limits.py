"""Shared provider limits: the pure arithmetic. The shared state lives in DynamoDB (``DynamoStore``).

- a token bucket (``take``): per user for manual refreshes;
- rate windows (``take_weight``): a provider's published limits ("100 requests per minute and
  10,000 per day"), all taken from at once;
- concurrency slots (``take_slot``): at most N syncs of one provider at a time.

Why a window is a token bucket with capacity ``B`` and refill ``(requests - B) / per_seconds``
-------------------------------------------------------------------------------------------------
A provider that allows ``requests`` per ``per_seconds`` may count them in a fixed window (every
clock minute) or a sliding one (the last 60 s). Both are safe if we never let more than
``requests`` through in ANY interval of ``per_seconds``. A token bucket with capacity ``B`` and
refill ``r`` holds at most ``B`` at the start of any interval ``(t, t + T]`` and gains at most
``r * T`` during it, so it grants at most ``B + r * T`` in it. Asking ``B + r * per_seconds <=
requests`` gives ``r = (requests - B) / per_seconds``: the burst is paid for by a slower refill.
The default burst ``min(requests, max(1, requests // 10))`` keeps 90 % of a window for the steady
pace, so a burst never spends a day's quota at once.

``requests = 1`` leaves no room for a burst below it: that window has ``B = 1`` and refills just
under one token per ``per_seconds``, so the next call comes strictly after ``per_seconds`` (two
grants are never inside one interval of that length).

Weights, feedback and holds only ever lower a level, so the guarantee survives them. The one
exception is a weight above a window's burst (config ``check_weights`` refuses it): such a call
waits for a full bucket and leaves it in debt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chalicelib.domain.retry import parse_reset_header

# Float refill arithmetic can leave 0.9999999 of a token: that is a token (and a wait too short to sleep).
_EPSILON = 1e-6
# The refill of a one-request window, as a share of one token per window: strictly slower than the
# window, by more than _EPSILON, so float noise can never bring the second call inside it.
_SINGLE_REQUEST_REFILL_SHARE = 0.999
# Provider feedback must lower a window by at least this much to be worth a write of its own.
CLEARLY_TIGHTER_TOKENS = 1.0


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


# --- rate windows -------------------------------------------------------------------------------


def default_burst(requests: int) -> int:
    """A tenth of the window (at least one call) may go at once; the rest is paced."""
    return min(requests, max(1, requests // 10))


_UNITS = ((86_400.0, "day"), (3_600.0, "hour"), (60.0, "minute"), (1.0, "second"))


def _per(seconds: float) -> str:
    for size, unit in _UNITS:
        if seconds == size:
            return unit
        if seconds > size and seconds % size == 0:
            return f"{seconds / size:g} {unit}s"
    return f"{seconds:g}s"


@dataclass(frozen=True)
class RateWindow:
    """One published limit: at most ``requests`` (summed weight) in any ``per_seconds``.

    The optional headers are the provider's own count, read from every answer (lower-cased names):
    ``remaining_header`` (calls left), ``used_header`` (weight used, e.g. Binance's
    ``x-mbx-used-weight-1m``: left = requests - used), ``reset_header`` (seconds, or an epoch, until the
    window is full again) and ``limit_header`` (WHOOP's ``x-ratelimit-limit: 100, 100;window=60,
    10000;window=86400`` names first the limit the remaining count is about: feedback about
    another window is ignored).
    """

    requests: float
    per_seconds: float
    burst: float
    remaining_header: str | None = None
    used_header: str | None = None
    reset_header: str | None = None
    limit_header: str | None = None
    legacy: bool = False
    """Written as ``requests_per_second`` + ``burst`` (one bucket, ``requests = burst + rate`` per second)."""

    @classmethod
    def per_second(cls, requests_per_second: float, burst: int) -> RateWindow:
        """The old single bucket: ``burst`` at once, ``requests_per_second`` after."""
        return cls(requests=burst + requests_per_second, per_seconds=1.0, burst=float(burst), legacy=True)

    @property
    def capacity(self) -> float:
        return self.burst

    @property
    def refill_per_second(self) -> float:
        if self.burst < self.requests:
            return (self.requests - self.burst) / self.per_seconds
        return _SINGLE_REQUEST_REFILL_SHARE / self.per_seconds

    @property
    def key(self) -> str:
        """Identifies the window in stored state, so a config change never mixes up levels."""
        return f"{self.requests:g}/{self.per_seconds:g}"

    def describe(self) -> str:
        if self.legacy:
            return f"{self.refill_per_second:g} requests/second"
        return f"{self.requests:,.0f} requests/{_per(self.per_seconds)}"


@dataclass(frozen=True)
class WindowLevels:
    """The shared state of one limit scope: every window's level as of ``updated_at``.

    ``updated_at`` is ``None`` for a scope never used (every window full). While ``hold_until`` is
    in the future (a provider's ``Retry-After``) nothing is granted and nothing refills. A level
    can be negative: the provider said it has less left than we thought (a debt to refill).
    """

    levels: tuple[float, ...]
    updated_at: float | None
    hold_until: float | None = None

    @classmethod
    def fresh(cls, windows: Sequence[RateWindow]) -> WindowLevels:
        return cls(tuple(w.capacity for w in windows), None, None)

    def to_dict(self, windows: Sequence[RateWindow]) -> dict[str, Any]:
        return {
            "windows": [w.key for w in windows],
            "levels": [round(level, 6) for level in self.levels],
            "updated_at": self.updated_at,
            "hold_until": self.hold_until,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any] | None, windows: Sequence[RateWindow]) -> WindowLevels:
        """Stored state, matched to today's windows by key; a window added since starts full."""
        if not raw or raw.get("updated_at") is None:
            return cls.fresh(windows)
        stored = dict(zip(raw.get("windows", []), raw.get("levels", []), strict=False))
        levels = tuple(min(w.capacity, float(stored.get(w.key, w.capacity))) for w in windows)
        hold = raw.get("hold_until")
        return cls(levels, float(raw["updated_at"]), None if hold is None else float(hold))

    @classmethod
    def from_single_bucket(
        cls, tokens: float | None, updated_at: float | None, windows: Sequence[RateWindow]
    ) -> WindowLevels:
        """An item written by the single-bucket version (``tokens``; ``updated_at`` ahead = held)."""
        if tokens is None or updated_at is None:
            return cls.fresh(windows)
        levels = tuple(min(w.capacity, tokens) for w in windows)
        return cls(levels, updated_at, updated_at)


def levels_at(windows: Sequence[RateWindow], state: WindowLevels, now: float) -> tuple[float, ...]:
    """Each window's level at ``now``: refilled since ``updated_at`` (or since the hold ends)."""
    if state.updated_at is None:
        return tuple(w.capacity for w in windows)
    refill_from = max(state.updated_at, state.hold_until or state.updated_at)
    elapsed = max(0.0, now - refill_from)
    return tuple(
        min(w.capacity, level + elapsed * w.refill_per_second) for w, level in zip(windows, state.levels, strict=True)
    )


def _number(value: str | None) -> float | None:
    """A header's number (the first of a list); ``None`` when it is not a finite number."""
    if value is None:
        return None
    text = value.split(",", 1)[0].split(";", 1)[0].strip()
    try:
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _is_about(window: RateWindow, limit_value: str | None) -> bool:
    """Does the limit header's first entry (``100`` or ``100;window=60``) name this window?"""
    if limit_value is None:
        return True  # the provider did not say which: trust the configured header
    first = limit_value.split(",", 1)[0]
    parts = [part.strip() for part in first.split(";")]
    if _number(parts[0]) != window.requests:
        return False
    for part in parts[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "window" and _number(value) not in (None, window.per_seconds):
            return False
    return True


def provider_level(window: RateWindow, headers: Mapping[str, str], now: float) -> float | None:
    """The most this window may hold at ``now``, by the provider's own count; ``None`` if it said nothing.

    ``remaining`` calls left caps the level at ``remaining``: our own calls never break a window
    (the bucket's guarantee above), so a count below our level is the provider seeing calls we did
    not make (another app on the key, a restored item), and the bucket refills from there at its own
    pace. Only "none left, resetting in ``d`` seconds" becomes a wait until the reset (the level
    ``-r * d``): a fixed-window provider would refuse any call before it. A reset is not charged
    against a positive count: on a sliding window it means "whole again", up to a whole window
    away, and charging it would stall a fleet that is well within its limit.
    """
    remaining: float | None = None
    if window.remaining_header:
        remaining = _number(headers.get(window.remaining_header))
    if window.used_header:
        used = _number(headers.get(window.used_header))
        if used is not None:
            left = window.requests - used
            remaining = left if remaining is None else min(remaining, left)
    if remaining is None:
        return None
    if window.limit_header and not _is_about(window, headers.get(window.limit_header)):
        return None
    remaining = max(0.0, remaining)
    if remaining < 1.0 and window.reset_header:
        reset_in = parse_reset_header(headers.get(window.reset_header), now)
        if reset_in is not None:
            # A reset beyond the window's length is nonsense (or milliseconds): never a longer debt.
            return -window.refill_per_second * min(reset_in, window.per_seconds)
    return remaining


def _lower(headers: Mapping[str, str]) -> dict[str, str]:
    return {name.lower(): value for name, value in headers.items()}


def tighten(
    windows: Sequence[RateWindow], levels: Sequence[float], headers: Mapping[str, str], now: float
) -> tuple[float, ...]:
    """``levels`` lowered to what the provider says is left (never raised: feedback only tightens)."""
    lowered = _lower(headers)
    tightened: list[float] = []
    for window, level in zip(windows, levels, strict=True):
        said = provider_level(window, lowered, now)
        tightened.append(level if said is None else min(level, said))
    return tuple(tightened)


def _clearly_lower(after: Sequence[float], before: Sequence[float]) -> bool:
    return any(a <= b - CLEARLY_TIGHTER_TOKENS for a, b in zip(after, before, strict=True))


def may_tighten(windows: Sequence[RateWindow], headers: Mapping[str, str], now: float) -> bool:
    """Could these headers lower any window at all (below its capacity)? If not, nothing needs reading."""
    full = tuple(w.capacity for w in windows)
    return _clearly_lower(tighten(windows, full, headers, now), full)


@dataclass(frozen=True)
class WindowTake:
    granted: bool
    retry_after_seconds: float
    """0 when granted; else the longest of the windows' waits (plus what is left of a hold)."""
    state_after: WindowLevels | None
    """What to write, or ``None``: nothing worth a write (a refusal the provider's feedback did not tighten)."""


def _settled(level: float) -> float:
    return 0.0 if abs(level) < _EPSILON else level


def take_weight(
    windows: Sequence[RateWindow],
    state: WindowLevels,
    now: float,
    *,
    weight: float = 1,
    feedback: Mapping[str, str] | None = None,
) -> WindowTake:
    """Take ``weight`` from every window at once, or from none.

    ``feedback`` (the previous answer's headers) first lowers the levels to what the provider
    counts, in the same decision, so it rides on the take's own write.
    """
    before = levels_at(windows, state, now)
    levels = tighten(windows, before, feedback, now) if feedback else before
    updated_at = now if state.updated_at is None else max(now, state.updated_at)
    held_for = 0.0 if state.hold_until is None else max(0.0, state.hold_until - now)
    hold = state.hold_until if held_for > 0 else None
    # A weight above a window's burst could never fit: it waits for a full bucket and leaves a debt.
    needs = [min(weight, w.capacity) for w in windows]
    waits = [
        max(0.0, need - level) / w.refill_per_second
        for w, need, level in zip(windows, needs, levels, strict=True)
        if level < need - _EPSILON
    ]
    if held_for == 0.0 and not waits:
        after = tuple(_settled(level - weight) for level in levels)
        return WindowTake(True, 0.0, WindowLevels(after, updated_at, None))
    wait = held_for + max(waits, default=0.0)
    if feedback and _clearly_lower(levels, before):
        return WindowTake(False, wait, WindowLevels(levels, updated_at, hold))
    return WindowTake(False, wait, None)


def hold_all(windows: Sequence[RateWindow], state: WindowLevels, until: float) -> WindowLevels | None:
    """The provider said "not before ``until``": nobody calls before then, and the shortest window
    (the one a refusal is about, unless its wait says otherwise) restarts empty (a debt stays).

    Longer windows keep their level, frozen until ``until``: emptying a day window for a minute's
    429 would leave it refilling at a day's pace long after the provider is willing again (a refusal
    about the day itself comes with a wait of hours, which the hold covers). No clock is needed: the
    levels count from ``until``, and the refill since the last write is forgone (the safe side).
    ``None`` when an equal or longer hold is already in place.
    """
    if state.hold_until is not None and state.hold_until >= until:
        return None
    stored = tuple(w.capacity for w in windows) if state.updated_at is None else state.levels
    shortest = min(range(len(windows)), key=lambda index: windows[index].per_seconds)
    held = tuple(min(0.0, level) if index == shortest else level for index, level in enumerate(stored))
    return WindowLevels(held, until, until)


def observe(
    windows: Sequence[RateWindow], state: WindowLevels, headers: Mapping[str, str], now: float
) -> WindowLevels | None:
    """Feedback with no take to ride on: the new state if it is clearly tighter, else ``None``."""
    before = levels_at(windows, state, now)
    after = tighten(windows, before, headers, now)
    if not _clearly_lower(after, before):
        return None
    updated_at = now if state.updated_at is None else max(now, state.updated_at)
    hold = state.hold_until if state.hold_until is not None and state.hold_until > now else None
    return WindowLevels(after, updated_at, hold)


# --- concurrency slots ----------------------------------------------------------------------------


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
