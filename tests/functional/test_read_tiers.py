"""Each read tier and its metadata, end to end through the HTTP API (moto-backed)."""

from __future__ import annotations

import json
from typing import Any

from tests.functional.conftest import Harness, counting_demo

DATA = "/users/u1/connections/c1/data/recovery"


def body(response: Any) -> dict[str, Any]:
    return json.loads(response.body)


def synced_harness(make_harness: Any, **settings: Any) -> tuple[Harness, Any]:
    registry, provider = counting_demo()
    harness = make_harness(registry=registry, **settings)
    assert harness.put_connection(settings={"records": 25, "page_size": 10}).status_code == 201
    first = harness.read(DATA)
    assert first.status_code == 200, first.body
    return harness, provider


def test_never_synced_read_waits_for_the_sync_and_reports_its_counts(make_harness: Any) -> None:
    # Given a new connection (25 records, 3 pages)
    registry, provider = counting_demo()
    harness = make_harness(registry=registry)
    harness.put_connection(settings={"records": 25, "page_size": 10})
    # When the dataset is read for the first time
    response = harness.read(DATA)
    # Then the read waited for the sync and answers from upstream
    payload = body(response)
    meta = payload["metadata"]
    assert response.status_code == 200
    assert payload["status"] == "success"
    assert meta["source"] == "upstream"
    assert meta["freshness"] == "never_synced"
    assert meta["cached"] is False
    assert meta["record_count"] == 25
    assert meta["staleness_seconds"] == 0
    assert meta["sync"]["inserted"] == 25
    assert meta["sync"]["pages"] == 3
    assert meta["message"].startswith("Synced just now: 25 new")
    assert provider.calls == 3
    assert len(payload["data"]) == 25
    assert {"id", "updated_at", "synced_at", "data"} <= set(payload["data"][0])


def test_fresh_read_is_served_from_cache_without_upstream_calls(make_harness: Any) -> None:
    # Given a dataset synced 2 minutes ago
    harness, provider = synced_harness(make_harness)
    calls = provider.calls
    harness.clock.advance(120)
    # When it is read
    response = harness.read(DATA)
    # Then the cache answers, with honest metadata, and nothing is queued
    meta = body(response)["metadata"]
    assert meta["source"] == "cache"
    assert meta["freshness"] == "fresh"
    assert meta["cached"] is True
    assert meta["background_sync"] is False
    assert meta["staleness_seconds"] == 120
    assert meta["cooldown_seconds"] == 300
    assert meta["max_staleness_seconds"] == 3600
    assert meta["last_synced_at"].endswith("Z")
    assert meta["message"] == "Using data from 2m ago"
    assert provider.calls == calls
    assert harness.queued_bodies() == []


def test_stale_read_answers_from_cache_and_queues_exactly_one_background_sync(make_harness: Any) -> None:
    # Given a dataset synced 10 minutes ago (past the 5 min cooldown, under the 1 h staleness)
    harness, provider = synced_harness(make_harness)
    calls = provider.calls
    harness.clock.advance(600)
    # When it is read three times
    responses = [harness.read(DATA) for _ in range(3)]
    # Then every read is instant from the cache and says it is updating
    for response in responses:
        meta = body(response)["metadata"]
        assert meta["source"] == "cache"
        assert meta["freshness"] == "stale"
        assert meta["background_sync"] is True
        assert meta["message"] == "Using data from 10m ago (updating in background)"
    # And only one job was queued, and nothing was fetched inline
    jobs = harness.queued_bodies()
    assert len(jobs) == 1
    assert json.loads(jobs[0])["trigger"] == "background"
    assert provider.calls == calls
    # When the worker runs the job
    result = harness.deliver(jobs)
    # Then it synced once (incrementally: one page since the last watermark) and the next read is fresh
    assert result.payload == {"batchItemFailures": []}
    assert provider.calls == calls + 1
    assert provider.requests[-1].since is not None
    after = body(harness.read(DATA))["metadata"]
    assert after["freshness"] == "fresh"
    assert after["staleness_seconds"] == 0


def test_redelivered_job_does_not_sync_twice(make_harness: Any) -> None:
    # Given a stale dataset with one queued background job
    harness, provider = synced_harness(make_harness)
    harness.clock.advance(600)
    harness.read(DATA)
    jobs = harness.queued_bodies()
    # When SQS delivers the same message twice (chalice's test events even share a messageId)
    harness.deliver(jobs)
    calls_after_first = provider.calls
    second = harness.deliver(jobs)
    # Then the second delivery is acknowledged without any upstream call
    assert second.payload == {"batchItemFailures": []}
    assert provider.calls == calls_after_first
    runs = body(harness.read("/users/u1/connections/c1/runs?data_type=recovery"))["runs"]
    assert [r["trigger"] for r in runs] == ["background", "read"]
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]


def test_expired_read_waits_for_a_new_sync(make_harness: Any) -> None:
    # Given a dataset synced 2 hours ago
    harness, provider = synced_harness(make_harness)
    calls = provider.calls
    harness.clock.advance(7200)
    # When it is read
    meta = body(harness.read(DATA))["metadata"]
    # Then the read waited for an incremental sync that picked up today's changed record
    assert meta["source"] == "upstream"
    assert meta["freshness"] == "expired"
    assert meta["sync"]["updated"] == 1
    assert meta["sync"]["pages"] == 1
    assert meta["staleness_seconds"] == 0
    assert meta["record_count"] == 25
    assert provider.calls == calls + 1


def test_force_refresh_syncs_even_when_fresh(make_harness: Any) -> None:
    harness, provider = synced_harness(make_harness)
    calls = provider.calls
    harness.clock.advance(10)
    meta = body(harness.read(DATA + "?force_refresh=true"))["metadata"]
    assert meta["freshness"] == "forced"
    assert meta["source"] == "upstream"
    assert provider.calls == calls + 1


def test_force_refresh_is_throttled_per_user(make_harness: Any) -> None:
    # Given a user allowed 2 forced refreshes a minute
    harness, _ = synced_harness(make_harness, force_refresh_limit=2, force_refresh_window_seconds=60)
    harness.clock.advance(60)  # the new connection took one refresh of the minute: a minute later it is back
    # When they force three times in the same minute
    statuses = [harness.read(DATA + "?force_refresh=true").status_code for _ in range(2)]
    third = harness.read(DATA + "?force_refresh=true")
    # Then the third gets 429 with Retry-After, and plain reads still work
    assert statuses == [200, 200]
    assert third.status_code == 429
    assert body(third)["error"]["code"] == "rate_limited"
    assert 1 <= int(third.headers["Retry-After"]) <= 60
    assert harness.read(DATA).status_code == 200
    # And a new window allows forcing again
    harness.clock.advance(60)
    assert harness.read(DATA + "?force_refresh=true").status_code == 200


def test_stale_if_error_answers_from_cache_with_a_warning(make_harness: Any) -> None:
    # Given a dataset synced 2 hours ago whose provider now fails every call
    harness, provider = synced_harness(make_harness)
    harness.put_connection(settings={"records": 25, "page_size": 10, "failure_rate": 1})
    harness.clock.advance(7200)
    # When it is read
    response = harness.read(DATA)
    # Then the stale cache answers with the error in the metadata
    payload = body(response)
    meta = payload["metadata"]
    assert response.status_code == 200
    assert payload["status"] == "success_with_warning"
    assert meta["source"] == "stale_cache"
    assert meta["warning"] == "Using stale cached data due to sync failure"
    assert "503" in meta["error"]
    assert len(payload["data"]) == 25
    # And an immediate second read backs off instead of calling the provider again
    calls = provider.calls
    again = harness.read(DATA)
    assert body(again)["metadata"]["source"] == "stale_cache"
    assert int(again.headers["Retry-After"]) > 0
    assert provider.calls == calls


def test_failure_with_nothing_cached_is_a_502(make_harness: Any) -> None:
    harness = make_harness()
    harness.put_connection(settings={"failure_rate": 1})
    response = harness.read(DATA)
    assert response.status_code == 502
    error = body(response)["error"]
    assert error["code"] == "upstream_error"
    assert "503" in error["message"]


def test_budget_exceeded_with_nothing_cached_answers_202_and_the_worker_finishes(make_harness: Any) -> None:
    # Given a slow provider: 3 pages of 4 s each against a 10 s read budget
    registry, provider = counting_demo()
    harness = make_harness(registry=registry)
    harness.put_connection(settings={"records": 30, "page_size": 10, "latency_seconds": 4})
    # When the never-synced dataset is read
    response = harness.read(DATA)
    # Then the read gives up waiting at the budget with 202 pending
    payload = body(response)
    assert response.status_code == 202
    assert payload["status"] == "pending"
    assert payload["data"] == []
    assert payload["metadata"]["sync_in_progress"] is True
    assert payload["metadata"]["sync"]["pages"] == 2
    # And the rest of the sync was handed to a queued job, which resumes at page 3
    jobs = harness.queued_bodies()
    assert len(jobs) == 1
    harness.deliver(jobs)
    assert provider.requests[-1].page_token == "20"
    # And afterwards all 30 records are cached exactly once
    final = body(harness.read(DATA + "?limit=100"))
    assert final["metadata"]["freshness"] == "fresh"
    assert final["metadata"]["record_count"] == 30
    assert len({r["id"] for r in final["data"]}) == 30


def test_budget_exceeded_with_a_cache_answers_from_it(make_harness: Any) -> None:
    # Given a cached dataset, now expired, whose provider became slow
    harness, _ = synced_harness(make_harness)
    harness.put_connection(settings={"records": 25, "page_size": 10, "latency_seconds": 11})
    harness.clock.advance(7200)
    # When it is read
    response = harness.read(DATA)
    # Then the stale cache answers and says a refresh is still running
    payload = body(response)
    assert response.status_code == 200
    assert payload["status"] == "success_with_warning"
    assert payload["metadata"]["source"] == "stale_cache"
    assert "still running" in payload["metadata"]["message"]
    assert len(payload["data"]) == 25


def test_pagination_with_limit_and_next_token(make_harness: Any) -> None:
    harness, _ = synced_harness(make_harness)
    seen: list[str] = []
    path = DATA + "?limit=10"
    while True:
        payload = body(harness.read(path))
        seen.extend(r["id"] for r in payload["data"])
        if not payload["next_token"]:
            break
        path = DATA + f"?limit=10&next_token={payload['next_token']}"
    assert len(seen) == 25
    assert len(set(seen)) == 25
