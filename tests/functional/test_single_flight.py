"""Invariants 1 and 3: one sync per dataset however many callers; crashes lose and double nothing."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from chalicelib.domain.clock import SystemClock
from chalicelib.domain.errors import StoreBusyError, SyncInProgressError
from chalicelib.domain.limits import Bucket
from chalicelib.domain.model import DatasetKey
from chalicelib.domain.upstream import FetchRequest, ProviderError
from chalicelib.store.items import STATE_SORT_KEY, StateItem
from tests.functional.conftest import counting_demo

KEY = DatasetKey("u1", "c1", "recovery")


def test_fifty_concurrent_expired_reads_make_one_upstream_fetch(make_harness: Any) -> None:
    # Given a never-synced dataset whose provider takes 300 ms per page (real time: readers run in parallel)
    registry, provider = counting_demo(before_fetch=lambda _request: time.sleep(0.3))
    harness = make_harness(registry=registry, clock=SystemClock())
    harness.put_connection(settings={"records": 10, "page_size": 50})
    start = threading.Barrier(50)

    def read(_: int) -> Any:
        start.wait()
        return harness.container.reader.read("u1", "c1", "recovery", {})

    # When 50 threads read it at the same moment
    with ThreadPoolExecutor(max_workers=50) as pool:
        answers = list(pool.map(read, range(50)))

    # Then exactly one upstream fetch happened and all 50 got the fresh data
    assert provider.calls == 1
    assert [a.status_code for a in answers] == [200] * 50
    assert {a.body["metadata"]["source"] for a in answers} == {"upstream"}
    assert all(len(a.body["data"]) == 10 for a in answers)
    joined = sum(1 for a in answers if a.body["metadata"]["sync"]["joined_running_sync"])
    assert joined == 49


def test_a_second_caller_cannot_take_a_held_lease(make_harness: Any) -> None:
    # Given a lease held by worker A
    harness = make_harness()
    harness.put_connection()
    store, now = harness.container.store, harness.clock.now()
    store.acquire_lease(KEY, "demo", "A", now, 120)
    # When B tries before it expires, and C after
    with pytest.raises(SyncInProgressError):
        store.acquire_lease(KEY, "demo", "B", now + 119, 120)
    state = store.acquire_lease(KEY, "demo", "C", now + 121, 120)
    # Then only C (after expiry) wins
    assert state.lease_owner == "C"


class Crash(BaseException):
    """Stands in for the process dying: nothing in the engine may catch it."""


def test_a_sync_that_dies_after_page_k_resumes_from_its_checkpoint(make_harness: Any) -> None:
    # Given a dataset of 5 pages whose first sync dies while fetching page 4
    def die_on_page_four(request: FetchRequest) -> None:
        if request.page_token == "30" and not survived.is_set():
            raise Crash()

    survived = threading.Event()
    registry, provider = counting_demo(before_fetch=die_on_page_four)
    harness = make_harness(registry=registry)
    harness.put_connection(settings={"records": 50, "page_size": 10})
    with pytest.raises(Crash):
        harness.container.reader.read("u1", "c1", "recovery", {})
    crashed_state = harness.container.store.get_state(KEY)
    assert crashed_state is not None and crashed_state.checkpoint is not None
    assert crashed_state.checkpoint.page_token == "30"
    survived.set()

    # When a read arrives while the dead holder's lease is still valid
    harness.clock.advance(5)
    early = harness.container.reader.read("u1", "c1", "recovery", {})
    # Then it waits rather than starting a second sync
    assert early.status_code == 202
    assert provider.calls == 4

    # When the lease has expired and the next read comes
    harness.clock.advance(harness.settings.lease_ttl_seconds)
    answer = harness.container.reader.read("u1", "c1", "recovery", {"limit": "100"})

    # Then it resumed at page 4, fetched only pages 4 and 5, and every record is there exactly once
    tokens = [r.page_token for r in provider.requests]
    assert tokens == [None, "10", "20", "30", "30", "40"]
    assert answer.status_code == 200
    ids = [r["id"] for r in answer.body["data"]]
    assert len(ids) == 50
    assert len(set(ids)) == 50
    assert answer.body["metadata"]["record_count"] == 50
    assert answer.body["metadata"]["sync"]["inserted"] == 20


def test_deletions_apply_only_after_a_complete_full_pass(make_harness: Any) -> None:
    # Given 30 cached records, and a provider that now has only 20 and fails once on page 2
    failing = threading.Event()

    def fail_page_two_once(request: FetchRequest) -> None:
        if request.page_token == "10" and failing.is_set():
            failing.clear()
            raise ProviderError("simulated outage", retryable=False)

    registry, _ = counting_demo(before_fetch=fail_page_two_once)
    harness = make_harness(registry=registry)
    harness.put_connection(settings={"records": 30, "page_size": 10})
    harness.container.reader.read("u1", "c1", "recovery", {})
    harness.put_connection(settings={"records": 20, "page_size": 10})
    # (a full pass, as after a reset: without a watermark nothing can be incremental)
    StateItem(KEY.dataset_id, STATE_SORT_KEY).update(actions=[StateItem.watermark.remove()])
    failing.set()

    # When the full pass fails half way
    harness.clock.advance(7200)
    failed = harness.container.reader.read("u1", "c1", "recovery", {"limit": "100"})
    # Then nothing was deleted
    assert failed.body["metadata"]["source"] == "stale_cache"
    assert len(failed.body["data"]) == 30

    # When the pass is retried (after the failure backoff) and completes
    harness.clock.advance(harness.settings.failure_backoff_max_seconds)
    answer = harness.container.reader.read("u1", "c1", "recovery", {"limit": "100"})
    # Then it resumed from its checkpoint and deleted the 10 records the provider no longer has
    assert answer.body["metadata"]["sync"]["deleted"] == 10
    assert answer.body["metadata"]["record_count"] == 20
    assert len(answer.body["data"]) == 20


def test_a_shared_bucket_never_grants_more_than_its_capacity_across_threads(make_harness: Any) -> None:
    # Given a bucket of 5 and a clock that does not move (no refill)
    harness = make_harness()
    bucket = Bucket.per_window(5, 3600)
    start = threading.Barrier(8)

    def take_until_refused(_: int) -> int:
        start.wait()
        granted = 0
        for _attempt in range(50):
            try:
                wait = harness.container.store.shared.take_token("test#bucket", bucket, harness.clock.now())
            except StoreBusyError:  # lost too many races in a row: a refusal to retry, never a grant
                continue
            if wait is not None:
                return granted
            granted += 1
        return granted

    # When 8 threads take tokens at once until each is refused
    with ThreadPoolExecutor(max_workers=8) as pool:
        grants = sum(pool.map(take_until_refused, range(8)))
    # Then exactly the 5 tokens were granted
    assert grants == 5
