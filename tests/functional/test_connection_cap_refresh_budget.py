"""A PUT that starts a connection's data over (new, ``reset_data``, another provider) takes one of the user's
manual refreshes. Over the budget it is saved all the same; its first sync is due when the budget has room."""

from __future__ import annotations

import json
from typing import Any

from chalicelib.domain.model import DatasetKey
from tests.functional.conftest import Harness

# Two manual refreshes a minute: one refills every 30 s.
BUDGET = {"force_refresh_limit": 2, "force_refresh_window_seconds": 60}


def body(response: Any) -> Any:
    return json.loads(response.body)


def _next_sync_at(harness: Harness, connection_id: str, data_type: str = "recovery") -> float | None:
    state = harness.container.store.get_state(DatasetKey("u1", connection_id, data_type))
    assert state is not None
    return state.next_sync_at


def test_new_connections_over_the_budget_are_saved_and_synced_once_it_has_room(make_harness: Any) -> None:
    # Given a user allowed two manual refreshes a minute
    harness = make_harness(**BUDGET)
    now = harness.clock.now()
    # When the user creates three connections at once
    statuses = [harness.put_connection("u1", f"c{n}").status_code for n in range(3)]
    # Then all three are saved; the first two are due at once, the third when a refresh refills (30 s)
    assert statuses == [201, 201, 201]
    assert _next_sync_at(harness, "c0") == now and _next_sync_at(harness, "c1") == now
    assert _next_sync_at(harness, "c2") == now + 30
    # And the schedule syncs the first two now (3 scheduled data types each), the third only later
    assert harness.tick()["queued"] == 6
    harness.queued_bodies()
    harness.clock.advance(31)
    assert harness.tick()["queued"] == 3


def test_the_puts_spend_the_same_budget_forced_reads_answer_429_from(make_harness: Any) -> None:
    # Given a user who just created two connections (both refreshes of the minute spent)
    harness = make_harness(**BUDGET)
    harness.put_connection("u1", "c0")
    harness.put_connection("u1", "c1")
    # When the user forces a refresh
    forced = harness.read("/users/u1/connections/c0/data/recovery?force_refresh=true")
    # Then it is refused like any forced refresh over the budget
    assert forced.status_code == 429
    assert body(forced)["error"]["code"] == "rate_limited"


def test_reset_data_over_the_budget_still_resets_but_syncs_later(make_harness: Any) -> None:
    # Given a synced connection, and the user's refreshes spent
    harness = make_harness(**BUDGET)
    harness.put_connection("u1", "c1")
    assert harness.read("/users/u1/connections/c1/data/recovery").status_code == 200
    harness.clock.advance(1)
    harness.put_connection("u1", "c1", reset_data=True)  # the second refresh of the minute
    now = harness.clock.now()
    # When the user resets the data again at once
    again = harness.put_connection("u1", "c1", reset_data=True)
    # Then the PUT succeeds and the data is gone, but the next sync waits for the budget
    assert again.status_code == 200
    state = harness.container.store.get_state(DatasetKey("u1", "c1", "recovery"))
    assert state is not None and state.last_successful_at is None and state.record_count == 0
    next_sync_at = _next_sync_at(harness, "c1")
    assert next_sync_at is not None and next_sync_at > now


def test_a_put_that_keeps_the_data_takes_nothing_from_the_budget(make_harness: Any) -> None:
    # Given a user with one refresh left this minute
    harness = make_harness(**BUDGET)
    harness.put_connection("u1", "c1")
    # When the user changes the connection's settings twice (no reset)
    for records in (3, 4):
        assert harness.put_connection("u1", "c1", settings={"records": records}).status_code == 200
    # Then the last refresh is still there for a forced read
    assert harness.read("/users/u1/connections/c1/data/recovery?force_refresh=true").status_code == 200
