"""Provider limits shared by every worker: token bucket, Retry-After, breaker, concurrency, NEEDS_REVIEW."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any

import pytest
import responses

from chalicelib.domain.clock import FakeClock
from chalicelib.domain.model import ConnectionStatus, DatasetKey
from chalicelib.providers import registry_from_config
from tests.functional.conftest import Harness

KEY = DatasetKey("u1", "c1", "recovery")
DATA = "/users/u1/connections/c1/data/recovery"


def body(response: Any) -> Any:
    return json.loads(response.body)


class RecordingClock(FakeClock):
    """A fake clock that remembers every sleep (the injected sleeper the engine and providers use)."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        super().sleep(seconds)


# --- NEEDS_REVIEW ----------------------------------------------------------------------------------------


def test_repeated_401s_mark_the_connection_needs_review_and_new_credentials_revive_it(harness: Harness) -> None:
    # Given a connection whose provider rejects its credentials, with data cached from before
    harness.put_connection()
    harness.read(DATA)
    harness.put_connection(settings={"invalid_credentials": True})
    # When three syncs in a row are refused (one per scheduled data type, run by the schedule)
    harness.clock.advance(7200)
    harness.sync_everything_due()
    # Then the connection needs review, and says why
    connection = harness.container.store.get_connection("u1", "c1")
    assert connection is not None and connection.status is ConnectionStatus.NEEDS_REVIEW
    assert "rejected the credentials 3 times in a row" in (connection.status_reason or "")
    # And the schedule skips it, while a read answers from the cache and says why it is not refreshed
    harness.clock.advance(7200)
    assert harness.tick()["queued"] == 0
    read = body(harness.read(DATA))
    assert read["metadata"]["source"] == "stale_cache"
    assert "needs review" in read["metadata"]["warning"] and "rejected the credentials" in read["metadata"]["warning"]
    # When the user updates the credentials
    updated = harness.put_connection(credentials={"token": "a-new-token"}, settings={})
    # Then the connection is ACTIVE again, its counter is reset and its datasets are due at once
    assert updated.status_code == 200 and body(updated)["status"] == "ACTIVE"
    revived = harness.container.store.get_connection("u1", "c1")
    assert revived is not None and revived.auth_failures == 0
    assert harness.tick()["queued"] == 3


def test_fewer_401s_than_the_threshold_do_not_need_review_and_a_success_resets_the_count(harness: Harness) -> None:
    # Given a connection refused twice (threshold 3)
    harness.put_connection(settings={"invalid_credentials": True})
    for data_type in ("recovery", "sleep"):
        harness.read(f"/users/u1/connections/c1/data/{data_type}")
    connection = harness.container.store.get_connection("u1", "c1")
    assert connection is not None and connection.auth_failures == 2 and connection.status is ConnectionStatus.ACTIVE
    # When the provider accepts the (same) credentials again and a sync succeeds
    harness.container.store.put_connection(
        connection.__class__(**{**connection.__dict__, "settings": {}})  # the provider's problem went away
    )
    assert harness.read("/users/u1/connections/c1/data/cycle").status_code == 200
    # Then the count starts again from zero
    after = harness.container.store.get_connection("u1", "c1")
    assert after is not None and after.auth_failures == 0 and after.status is ConnectionStatus.ACTIVE


# --- circuit breaker ---------------------------------------------------------------------------------------


def test_the_breaker_opens_after_five_failed_syncs_defers_the_schedule_and_probes_after_cool_off(
    harness: Harness,
) -> None:
    # Given cached data, then a provider that answers 503 to everything
    harness.put_connection(connection_id="c1")
    harness.put_connection(connection_id="c2")
    harness.sync_everything_due()
    harness.put_connection(connection_id="c1", settings={"failure_rate": 1})
    harness.put_connection(connection_id="c2", settings={"failure_rate": 1})
    # When five syncs fail in a row (each after its retries)
    harness.clock.advance(7200)
    summary = harness.sync_everything_due()
    assert summary["queued"] == 6
    # Then the breaker is open (5 failures opened it; the 6th job was deferred, not run)
    status = body(harness.operator("GET", "/sync/status"))
    assert status["providers"]["demo"]["breaker"]["state"] == "open"
    assert status["statistics"]["health_status"] == "degraded"
    runs = (
        body(harness.read("/users/u1/connections/c1/runs"))["runs"]
        + body(harness.read("/users/u1/connections/c2/runs"))["runs"]
    )
    assert sum(1 for r in runs if r["status"] == "failed") == 5
    # And a read answers from the cache with a warning naming the outage, without calling the provider
    harness.clock.advance(10)
    read = harness.read(DATA)
    assert read.status_code == 200 and int(read.headers["Retry-After"]) > 0
    assert "Provider 'demo' is having an outage" in body(read)["metadata"]["warning"]
    # And the schedule defers the provider's due datasets: none queued, none failed
    tick = harness.tick()
    assert tick["queued"] == 0 and tick["skipped"]["provider_circuit_open"] >= 1
    # When the cool-off has passed and the provider works again
    harness.put_connection(connection_id="c1", settings={})
    harness.put_connection(connection_id="c2", settings={})
    harness.clock.advance(61)
    probe = harness.tick()
    # Then exactly one probe job goes out; its success closes the breaker and the next tick sends the rest
    assert probe["queued"] == 1
    assert harness.deliver(harness.queued_bodies()).payload == {"batchItemFailures": []}
    status = body(harness.operator("GET", "/sync/status"))
    assert status["providers"]["demo"]["breaker"]["state"] == "closed"
    assert harness.tick()["queued"] >= 4


def test_a_never_synced_dataset_answers_503_with_retry_after_while_the_provider_is_down(harness: Harness) -> None:
    # Given an open breaker for the provider
    for _ in range(5):
        harness.container.guard.record_failure("demo", "HTTP 503", harness.clock.now())
    harness.put_connection()
    # When a user reads a dataset that was never synced
    read = harness.read(DATA)
    # Then the answer is a clear 503, not a sync attempt
    assert read.status_code == 503 and body(read)["error"]["code"] == "provider_unavailable"
    assert 0 < int(read.headers["Retry-After"]) <= 60


# --- Retry-After and the shared bucket -----------------------------------------------------------------------

ACME = {
    "acme": {
        "type": "rest",
        "base_url": "https://api.example.test",
        "rate_limit_reset_header": "X-RateLimit-Reset",
        "limits": {"requests_per_second": 2, "burst": 2, "max_concurrent_syncs": 2},
        "data_types": {"recovery": {"path": "/recovery", "records_path": "items"}},
    }
}


@pytest.mark.parametrize(
    ("headers", "expected_wait"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"Retry-After": "HTTP-DATE+12"}, 12.0),
        ({"X-RateLimit-Reset": "EPOCH+9"}, 9.0),
        ({"X-RateLimit-Reset": "4"}, 4.0),
    ],
)
def test_a_429_is_retried_after_the_wait_the_provider_asked_for(
    make_harness: Any, headers: dict[str, str], expected_wait: float
) -> None:
    # Given a provider that answers 429 once, telling us how long to wait, then 200
    clock = RecordingClock()
    harness = make_harness(registry=registry_from_config(ACME), clock=clock)
    harness.put_connection(provider="acme", credentials={})
    now = clock.now()
    resolved = {
        name: (
            format_datetime(datetime.fromtimestamp(now + 12, tz=UTC), usegmt=True)
            if value == "HTTP-DATE+12"
            else str(int(now + 9))
            if value == "EPOCH+9"
            else value
        )
        for name, value in headers.items()
    }
    with responses.RequestsMock() as api:
        api.get("https://api.example.test/recovery", status=429, headers=resolved)
        api.get("https://api.example.test/recovery", json={"items": [{"id": 1}]})
        # When the worker syncs it (a worker may wait up to 20 s in place)
        queued = harness.client.http.post(DATA.replace("/data/recovery", "/sync"), headers=harness.headers())
        assert queued.status_code == 202, queued.body
        assert harness.deliver(harness.queued_bodies()).payload == {"batchItemFailures": []}
        # Then the retry waited what the provider asked (through the injected sleeper), and succeeded
        assert len(api.calls) == 2
    runs = body(harness.read("/users/u1/connections/c1/runs"))["runs"]
    assert [(r["status"], r["upstream_calls"]) for r in runs] == [("succeeded", 2)]
    waited = sum(clock.sleeps)
    assert waited == pytest.approx(expected_wait, abs=1.0)
    assert max(clock.sleeps) >= expected_wait - 1.0


def test_a_429_holds_the_shared_bucket_so_no_other_worker_calls_before_retry_after(make_harness: Any) -> None:
    # Given a provider that said "Retry-After: 30" to one worker
    clock = RecordingClock()
    harness = make_harness(registry=registry_from_config(ACME), clock=clock)
    harness.container.guard.hold("acme", clock.now() + 30)
    # When any other worker asks for a token before then
    wait = harness.container.guard.take_token("acme", clock.now() + 10)
    # Then it is told to wait out the rest of it
    assert wait == pytest.approx(20 + 0.5, abs=0.01)  # the hold, then one token at 2/s
    assert harness.container.guard.take_token("acme", clock.now() + 30.5) is None


def test_other_4xx_answers_are_not_retried(make_harness: Any) -> None:
    clock = RecordingClock()
    harness = make_harness(registry=registry_from_config(ACME), clock=clock)
    harness.put_connection(provider="acme", credentials={})
    with responses.RequestsMock() as api:
        api.get("https://api.example.test/recovery", status=404)
        read = harness.read(DATA)
        # Then one call, no sleep, and a clear upstream error
        assert len(api.calls) == 1
    assert read.status_code == 502 and "HTTP 404" in body(read)["error"]["message"]
    assert clock.sleeps == []


def test_5xx_is_retried_with_capped_exponential_backoff_then_fails(make_harness: Any) -> None:
    clock = RecordingClock()
    harness = make_harness(registry=registry_from_config(ACME), clock=clock, retry_max_delay_seconds=1.0)
    harness.put_connection(provider="acme", credentials={})
    with responses.RequestsMock() as api:
        api.get("https://api.example.test/recovery", status=503)
        read = harness.read(DATA)
        # Then the first call and three retries, each wait at most the cap
        assert len(api.calls) == 4
    assert read.status_code == 502
    # (the other sleeps are waits for the provider's tokens: 2 per second)
    assert clock.sleeps and all(s <= 1.0 for s in clock.sleeps)


def test_the_provider_bucket_under_8_threads_never_grants_more_than_its_rate(make_harness: Any) -> None:
    # Given a provider limited to 2 calls per second with a burst of 2, and a clock that stands still
    clock = FakeClock()
    harness = make_harness(registry=registry_from_config(ACME), clock=clock)
    guard = harness.container.guard
    granted: list[float] = []
    lock = threading.Lock()

    def hammer(now: float) -> None:
        for _ in range(10):
            if guard.take_token("acme", now) is None:
                with lock:
                    granted.append(now)

    def round_at(now: float) -> int:
        before = len(granted)
        threads = [threading.Thread(target=hammer, args=(now,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return len(granted) - before

    start = clock.now()
    # When 8 threads take 80 times at one instant, then again 1 s and 2.5 s later
    # Then only the burst, then exactly what the rate refilled, was granted
    assert round_at(start) == 2
    assert round_at(start + 1.0) == 2
    assert round_at(start + 2.5) == 2  # 3 refilled, capped at the burst of 2
    assert round_at(start + 2.5) == 0


# --- concurrency cap -----------------------------------------------------------------------------------------


def test_a_job_finding_every_slot_busy_is_put_back_with_a_delay_not_failed(make_harness: Any) -> None:
    # Given a provider allowed one sync at a time, and one running elsewhere
    policies = {"recovery": {"schedule_every_seconds": 3600}}
    config = {"demo": {"type": "demo", "policies": policies, "limits": {"max_concurrent_syncs": 1}}}
    harness = make_harness(registry=registry_from_config(config), provider_wait_max_seconds=0)
    harness.put_connection()
    harness.container.guard.take_slot("demo", "someone-else", harness.clock.now())
    harness.tick()
    queued = harness.queued_bodies()
    assert len(queued) == 1
    # When the worker gets the jobs
    result = harness.deliver(queued[:1]).payload
    # Then the job is acknowledged and sent again with a delay; nothing failed, nothing synced
    assert result == {"batchItemFailures": []}
    attributes = harness.sqs.get_queue_attributes(
        QueueUrl=harness.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    state = harness.container.store.get_state(DatasetKey("u1", "c1", json.loads(queued[0])["data_type"]))
    assert state is not None and state.last_successful_at is None and state.queued_job_id is not None


def test_a_read_told_to_wait_longer_than_its_budget_hands_the_sync_to_a_delayed_job(make_harness: Any) -> None:
    # Given a provider that answers the first call with 429 and Retry-After: 30 (more than the 10 s read budget)
    clock = RecordingClock()
    harness = make_harness(registry=registry_from_config(ACME), clock=clock)
    harness.put_connection(provider="acme", credentials={})
    with responses.RequestsMock() as api:
        api.get("https://api.example.test/recovery", status=429, headers={"Retry-After": "30"})
        # When a user reads the never-synced dataset
        read = harness.read(DATA)
        # Then the read does not wait or retry: 202 pending, and the sync continues as a job delayed by 30 s
        assert len(api.calls) == 1
    assert read.status_code == 202 and body(read)["status"] == "pending"
    assert "asked to wait 30s" in body(read)["metadata"]["warning"]
    assert max(clock.sleeps, default=0) < 1
    attributes = harness.sqs.get_queue_attributes(
        QueueUrl=harness.queue_url, AttributeNames=["ApproximateNumberOfMessagesDelayed"]
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "1"
    runs = body(harness.read("/users/u1/connections/c1/runs"))["runs"]
    assert sorted(r["status"] for r in runs) == ["deferred", "queued"]


# --- rate windows: several per provider, feedback, per-connection scope ------------------------------------


TWO_WINDOWS = {
    "acme": {
        "type": "rest",
        "base_url": "https://api.example.test",
        "limits": {
            "windows": [
                {"requests": 6, "per_seconds": 2, "burst": 3},
                {"requests": 20, "per_seconds": 20, "burst": 5},
            ]
        },
        "data_types": {"recovery": {"path": "/recovery", "records_path": "items"}},
    }
}


def _most_in_any_interval(grants: list[float], per_seconds: float) -> int:
    """The most grants in any half-open interval (t - per_seconds, t]."""
    ordered = sorted(grants)
    return max((sum(1 for at in ordered if end - per_seconds < at <= end) for end in ordered), default=0)


def test_8_threads_never_exceed_either_of_two_windows(make_harness: Any) -> None:
    # Given a provider allowing 6 calls per 2 s and 20 per 20 s, and 8 workers sharing it in DynamoDB
    clock = FakeClock()
    harness = make_harness(registry=registry_from_config(TWO_WINDOWS), clock=clock)
    guard = harness.container.guard
    granted: list[float] = []
    lock = threading.Lock()

    def hammer(now: float) -> None:
        for _ in range(2):
            if guard.take_token("acme", now) is None:
                with lock:
                    granted.append(now)

    # When they ask as often as they can, every half second for three lengths of the longest window
    start = clock.now()
    for step in range(120):
        threads = [threading.Thread(target=hammer, args=(start + step * 0.5,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    # Then no 2 s ever saw more than 6 calls and no 20 s more than 20, yet calls went through all along
    assert _most_in_any_interval(granted, 2) <= 6
    assert _most_in_any_interval(granted, 20) <= 20
    assert max(granted) >= start + 50
    # And both windows live in one item
    item = _gate_windows(harness, "acme")
    assert item is not None and item["windows"] == ["6/2", "20/20"] and len(item["levels"]) == 2


def test_a_heavy_call_takes_its_weight_from_every_window(make_harness: Any) -> None:
    harness = make_harness(registry=registry_from_config(TWO_WINDOWS))
    guard, now = harness.container.guard, harness.clock.now()
    # Given 3 of the short window's burst, a call of weight 3 goes and a second one must wait
    assert guard.take_token("acme", now, weight=3) is None
    wait = guard.take_token("acme", now, weight=3)
    assert wait == pytest.approx(3 / 1.5)  # the short window refills 1.5 per second
    # And the long window was charged too: 5 - 3 left
    item = _gate_windows(harness, "acme")
    assert item is not None and item["levels"] == [0.0, 2.0]


PER_KEY = {
    "exchange": {
        "type": "rest",
        "base_url": "https://api.example.test",
        "limits": {"windows": [{"requests": 3, "per_seconds": 60, "burst": 2}], "scope": "connection"},
        "data_types": {"balances": {"path": "/balances", "records_path": "items"}},
    }
}


def test_a_connection_scope_gives_each_connection_its_own_limit(make_harness: Any) -> None:
    # Given a provider whose limit belongs to each user's own API key
    harness = make_harness(registry=registry_from_config(PER_KEY))
    guard, now = harness.container.guard, harness.clock.now()
    # When one connection spends its burst and is told to back off by the provider
    assert guard.take_token("exchange", now, connection_scope="u1#k1") is None
    assert guard.take_token("exchange", now, connection_scope="u1#k1") is None
    assert guard.take_token("exchange", now, connection_scope="u1#k1") is not None
    guard.hold("exchange", now + 300, connection_scope="u1#k1")
    # Then another user's connection still has its whole limit
    assert guard.take_token("exchange", now, connection_scope="u2#k2") is None
    assert guard.take_token("exchange", now, connection_scope="u2#k2") is None
    # And each has its own item; there is no provider-wide one
    items = harness.container.store.shared.get_many(
        ["bucket#exchange", "bucket#exchange#u1#k1", "bucket#exchange#u2#k2"]
    )
    assert sorted(items) == ["bucket#exchange#u1#k1", "bucket#exchange#u2#k2"]
    # (the hold, then one token at (3 - 2) / 60 per second)
    assert guard.take_token("exchange", now + 100, connection_scope="u1#k1") == pytest.approx(200 + 60)


def test_a_provider_scope_ignores_the_connection_scope(make_harness: Any) -> None:
    harness = make_harness(registry=registry_from_config(TWO_WINDOWS))
    guard, now = harness.container.guard, harness.clock.now()
    for user in ("u1", "u2", "u3"):
        assert guard.take_token("acme", now, connection_scope=f"{user}#c1") is None
    assert guard.take_token("acme", now, connection_scope="u4#c1") is not None  # the shared burst of 3 is gone


WHOOPISH = {
    "acme": {
        "type": "rest",
        "base_url": "https://api.example.test",
        "limits": {
            "windows": [
                {
                    "requests": 100,
                    "per_seconds": 60,
                    "remaining_header": "X-RateLimit-Remaining",
                    "reset_header": "X-RateLimit-Reset",
                    "limit_header": "X-RateLimit-Limit",
                },
                {
                    "requests": 10_000,
                    "per_seconds": 86_400,
                    "remaining_header": "X-RateLimit-Remaining",
                    "reset_header": "X-RateLimit-Reset",
                    "limit_header": "X-RateLimit-Limit",
                },
            ]
        },
        "data_types": {"recovery": {"path": "/recovery", "records_path": "items"}},
    }
}
SPENT = {"x-ratelimit-limit": "100, 100;window=60, 10000;window=86400", "x-ratelimit-remaining": "0"}


class _Calls:
    """Counts the reads and writes of shared-limit items."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from chalicelib.store.shared import SharedStore

        self.reads = self.writes = 0
        real_read, real_write = SharedStore._read, SharedStore._write_if

        def read(store: Any, *args: Any, **kwargs: Any) -> Any:
            self.reads += 1
            return real_read(store, *args, **kwargs)

        def write(store: Any, *args: Any, **kwargs: Any) -> Any:
            self.writes += 1
            return real_write(store, *args, **kwargs)

        monkeypatch.setattr(SharedStore, "_read", read)
        monkeypatch.setattr(SharedStore, "_write_if", write)


def test_the_providers_count_rides_on_the_next_take_and_slows_every_worker(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given WHOOP's two windows, and a worker whose last answer said the minute is spent, resetting in 30 s
    harness = make_harness(registry=registry_from_config(WHOOPISH))
    guard, now = harness.container.guard, harness.clock.now()
    calls = _Calls(monkeypatch)
    # When it asks for its next call with that feedback
    wait = guard.take_token("acme", now, feedback={**SPENT, "x-ratelimit-reset": "30"})
    # Then it is refused until the reset, at the cost of one read and one write
    assert wait == pytest.approx(30 + 1 / 1.5)
    assert (calls.reads, calls.writes) == (1, 1)
    # And another worker, which saw no such answer, waits just as long
    assert guard.take_token("acme", now + 1) == pytest.approx(29 + 1 / 1.5)


def test_feedback_at_the_end_of_a_sync_is_written_only_when_it_is_tighter(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = make_harness(registry=registry_from_config(WHOOPISH))
    guard, now = harness.container.guard, harness.clock.now()
    calls = _Calls(monkeypatch)
    # Given a provider that still has plenty left: no call at all
    guard.observe("acme", {**SPENT, "x-ratelimit-remaining": "97"}, now)
    assert (calls.reads, calls.writes) == (0, 0)
    # Given a provider that says the minute is spent: one read, one write, and every worker waits
    guard.observe("acme", {**SPENT, "x-ratelimit-reset": "12"}, now)
    assert (calls.reads, calls.writes) == (1, 1)
    assert guard.take_token("acme", now) == pytest.approx(12 + 1 / 1.5)


def test_a_sync_reads_the_rate_headers_of_the_provider_and_the_next_worker_waits(make_harness: Any) -> None:
    # Given a provider that answers with data and "0 left this minute, resetting in 30 s"
    clock = RecordingClock()
    harness = make_harness(registry=registry_from_config(WHOOPISH), clock=clock)
    harness.put_connection(provider="acme", credentials={})
    with responses.RequestsMock() as api:
        api.get(
            "https://api.example.test/recovery",
            json={"items": [{"id": 1}]},
            headers={
                "X-RateLimit-Limit": "100, 100;window=60, 10000;window=86400",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": "30",
            },
        )
        # When a read syncs it
        assert harness.read(DATA).status_code == 200
    # Then the next worker is told to wait for the provider's reset, before any 429
    wait = harness.container.guard.take_token("acme", clock.now())
    assert wait is not None and 29 <= wait <= 31


def test_a_bucket_item_from_the_single_bucket_version_keeps_its_hold(make_harness: Any) -> None:
    # Given the item the previous version wrote for a Retry-After of 30 s (no JSON, tokens 0, updated ahead)
    from chalicelib.store.items import LimitItem

    harness = make_harness(registry=registry_from_config(ACME))
    now = harness.clock.now()
    LimitItem("bucket#acme", tokens=0, updated_at=now + 30, version=1).save()
    # Then workers still wait it out, and take from the windows afterwards
    assert harness.container.guard.take_token("acme", now) == pytest.approx(30 + 0.5)
    assert harness.container.guard.take_token("acme", now + 30.5) is None


def _gate_windows(harness: Any, provider: str) -> Any:
    """The provider's shared rate windows, as its gate item holds them."""
    document = harness.container.store.shared.get_json(f"gate#{provider}")
    return None if document is None else document.get("windows")
