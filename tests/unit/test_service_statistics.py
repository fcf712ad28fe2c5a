"""The whole service's sync statistics (``service_statistics``), summed over the providers' gate items."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.domain.clock import FakeClock
from chalicelib.store.items import LimitItem
from chalicelib.sync.limits_view import service_statistics


def _gate(provider: str, **stats: Any) -> LimitItem:
    return LimitItem(f"gate#{provider}", **stats)


def test_totals_are_summed_over_every_gate() -> None:
    # Given two providers' statistics
    whoop = _gate("whoop", total_syncs=5, succeeded_syncs=4, failed_syncs=1, duration_sum=12.5)
    binance = _gate("binance", total_syncs=3, succeeded_syncs=1, failed_syncs=2, duration_sum=2.25)
    # When the service's statistics are computed
    total = service_statistics([whoop, binance])
    # Then every counter is the sum
    assert (total.total_syncs, total.succeeded_syncs, total.failed_syncs) == (8, 5, 3)
    assert total.duration_sum == pytest.approx(14.75)


def test_a_gate_never_counted_adds_nothing() -> None:
    # Given one gate with statistics and one with none (only a breaker was ever written)
    counted = _gate("whoop", total_syncs=2, succeeded_syncs=2, duration_sum=1.0)
    bare = _gate("binance")
    # When the service's statistics are computed
    total = service_statistics([bare, counted])
    # Then the bare gate changes nothing, and counters nobody wrote stay unset
    assert (total.total_syncs, total.succeeded_syncs, total.duration_sum) == (2, 2, 1.0)
    assert total.failed_syncs is None


def test_no_gates_give_empty_statistics() -> None:
    # Given no provider was ever used
    # When the service's statistics are computed
    total = service_statistics([])
    # Then nothing is counted
    assert total.total_syncs is None
    assert not total.consecutive_failures  # None or 0: the status page reads either as 0
    assert (total.last_finished_at, total.last_error_at) == (None, None)


def test_consecutive_failures_are_the_longest_current_streak() -> None:
    # Given three providers failing 2, 7 and 0 times in a row
    gates = [_gate("a", consecutive_failures=2), _gate("b", consecutive_failures=7), _gate("c")]
    # When the service's statistics are computed
    total = service_statistics(gates)
    # Then the streak is the longest one, not their sum
    assert total.consecutive_failures == 7


def test_the_last_sync_is_the_latest_with_its_own_duration() -> None:
    # Given provider "late" finished 10 s after provider "early", listed after and before it
    clock = FakeClock()
    early = _gate("early", last_finished_at=clock.now(), last_duration=9.0)
    clock.advance(10)
    late = _gate("late", last_finished_at=clock.now(), last_duration=1.5)
    # When the service's statistics are computed in either order
    for gates in ([early, late], [late, early]):
        total = service_statistics(gates)
        # Then the last sync is the latest one, and the duration is that sync's
        assert (total.last_finished_at, total.last_duration) == (clock.now(), 1.5)


def test_the_last_error_is_the_latest_with_its_own_message() -> None:
    # Given "old" failed 60 s before "new"; a third provider never failed
    clock = FakeClock()
    old = _gate("old", last_error="HTTP 503", last_error_at=clock.now())
    clock.advance(60)
    new = _gate("new", last_error="HTTP 429", last_error_at=clock.now())
    clean = _gate("clean", total_syncs=1)
    # When the service's statistics are computed in either order
    for gates in ([old, new, clean], [clean, new, old]):
        total = service_statistics(gates)
        # Then the last error is the latest one, with its own message
        assert (total.last_error_at, total.last_error) == (clock.now(), "HTTP 429")
