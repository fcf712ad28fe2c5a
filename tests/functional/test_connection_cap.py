"""A user's connections are capped: one more is a 409 ``connection_limit_reached``; other users are unaffected."""

from __future__ import annotations

import json
from typing import Any


def body(response: Any) -> Any:
    return json.loads(response.body)


def test_a_connection_beyond_the_users_cap_is_refused_with_a_409(make_harness: Any) -> None:
    # Given a cap of two connections per user, and user u1 with two
    harness = make_harness(max_connections_per_user=2)
    assert harness.put_connection("u1", "c1").status_code == 201
    assert harness.put_connection("u1", "c2").status_code == 201
    # When u1 creates a third
    third = harness.put_connection("u1", "c3")
    # Then it is refused, saying why, and nothing was created
    assert third.status_code == 409
    assert body(third)["error"]["code"] == "connection_limit_reached"
    assert "2 connections" in body(third)["error"]["message"]
    assert harness.container.store.get_connection("u1", "c3") is None


def test_at_the_cap_existing_connections_still_update_and_other_users_still_connect(make_harness: Any) -> None:
    # Given u1 at its cap of one connection
    harness = make_harness(max_connections_per_user=1)
    assert harness.put_connection("u1", "c1").status_code == 201
    # When u1 updates that connection, and u2 creates its first
    updated = harness.put_connection("u1", "c1", settings={"records": 3})
    other = harness.put_connection("u2", "c1")
    # Then both are accepted
    assert updated.status_code == 200
    assert other.status_code == 201


def test_deleting_a_connection_makes_room_again(make_harness: Any) -> None:
    # Given u1 at its cap of one connection
    harness = make_harness(max_connections_per_user=1)
    harness.put_connection("u1", "c1")
    assert harness.put_connection("u1", "c2").status_code == 409
    # When u1 deletes it
    deleted = harness.client.http.delete("/users/u1/connections/c1", headers=harness.headers("u1"))
    assert deleted.status_code == 204
    # Then a new connection fits again
    assert harness.put_connection("u1", "c2").status_code == 201
