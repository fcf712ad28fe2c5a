"""Leases that are lost, connections deleted mid-sync, periodic full passes and interrupted syncs."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from chalicelib.domain.model import DatasetKey
from chalicelib.domain.upstream import FetchRequest
from tests.functional.conftest import Harness, counting_demo

KEY = DatasetKey("u1", "c1", "recovery")


def dataset_items(harness: Harness, connection_id: str = "c1") -> list[dict[str, Any]]:
    """Every item left in the datasets and runs tables for one connection (moto scan, test-only)."""
    ddb = boto3.client("dynamodb", region_name="us-east-1")
    found: list[dict[str, Any]] = []
    for table, key in ((harness.settings.datasets_table, "pk"), (harness.settings.runs_table, "dataset_id")):
        for item in ddb.scan(TableName=table)["Items"]:
            if item[key]["S"].startswith(f"u1#{connection_id}#"):
                found.append(item)
    return found


class Crash(BaseException):
    """The process dies: nothing in the engine may catch it."""


def test_a_holder_that_lost_its_lease_writes_nothing(make_harness: Any) -> None:
    # Given sync A that stalls on its second page past the lease TTL, while B takes over and finishes
    state: dict[str, Any] = {"harness": None, "stalled": False}

    def stall_then_let_b_run(request: FetchRequest) -> None:
        harness: Harness = state["harness"]
        if request.page_token == "10" and not state["stalled"]:
            state["stalled"] = True
            harness.clock.advance(harness.settings.lease_ttl_seconds + 1)
            b = harness.container.reader.read("u1", "c1", "recovery", {"limit": "100"})
            assert b.body["metadata"]["sync"]["joined_running_sync"] is False
            state["b"] = b

    registry, _ = counting_demo(before_fetch=stall_then_let_b_run)
    harness = make_harness(registry=registry)
    state["harness"] = harness
    harness.put_connection(settings={"records": 30, "page_size": 10})

    # When A resumes after B finished
    a = harness.container.reader.read("u1", "c1", "recovery", {"limit": "100"})

    # Then B's sync stands, A stored nothing more, and the history says what happened
    assert state["b"].status_code == 200
    assert a.body["metadata"]["record_count"] == 30
    assert len(a.body["data"]) == 30
    runs = json.loads(harness.read("/users/u1/connections/c1/runs?data_type=recovery").body)["runs"]
    assert sorted(r["status"] for r in runs) == ["lease_lost", "succeeded"]
    lost = next(r for r in runs if r["status"] == "lease_lost")
    assert lost["inserted"] == 10  # its first page only: the second was fenced off


def test_deleting_a_connection_mid_sync_leaves_nothing_behind(make_harness: Any) -> None:
    # Given a sync that is on its second page when the user deletes the connection
    state: dict[str, Any] = {}

    def delete_during_page_two(request: FetchRequest) -> None:
        if request.page_token == "10" and "deleted" not in state:
            harness: Harness = state["harness"]
            response = harness.client.http.delete("/users/u1/connections/c1", headers=harness.headers())
            state["deleted"] = response.status_code

    registry, provider = counting_demo(before_fetch=delete_during_page_two)
    harness = make_harness(registry=registry)
    state["harness"] = harness
    harness.put_connection(settings={"records": 30, "page_size": 10})

    # When the sync carries on
    answer = harness.read("/users/u1/connections/c1/data/recovery")

    # Then the read reports the connection gone, and no record, state or run survives
    assert state["deleted"] == 204
    assert answer.status_code == 404
    assert dataset_items(harness) == []
    assert provider.calls == 2
    # And a later read cannot bring the dataset back
    assert harness.read("/users/u1/connections/c1/data/recovery").status_code == 404
    assert dataset_items(harness) == []


def test_a_periodic_full_pass_removes_records_the_provider_dropped(make_harness: Any) -> None:
    # Given a 30-day window synced today, then synced incrementally for two days
    registry, provider = counting_demo()
    harness = make_harness(registry=registry)
    harness.put_connection(settings={"records": 30, "page_size": 50})
    harness.read("/users/u1/connections/c1/data/recovery")
    harness.clock.advance(43200)
    harness.read("/users/u1/connections/c1/data/recovery")
    assert provider.requests[-1].since is not None
    # When a read comes after the full-resync interval (a day)
    harness.clock.advance(43200 + 3600)
    meta = json.loads(harness.read("/users/u1/connections/c1/data/recovery").body)["metadata"]
    # Then that sync was a full pass and deleted the record that left the window
    assert provider.requests[-1].since is None
    assert meta["sync"]["deleted"] == 1
    assert meta["record_count"] == 30


def test_sync_status_shows_an_interrupted_sync(make_harness: Any) -> None:
    # Given a sync whose process died mid-way
    def die(_: FetchRequest) -> None:
        raise Crash()

    registry, _ = counting_demo(before_fetch=die)
    harness = make_harness(registry=registry)
    harness.put_connection(settings={"records": 5})
    with pytest.raises(Crash):
        harness.container.reader.read("u1", "c1", "recovery", {})
    status = json.loads(harness.read("/users/u1/sync-status").body)["connections"][0]["datasets"]
    assert status["recovery"]["sync_status"] == "running"
    # When its lease has expired
    harness.clock.advance(harness.settings.lease_ttl_seconds + 1)
    status = json.loads(harness.read("/users/u1/sync-status").body)["connections"][0]["datasets"]
    # Then the status says so instead of "running" forever
    assert status["recovery"]["sync_status"] == "interrupted"


def test_a_job_for_a_deleted_connection_is_acknowledged_and_leaves_nothing(make_harness: Any) -> None:
    # Given a queued job whose connection is then deleted
    harness = make_harness()
    harness.put_connection(settings={"records": 3})
    harness.client.http.post(
        "/users/u1/connections/c1/sync", headers=harness.headers(), body=json.dumps({"data_type": "sleep"})
    )
    jobs = harness.queued_bodies()
    assert harness.client.http.delete("/users/u1/connections/c1", headers=harness.headers()).status_code == 204
    # When the worker receives it
    result = harness.deliver(jobs)
    # Then it is not retried, and no trace of the dataset remains
    assert result.payload == {"batchItemFailures": []}
    assert dataset_items(harness) == []


def test_a_page_stored_just_after_a_delete_is_purged_by_the_sync_itself(
    make_harness: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a DELETE that lands between the holder's lease renewal and its page write
    harness = make_harness()
    harness.put_connection(settings={"records": 30, "page_size": 10})
    store = harness.container.store
    original_write = store.write_records
    deleted: list[int] = []

    def delete_then_write(*args: Any, **kwargs: Any) -> None:
        if not deleted:
            response = harness.client.http.delete("/users/u1/connections/c1", headers=harness.headers())
            deleted.append(response.status_code)
        original_write(*args, **kwargs)

    monkeypatch.setattr(store, "write_records", delete_then_write)
    # When the sync writes that page and then finds its lease gone
    answer = harness.read("/users/u1/connections/c1/data/recovery")
    # Then the sync finished the deletion itself: nothing of the dataset survives
    assert deleted == [204]
    assert answer.status_code == 404
    assert dataset_items(harness) == []
