"""One user cannot starve others: a bounded share of a provider's slots and of its shared rate windows."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.domain.limits import RateWindow
from chalicelib.providers import ProviderLimits, ProviderRegistry
from chalicelib.providers.demo import DemoProvider
from chalicelib.sync.limits_view import gate_document
from chalicelib.sync.pacing import gate_key
from tests.functional.conftest import Harness


def body(response: Any) -> Any:
    return json.loads(response.body)


def _two_slot_demo(make_harness: Any, **settings: Any) -> Harness:
    registry = ProviderRegistry({"demo": DemoProvider()}, {"demo": ProviderLimits(max_concurrent_syncs=2)})
    harness: Harness = make_harness(registry=registry, provider_wait_max_seconds=1, **settings)
    harness.put_connection("a", "c1")
    harness.put_connection("b", "c1")
    return harness


def test_a_user_holding_its_share_of_slots_waits_while_another_users_read_syncs_at_once(make_harness: Any) -> None:
    # Given two slots, a share of half (one slot per user), and user a's one slot held by a running sync
    harness = _two_slot_demo(make_harness)
    guard = harness.container.guard
    assert guard.take_slot("demo", "a-running", harness.clock.now(), user="a") is None
    # When user a reads a never-synced dataset, and then user b does
    a_read = harness.read("/users/a/connections/c1/data/recovery", user_id="a")
    b_read = harness.read("/users/b/connections/c1/data/recovery", user_id="b")
    # Then a's read is pending (its sync waits for a's own slot, as a background job), b's syncs at once
    assert a_read.status_code == 202 and body(a_read)["status"] == "pending"
    assert b_read.status_code == 200 and body(b_read)["metadata"]["source"] == "upstream"
    assert [json.loads(b)["user_id"] for b in harness.queued_bodies()] == ["a"]


def test_the_gate_books_each_holders_user_in_its_own_write(make_harness: Any) -> None:
    # Given two slots with a share of one each
    harness = _two_slot_demo(make_harness)
    guard = harness.container.guard
    # When a sync of user a takes a slot, and a second one of a asks
    assert guard.take_slot("demo", "a-first", harness.clock.now(), user="a") is None
    second = guard.take_slot("demo", "a-second", harness.clock.now(), user="a")
    # Then the second waits (for the first's expiry at the latest), and the gate names the holder's user
    assert second is not None and second > 0
    gate = harness.container.store.shared.get(gate_key("demo"))
    assert gate_document(gate)["tenants"]["slots"] == {"a-first": "a"}
    # And the provider still has room for another user
    assert guard.take_slot("demo", "b-first", harness.clock.now(), user="b") is None


def test_a_count_share_gives_each_user_that_many_slots(make_harness: Any) -> None:
    # Given a share given as a count (2) of a provider's 2 slots
    harness = _two_slot_demo(make_harness, user_max_slot_share=2)
    guard = harness.container.guard
    # When user a's syncs ask for both slots, then a third
    taken = [guard.take_slot("demo", f"a{n}", harness.clock.now(), user="a") for n in range(3)]
    # Then both slots are a's, and the third waits
    assert taken[:2] == [None, None] and taken[2] is not None


MINUTE = RateWindow(requests=20, per_seconds=60.0, burst=4.0)


def test_a_user_takes_at_most_its_share_of_a_shared_window_and_others_still_call(make_harness: Any) -> None:
    # Given a provider-wide window of 20 calls a minute (burst 4) and a rate share of half (burst 2 per user)
    registry = ProviderRegistry({"demo": DemoProvider()}, {"demo": ProviderLimits(windows=(MINUTE,))})
    harness = make_harness(registry=registry)
    guard = harness.container.guard
    now = harness.clock.now()
    # When user a calls three times at once, and then user b calls
    a_calls = [guard.take_token("demo", now, connection_scope="a#c1") for _ in range(3)]
    b_call = guard.take_token("demo", now, connection_scope="b#c1")
    # Then a's third call waits for a's part to refill (one call per 60 / 8 s), and b's goes at once
    assert a_calls[:2] == [None, None]
    assert a_calls[2] is not None and abs(a_calls[2] - 60 / 8) < 0.01
    assert b_call is None


def test_a_user_share_of_one_leaves_the_windows_whole(make_harness: Any) -> None:
    # Given the same window with no per-user part (share 1)
    registry = ProviderRegistry({"demo": DemoProvider()}, {"demo": ProviderLimits(windows=(MINUTE,))})
    harness = make_harness(registry=registry, user_max_rate_share=1.0)
    guard = harness.container.guard
    now = harness.clock.now()
    # When user a calls five times at once
    calls = [guard.take_token("demo", now, connection_scope="a#c1") for _ in range(5)]
    # Then a takes the whole burst (4) and only the fifth waits
    assert calls[:4] == [None] * 4 and calls[4] is not None
