"""One user's share of a provider (``chalicelib/domain/tenants.py``): slots, parts of the windows, the book."""

from __future__ import annotations

import pytest

from chalicelib.domain.limits import RateWindow, WindowLevels
from chalicelib.domain.tenants import (
    TenantBook,
    take_for_user,
    take_user_slot,
    user_of_scope,
    user_slot_cap,
    user_windows,
)

NOW = 1_000_000.0
TTL = 30.0
MINUTE = RateWindow(requests=100, per_seconds=60.0, burst=10.0, remaining_header="x-ratelimit-remaining")
DAY = RateWindow(requests=10_000, per_seconds=86_400.0, burst=1_000.0)
SECOND = RateWindow.per_second(10.0, 10)


@pytest.mark.parametrize(
    ("capacity", "share", "expected"),
    [(10, 0.5, 5), (3, 0.5, 1), (1, 0.5, 1), (10, 0.99, 9), (10, 3, 3), (2, 5, 2), (10, 1, 1)],
)
def test_a_users_slot_cap_is_a_fraction_below_one_and_a_count_from_one(
    capacity: int, share: float, expected: int
) -> None:
    # Given a provider's slots and a share; When the user's cap is asked; Then it is rounded down, at least one
    assert user_slot_cap(capacity, share) == expected


def test_a_user_whose_share_is_full_is_refused_while_another_user_gets_a_slot() -> None:
    # Given 5 of 10 slots held by user a (its share: 5) and one expired holder of a's
    holders = {f"a{n}": NOW + 20 + n for n in range(5)} | {"dead": NOW - 1}
    slot_users = {f"a{n}": "a" for n in range(5)} | {"dead": "a"}
    # When a sixth sync of a asks, and then a sync of b
    refused = take_user_slot(holders, slot_users, "a5", "a", capacity=10, user_cap=5, now=NOW, ttl_seconds=TTL)
    granted = take_user_slot(holders, slot_users, "b0", "b", capacity=10, user_cap=5, now=NOW, ttl_seconds=TTL)
    # Then a waits for its own first slot to expire at the latest, and b holds a slot
    assert not refused.granted and refused.retry_after_seconds == pytest.approx(20)
    assert granted.granted and granted.holders_after["b0"] == NOW + TTL


def test_a_holder_renewing_its_slot_is_never_refused_for_its_share() -> None:
    # Given user a holding its whole share (2)
    holders = {"a0": NOW + 5, "a1": NOW + 6}
    # When a0 renews
    renewed = take_user_slot(
        holders, {"a0": "a", "a1": "a"}, "a0", "a", capacity=4, user_cap=2, now=NOW, ttl_seconds=TTL
    )
    # Then it keeps its slot, until now + ttl
    assert renewed.granted and renewed.holders_after["a0"] == NOW + TTL


def test_a_holder_with_no_user_counts_for_nobodys_share() -> None:
    # Given two slots held by syncs whose user is unknown (written before shares existed)
    holders = {"old0": NOW + 5, "old1": NOW + 6}
    # When user a asks with a share of one
    result = take_user_slot(holders, {}, "a0", "a", capacity=4, user_cap=1, now=NOW, ttl_seconds=TTL)
    # Then only the provider's capacity counts them
    assert result.granted


def test_users_parts_split_only_windows_of_a_minute_or_longer() -> None:
    # Given a per-second window, a minute window and a day window
    parts = user_windows((SECOND, MINUTE, DAY), 0.5)
    # Then the user has half of the minute's and the day's burst and requests, and no part of the second
    assert parts is not None
    assert [(p.requests, p.per_seconds, p.burst) for p in parts] == [(50.0, 60.0, 5.0), (5_000.0, 86_400.0, 500.0)]
    # And a share of 1, or only short windows, splits nothing
    assert user_windows((MINUTE,), 1.0) is None
    assert user_windows((SECOND,), 0.5) is None


def test_a_part_keeps_at_least_one_call() -> None:
    # Given a one-request-a-minute window split into tenths
    parts = user_windows((RateWindow(requests=1, per_seconds=60.0, burst=1.0),), 0.1)
    # Then a user may still make that one call
    assert parts is not None and parts[0].burst == 1.0 and parts[0].requests == 1.0


def test_a_call_must_fit_the_users_part_as_well_as_the_shared_window() -> None:
    # Given the shared minute window full, and user a's part (5) spent
    parts = user_windows((MINUTE,), 0.5)
    assert parts is not None
    shared = WindowLevels.fresh((MINUTE,))
    spent = WindowLevels((0.0,), NOW, None)
    # When a asks for a call
    take, mine = take_for_user((MINUTE,), shared, parts, spent, NOW)
    # Then it is refused for a's part (a token refills in 60 / 45 s), and nothing is taken from the window
    assert not take.granted and mine is None
    assert take.retry_after_seconds == pytest.approx(60 / 45)
    assert take.state_after is None
    # And a user whose part is full takes from both
    granted, after = take_for_user((MINUTE,), shared, parts, WindowLevels.fresh(parts), NOW)
    assert granted.granted and granted.state_after == WindowLevels((9.0,), NOW, None)
    assert after == WindowLevels((4.0,), NOW, None)


def test_feedback_still_lowers_the_shared_window_when_the_users_part_refuses() -> None:
    # Given user a's part spent, and the provider saying only 2 calls are left in the minute
    parts = user_windows((MINUTE,), 0.5)
    assert parts is not None
    take, _ = take_for_user(
        (MINUTE,),
        WindowLevels.fresh((MINUTE,)),
        parts,
        WindowLevels((0.0,), NOW, None),
        NOW,
        feedback={"x-ratelimit-remaining": "2"},
    )
    # Then the refusal carries the shared window lowered to what the provider counts
    assert not take.granted and take.state_after is not None and take.state_after.levels == (2.0,)


def test_the_book_round_trips_and_drops_levels_kept_for_other_parts() -> None:
    # Given a book with a slot's user and a user's levels
    parts = user_windows((MINUTE,), 0.5)
    assert parts is not None
    book = TenantBook({"o1": "a"}, {"a": WindowLevels((3.0,), NOW, None)})
    # When it is written and read back
    document = book.to_document(parts)
    # Then it is the same book; read for another share, only the slots' users are left
    assert TenantBook.from_document(document, parts) == book
    other = user_windows((MINUTE,), 0.25)
    assert TenantBook.from_document(document, other) == TenantBook({"o1": "a"}, {})
    assert TenantBook.from_document("garbage", parts) == TenantBook()


def test_the_book_forgets_released_holders_and_users_whose_parts_refilled() -> None:
    # Given a book naming holders o1 (released since) and o2, and users a (refilled by now) and b
    parts = user_windows((MINUTE,), 0.5)
    assert parts is not None
    book = TenantBook(
        {"o1": "a", "o2": "b"},
        {"a": WindowLevels((4.0,), NOW - 60, None), "b": WindowLevels((1.0,), NOW, None)},
    )
    # When o3 of user c takes a slot, and then c takes a call
    after = book.with_slot("o3", "c", {"o2": NOW + 5, "o3": NOW + TTL})
    after = after.with_levels("c", WindowLevels((4.0,), NOW, None), parts, NOW)
    # Then o1 and user a are gone, b and c are kept
    assert after.slot_users == {"o2": "b", "o3": "c"}
    assert set(after.levels) == {"b", "c"}


def test_the_user_of_a_limit_scope() -> None:
    assert user_of_scope("u1#c1") == "u1"
    assert user_of_scope(None) is None
    assert user_of_scope("no-separator") is None
