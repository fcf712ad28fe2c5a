from __future__ import annotations

import json

from tests.functional.conftest import Harness


def test_first_read_syncs_then_serves_from_cache(harness: Harness) -> None:
    # Given a demo connection that was never synced
    assert harness.put_connection().status_code == 201
    # When the user reads a dataset twice
    first = harness.read("/users/u1/connections/c1/data/recovery")
    second = harness.read("/users/u1/connections/c1/data/recovery")
    # Then the first waits for a sync and the second is answered from the cache
    body1 = json.loads(first.body)
    body2 = json.loads(second.body)
    assert first.status_code == 200, body1
    assert body1["metadata"]["source"] == "upstream"
    assert body1["metadata"]["freshness"] == "never_synced"
    assert body1["metadata"]["record_count"] == 30
    assert body2["metadata"]["source"] == "cache"
    assert body2["metadata"]["freshness"] == "fresh"
