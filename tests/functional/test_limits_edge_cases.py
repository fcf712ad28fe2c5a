"""Edge cases where waiting on a provider's limits meets leases, deletes, pauses and probes."""

from __future__ import annotations

import json
from typing import Any

import responses

from chalicelib.domain.breaker import BreakerStatus
from chalicelib.domain.clock import FakeClock
from chalicelib.domain.model import ConnectionStatus, DatasetKey, Trigger, new_run_id
from chalicelib.domain.upstream import FetchRequest, ProviderTimeoutError
from chalicelib.providers import ProviderLimits, ProviderRegistry, registry_from_config
from chalicelib.providers.demo import DemoProvider
from chalicelib.store.items import STATE_SORT_KEY, DatasetItem, StateItem
from chalicelib.sync.jobs import Job
from chalicelib.usecases.connections import ConnectionChange
from local.counting_provider import CountingProvider

KEY = DatasetKey("u1", "c1", "recovery")
DATA = "/users/u1/connections/c1/data/recovery"
ACME = {
    "acme": {
        "type": "rest",
        "base_url": "https://api.example.test",
        "pagination": {"response_field": "next", "request_param": "cursor"},
        "limits": {"requests_per_second": 2, "burst": 2, "max_concurrent_syncs": 5},
        "data_types": {"recovery": {"path": "/recovery", "records_path": "items"}},
    }
}


def body(response: Any) -> Any:
    return json.loads(response.body)


def scheduled_job(harness: Any) -> Job:
    now = harness.clock.now()
    job = Job(KEY, new_run_id(now), Trigger.SCHEDULE, now)
    harness.container.store.claim_queue(KEY, "demo", job.run_id, now, cooldown_seconds=0, claim_ttl_seconds=2100)
    return job


def test_a_page_retried_for_minutes_never_outlives_its_lease(make_harness: Any) -> None:
    # Given a provider that never answers within the timeout, and a worker with a 285 s deadline
    provider = CountingProvider(DemoProvider())
    harness = make_harness(registry=ProviderRegistry({"demo": provider}))
    harness.put_connection()
    store = harness.container.store
    seen: list[tuple[float, float]] = []

    def hang(request: FetchRequest) -> None:
        state = store.get_state(KEY)
        assert state is not None
        seen.append((harness.clock.now(), state.lease_expires_at or 0))
        harness.clock.advance(request.timeout_seconds)
        raise ProviderTimeoutError("no answer")

    provider.before_fetch = hang
    job = scheduled_job(harness)
    # When the worker retries the page until it gives up
    harness.container.worker.handle(job.to_json(), harness.clock.now() + 285)
    # Then every attempt started under a lease that was still ours and still valid
    assert len(seen) == 4
    assert all(at < expires for at, expires in seen), seen


def test_a_worker_waiting_for_a_slot_keeps_its_lease(make_harness: Any) -> None:
    # Given a provider with one slot, held by another dataset's sync for a while
    clock = FakeClock()
    provider = CountingProvider(DemoProvider())
    registry = ProviderRegistry({"demo": provider}, {"demo": ProviderLimits(max_concurrent_syncs=1)})
    harness = make_harness(registry=registry, clock=clock)
    harness.put_connection()
    guard, store = harness.container.guard, harness.container.store
    guard.take_slot("demo", "other-sync", clock.now())
    job = scheduled_job(harness)
    # When the worker handles the job
    result = harness.container.worker.handle(job.to_json(), clock.now() + 285)
    # Then it waited at most the configured time, kept its lease meanwhile, and put the job back
    assert result == "deferred_provider_busy" and provider.calls == 0
    state = store.get_state(KEY)
    assert state is not None and state.lease_owner is None and state.queued_job_id == job.run_id


def test_a_delete_racing_a_sync_that_must_wait_leaves_nothing_behind(make_harness: Any) -> None:
    # Given a sync that stored page 1; then the connection is deleted and page 2 answers 429 Retry-After: 120
    holder: dict[str, Any] = {}

    def delete_before_page_two(request: FetchRequest) -> None:
        if request.page_token == "p2":
            holder["store"].delete_connection("u1", "c1")
            StateItem(KEY.dataset_id, STATE_SORT_KEY).delete()

    inner = registry_from_config(ACME).get("acme")
    harness = make_harness(registry=ProviderRegistry({"acme": CountingProvider(inner, delete_before_page_two)}, {}))
    holder["store"] = harness.container.store
    harness.put_connection(provider="acme", credentials={})
    with responses.RequestsMock() as api:
        api.get("https://api.example.test/recovery", json={"items": [{"id": "r1"}, {"id": "r2"}], "next": "p2"})
        api.get("https://api.example.test/recovery", status=429, headers={"Retry-After": "120"})
        # When a read runs that sync
        read = harness.read(DATA)
    # Then the read says the connection is gone and the page stored after the DELETE was purged
    assert read.status_code == 404, read.body
    assert list(DatasetItem.query(KEY.dataset_id)) == []


def test_a_429_on_the_last_attempt_still_silences_every_worker(make_harness: Any) -> None:
    # Given a provider that answers 429 four times, the last time with Retry-After: 600
    harness = make_harness(registry=registry_from_config(ACME))
    harness.put_connection(provider="acme", credentials={})
    harness.put_connection(connection_id="c2", provider="acme", credentials={})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        for wait in ("1", "1", "1", "600"):
            api.get("https://api.example.test/recovery", status=429, headers={"Retry-After": wait})
        api.get("https://api.example.test/recovery", json={"items": [{"id": 1}]})
        harness.read(DATA)
        calls = len(api.calls)
        # When another user's read comes a second later
        harness.clock.advance(1)
        other = harness.read("/users/u1/connections/c2/data/recovery")
        # Then it does not call the provider before the 600 s are over
        assert len(api.calls) == calls
    assert other.status_code == 202 and int(other.headers["Retry-After"]) >= 590


def test_a_sync_finishing_after_a_pause_is_not_scheduled_forever(make_harness: Any) -> None:
    # Given a user who pauses the connection while its scheduled sync is running
    provider = CountingProvider(DemoProvider("demo", {"policies": {"recovery": {"schedule_every_seconds": 3600}}}))
    harness = make_harness(registry=ProviderRegistry({"demo": provider}))
    harness.put_connection()
    paused: list[Any] = []

    def pause_once(request: FetchRequest) -> None:
        if not paused:
            paused.append(
                harness.container.connections.put(
                    "u1", "c1", ConnectionChange(provider="demo", status=ConnectionStatus.PAUSED)
                )
            )

    provider.before_fetch = pause_once
    harness.sync_everything_due()
    # When the schedule comes round again and again
    queued = []
    for _ in range(3):
        harness.clock.advance(3601)
        queued.append(harness.sync_everything_due()["queued"])
    # Then at most one job finds the paused connection (and takes it off the schedule), then none
    assert queued[0] <= 1 and queued[1:] == [0, 0]


def test_a_read_finding_every_slot_busy_answers_202_and_leaves_a_job(make_harness: Any) -> None:
    # Given a provider with one slot, held elsewhere
    registry = ProviderRegistry({"demo": DemoProvider()}, {"demo": ProviderLimits(max_concurrent_syncs=1)})
    harness = make_harness(registry=registry, provider_wait_max_seconds=1)
    harness.put_connection()
    harness.container.guard.take_slot("demo", "other-sync", harness.clock.now())
    # When a user reads a never-synced dataset
    read = harness.read(DATA)
    # Then the answer is "pending" (not an outage) and a background job will wait for a slot
    assert read.status_code == 202 and body(read)["status"] == "pending"
    assert "most syncs at once" in body(read)["metadata"]["warning"]
    assert [json.loads(b)["data_type"] for b in harness.queued_bodies()] == ["recovery"]


def test_a_probe_that_hands_off_frees_the_probe_for_the_next_caller(make_harness: Any) -> None:
    # Given an open breaker past its cool-off, and a provider slower than the read budget
    harness = make_harness()
    harness.put_connection(settings={"latency_seconds": 12})
    guard = harness.container.guard
    for _ in range(5):
        guard.record_failure("demo", "HTTP 503", harness.clock.now())
    harness.clock.advance(61)
    # When a read wins the probe but its budget runs out before the first page
    read = harness.read(DATA)
    assert read.status_code == 202
    # Then the breaker is half-open with no probe held, so the continuation job can probe at once
    breaker = guard.breaker("demo")
    assert breaker.status is BreakerStatus.HALF_OPEN and breaker.probe_owner is None
    harness.put_connection(settings={})
    assert harness.deliver(harness.queued_bodies()).payload == {"batchItemFailures": []}
    assert guard.breaker("demo").status is BreakerStatus.CLOSED


def test_a_state_item_from_before_the_schedule_index_joins_it_at_its_next_sync(harness: Any) -> None:
    # Given a dataset whose state item has no schedule shard (written by the previous version)
    harness.put_connection()
    StateItem(KEY.dataset_id, STATE_SORT_KEY).update(
        actions=[StateItem.schedule_shard.remove(), StateItem.next_sync_at.remove()]
    )
    # When it syncs once
    harness.read(DATA)
    # Then it is on the schedule again: due an hour later
    harness.clock.advance(3601)
    assert ("c1", "recovery") in [
        (json.loads(b)["connection_id"], json.loads(b)["data_type"])
        for b in (harness.tick(), harness.queued_bodies())[1]
    ]
