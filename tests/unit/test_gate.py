"""A provider gate's start decision (``decide_start``): breaker, then a slot, then the first call's weight."""

from __future__ import annotations

import pytest

from chalicelib.domain.breaker import BreakerConfig, BreakerState, BreakerStatus
from chalicelib.domain.clock import FakeClock
from chalicelib.domain.gate import GateLimits, Start, decide_start
from chalicelib.domain.limits import RateWindow, WindowLevels
from chalicelib.domain.tenants import TenantBook, user_windows

CONFIG = BreakerConfig(failure_threshold=3, cool_off_seconds=60.0, probe_ttl_seconds=120.0)
WINDOW = RateWindow(requests=100, per_seconds=60.0, burst=10.0, remaining_header="x-ratelimit-remaining")
WINDOWS = (WINDOW,)
SHARED = GateLimits(capacity=2, slot_ttl_seconds=30.0, windows=WINDOWS)
PER_CONNECTION = GateLimits(capacity=2, slot_ttl_seconds=30.0, windows=None)


def _start(
    clock: FakeClock,
    *,
    breaker: BreakerState | None = None,
    holders: dict[str, float] | None = None,
    levels: WindowLevels | None = None,
    limits: GateLimits = SHARED,
    owner: str = "me",
    weight: float = 1,
    feedback: dict[str, str] | None = None,
) -> Start:
    return decide_start(
        breaker or BreakerState(),
        holders or {},
        WindowLevels.fresh(WINDOWS) if levels is None and limits.windows is not None else levels,
        owner=owner,
        now=clock.now(),
        limits=limits,
        config=CONFIG,
        weight=weight,
        feedback=feedback,
    )


def _open(opened_at: float) -> BreakerState:
    return BreakerState(status=BreakerStatus.OPEN, consecutive_failures=3, opened_at=opened_at)


def test_a_closed_breaker_with_a_free_slot_and_room_admits_and_takes_the_weight() -> None:
    # Given a closed breaker, one of two slots held and a full window (10 tokens)
    clock = FakeClock()
    now = clock.now()
    # When "me" starts with a first call of weight 3
    start = _start(clock, holders={"other": now + 10}, weight=3)
    # Then it is admitted, holds a slot until now + ttl, and the weight is taken from the window
    assert start.admission.allowed and not start.admission.probe
    assert start.slot is not None and start.slot.granted
    assert start.slot.holders_after == {"other": now + 10, "me": now + 30.0}
    assert start.slot_wait is None
    assert start.take is not None and start.take.granted
    assert start.take.state_after == WindowLevels((7.0,), now, None)


def test_an_open_breaker_refuses_without_asking_for_a_slot_or_a_take() -> None:
    # Given a breaker opened 10 s ago (cool-off 60 s), free slots and a full window
    clock = FakeClock()
    breaker = _open(clock.now())
    clock.advance(10)
    # When "me" starts
    start = _start(clock, breaker=breaker)
    # Then it is refused for the rest of the cool-off, and neither a slot nor the weight was asked
    assert not start.admission.allowed
    assert start.admission.retry_after_seconds == pytest.approx(50.0)
    assert start.admission.state_after == breaker
    assert (start.slot, start.take, start.slot_wait) == (None, None, None)


def test_full_slots_wait_for_the_earliest_expiry_and_take_nothing() -> None:
    # Given both slots held, one expiring in 12 s and one in 25 s
    clock = FakeClock()
    now = clock.now()
    holders = {"a": now + 25, "b": now + 12}
    # When "me" starts
    start = _start(clock, holders=holders)
    # Then it is admitted by the breaker but waits 12 s for a slot, and no weight was taken
    assert start.admission.allowed
    assert start.slot is not None and not start.slot.granted
    assert start.slot_wait == pytest.approx(12.0)
    assert start.take is None


def test_an_expired_holder_frees_its_slot() -> None:
    # Given both slots held, one of them expired a second ago
    clock = FakeClock()
    now = clock.now()
    # When "me" starts
    start = _start(clock, holders={"a": now + 25, "dead": now - 1})
    # Then "me" takes the dead holder's place
    assert start.slot is not None and start.slot.granted
    assert start.slot.holders_after == {"a": now + 25, "me": now + 30.0}


def test_windows_kept_per_connection_are_not_taken_at_the_gate() -> None:
    # Given a provider whose windows are per connection (no shared windows, no levels)
    clock = FakeClock()
    # When "me" starts
    start = _start(clock, limits=PER_CONNECTION, levels=None)
    # Then the slot is granted and no take was asked
    assert start.admission.allowed
    assert start.slot is not None and start.slot.granted
    assert start.take is None


def test_an_empty_window_refuses_the_take_but_keeps_the_slot_decision() -> None:
    # Given a window emptied at now
    clock = FakeClock()
    empty = WindowLevels((0.0,), clock.now(), None)
    # When "me" starts with weight 1
    start = _start(clock, levels=empty)
    # Then the slot is granted but the take waits for one token's refill
    assert start.slot is not None and start.slot.granted
    assert start.take is not None and not start.take.granted
    assert start.take.retry_after_seconds == pytest.approx(1 / WINDOW.refill_per_second)
    assert start.take.state_after is None
    assert start.waits_for_weight


def test_only_an_admitted_start_with_a_slot_and_no_weight_waits_for_weight() -> None:
    # Given an emptied window, a granted start, a start refused a slot, and a start whose windows are elsewhere
    clock = FakeClock()
    now = clock.now()
    empty = WindowLevels((0.0,), now, None)
    granted = _start(clock)
    no_slot = _start(clock, holders={"a": now + 25, "b": now + 12}, levels=empty)
    elsewhere = _start(clock, limits=PER_CONNECTION, levels=None)
    # When each is asked whether only the first call's weight holds it back
    # Then none of them waits for weight: the slot decision or a granted take comes first
    assert not granted.waits_for_weight
    assert not no_slot.waits_for_weight
    assert not elsewhere.waits_for_weight


def test_after_the_cool_off_the_first_caller_becomes_the_half_open_probe() -> None:
    # Given a breaker opened 60 s ago (the cool-off just ended)
    clock = FakeClock()
    breaker = _open(clock.now())
    clock.advance(60)
    # When "me" starts
    start = _start(clock, breaker=breaker)
    # Then "me" owns the probe until now + probe ttl, with a slot and the weight
    after = start.admission.state_after
    assert start.admission.allowed and start.admission.probe
    assert (after.status, after.probe_owner, after.probe_expires_at) == (
        BreakerStatus.HALF_OPEN,
        "me",
        clock.now() + 120.0,
    )
    assert start.slot is not None and start.slot.granted
    assert start.take is not None and start.take.granted


def test_a_half_open_breaker_admits_only_its_probe_owner() -> None:
    # Given a half-open breaker whose live probe belongs to "prober"
    clock = FakeClock()
    probing = BreakerState(
        status=BreakerStatus.HALF_OPEN, consecutive_failures=3, probe_owner="prober", probe_expires_at=clock.now() + 40
    )
    # When "prober" and then "me" start
    owner_start = _start(clock, breaker=probing, owner="prober")
    other_start = _start(clock, breaker=probing, owner="me")
    # Then the probe owner goes on (state unchanged); the other waits for the probe to expire, asking nothing else
    assert owner_start.admission.allowed and owner_start.admission.probe
    assert owner_start.admission.state_after == probing
    assert owner_start.slot is not None and owner_start.slot.granted
    assert not other_start.admission.allowed
    assert other_start.admission.retry_after_seconds == pytest.approx(40.0)
    assert (other_start.slot, other_start.take) == (None, None)


def test_feedback_lowering_the_level_rides_on_the_take() -> None:
    # Given a full window (10 tokens) and the previous answer saying only 4 calls are left
    clock = FakeClock()
    now = clock.now()
    # When "me" starts with weight 1 and that feedback
    start = _start(clock, feedback={"x-ratelimit-remaining": "4"})
    # Then the take is granted from the provider's count: 4 - 1 = 3 are left, in the same decision
    assert start.take is not None and start.take.granted
    assert start.take.state_after == WindowLevels((3.0,), now, None)


def test_feedback_is_ignored_when_the_slot_is_refused() -> None:
    # Given full slots and feedback saying no call is left
    clock = FakeClock()
    now = clock.now()
    # When "me" starts
    start = _start(clock, holders={"a": now + 5, "b": now + 6}, feedback={"x-ratelimit-remaining": "0"})
    # Then nothing about the windows is decided (the take rides only on a granted slot)
    assert start.take is None
    assert start.slot_wait == pytest.approx(5.0)


# --- one user's share --------------------------------------------------------------------------------

FAIR = GateLimits(
    capacity=4, slot_ttl_seconds=30.0, windows=WINDOWS, user_slots=2, user_windows=user_windows(WINDOWS, 0.5)
)


def test_a_user_holding_its_share_of_slots_waits_while_another_user_starts() -> None:
    # Given 2 of 4 slots held by user a (its share: 2)
    clock = FakeClock()
    now = clock.now()
    holders = {"a0": now + 10, "a1": now + 20}
    book = TenantBook({"a0": "a", "a1": "a"})
    # When a third sync of a, and a sync of b, start
    third = decide_start(
        BreakerState(),
        holders,
        WindowLevels.fresh(WINDOWS),
        owner="a2",
        now=now,
        limits=FAIR,
        config=CONFIG,
        weight=1,
        user="a",
        book=book,
    )
    other = decide_start(
        BreakerState(),
        holders,
        WindowLevels.fresh(WINDOWS),
        owner="b0",
        now=now,
        limits=FAIR,
        config=CONFIG,
        weight=1,
        user="b",
        book=book,
    )
    # Then a's waits for its own first slot (10 s) with nothing to write; b's holds a slot, booked as b's
    assert third.slot_wait == pytest.approx(10.0) and third.take is None and third.book_after is None
    assert other.slot is not None and other.slot.granted and other.take is not None and other.take.granted
    assert other.book_after is not None and other.book_after.slot_users == {"a0": "a", "a1": "a", "b0": "b"}


def test_a_start_takes_the_first_call_from_the_users_part_too() -> None:
    # Given user a's part of the window spent (5 of 10), the window itself still holding 5
    clock = FakeClock()
    now = clock.now()
    parts = FAIR.user_windows
    assert parts is not None
    book = TenantBook({}, {"a": WindowLevels((0.0,), now, None)})
    # When a and b start
    mine = decide_start(
        BreakerState(),
        {},
        WindowLevels((5.0,), now, None),
        owner="a0",
        now=now,
        limits=FAIR,
        config=CONFIG,
        weight=1,
        user="a",
        book=book,
    )
    theirs = decide_start(
        BreakerState(),
        {},
        WindowLevels((5.0,), now, None),
        owner="b0",
        now=now,
        limits=FAIR,
        config=CONFIG,
        weight=1,
        user="b",
        book=book,
    )
    # Then a waits for its part to refill (nothing written: a slot is not held just to wait); b takes from both
    assert mine.waits_for_weight and mine.take is not None
    assert mine.take.retry_after_seconds == pytest.approx(1 / parts[0].refill_per_second)
    assert (
        theirs.take is not None and theirs.take.granted and theirs.take.state_after == WindowLevels((4.0,), now, None)
    )
    assert theirs.book_after is not None and theirs.book_after.levels["b"] == WindowLevels((4.0,), now, None)


def test_a_start_without_a_user_books_nothing() -> None:
    # Given the fair limits and no user named (a caller from before shares, or a test's own holder)
    clock = FakeClock()
    # When "me" starts
    start = _start(clock, limits=FAIR)
    # Then the slot and the weight are granted as before, and the book is unchanged
    assert start.slot is not None and start.slot.granted
    assert start.book_after is None
