"""Record writes are fenced on the dataset's lease (``RecordStore.write_records``, ``sweep_unseen_records``) and
count themselves into ``record_count``; a purge takes the lease first (``DatasetPurge.delete_dataset``)."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from pynamodb.exceptions import UpdateError

from chalicelib.domain.errors import ClaimNotWonError, LeaseLostError, SyncInProgressError
from chalicelib.domain.model import DatasetKey, RunTally, SyncCounts
from chalicelib.domain.upstream import UpstreamRecord
from chalicelib.store.convert import content_hash
from chalicelib.store.dynamo import DynamoStore
from chalicelib.store.items import StateItem
from tests.integration.conftest import saved_connection

T0 = 1_767_225_600.0
TTL = 300.0
PROVIDER = "whoop"
KEY = DatasetKey("u1", "c1", "cycles")


@pytest.fixture
def dataset(store: DynamoStore) -> DynamoStore:
    saved_connection(store, KEY, PROVIDER, T0)
    store.ensure_dataset(KEY, PROVIDER)
    return store


def _record(record_id: str, version: int) -> tuple[UpstreamRecord, str]:
    data = {"id": record_id, "version": version}
    return UpstreamRecord(record_id=record_id, data=data, updated_at=None), content_hash(data)


def _versions(store: DynamoStore) -> dict[str, int]:
    page = store.read_dataset_page(KEY, 500, None, consistent=True)
    return {r.record_id: int(r.data["version"]) for r in page.records}


def _record_count(store: DynamoStore) -> int:
    state = store.get_state(KEY)
    assert state is not None
    return state.record_count


def test_a_holder_that_lost_its_lease_cannot_overwrite_the_newer_records(dataset: DynamoStore) -> None:
    # Given holder A whose lease expired, and holder B that took it over and stored version 2 of r1
    dataset.acquire_lease(KEY, PROVIDER, "A", T0, TTL)
    dataset.acquire_lease(KEY, PROVIDER, "B", T0 + TTL + 1, TTL)
    dataset.write_records(KEY, [_record("r1", 2)], generation=None, now=T0 + TTL + 2, owner="B", inserted={"r1"})
    # When A, renewed in its own mind, writes its older version of r1 and a record of its own
    with pytest.raises(LeaseLostError):
        dataset.write_records(
            KEY, [_record("r1", 1), _record("r2", 1)], generation=None, now=T0 + TTL + 3, owner="A", inserted={"r2"}
        )
    # Then the write is refused whole: B's version stands, A's new record is absent, and the count is B's
    assert _versions(dataset) == {"r1": 2}
    assert _record_count(dataset) == 1


def test_a_lost_lease_cannot_delete_records_by_tombstone_or_sweep(dataset: DynamoStore) -> None:
    # Given B holds the lease over A and stored r1 in its own pass
    dataset.acquire_lease(KEY, PROVIDER, "A", T0, TTL)
    dataset.acquire_lease(KEY, PROVIDER, "B", T0 + TTL + 1, TTL)
    dataset.write_records(KEY, [_record("r1", 2)], generation="pass-b", now=T0 + TTL + 2, owner="B", inserted={"r1"})
    # When A sends a tombstone for r1, and sweeps as if its own pass were complete
    with pytest.raises(LeaseLostError):
        dataset.write_records(KEY, [], generation=None, now=T0 + TTL + 3, owner="A", deleted=["r1"])
    with pytest.raises(LeaseLostError):
        dataset.sweep_unseen_records(KEY, "pass-a", owner="A")
    # Then r1 survives both
    assert _versions(dataset) == {"r1": 2}
    assert _record_count(dataset) == 1


def test_page_writes_count_what_they_add_and_remove(dataset: DynamoStore) -> None:
    # Given the holder stored three records
    dataset.acquire_lease(KEY, PROVIDER, "A", T0, TTL)
    three = [_record(f"r{i}", 1) for i in range(3)]
    dataset.write_records(KEY, three, generation=None, now=T0, owner="A", inserted={"r0", "r1", "r2"})
    # When a page updates r0, adds r3 and deletes r1 by tombstone
    dataset.write_records(
        KEY, [_record("r0", 2), _record("r3", 1)], generation=None, now=T0, owner="A", inserted={"r3"}, deleted=["r1"]
    )
    # Then the count follows the records exactly, without waiting for the run's end
    assert _versions(dataset) == {"r0": 2, "r2": 1, "r3": 1}
    assert _record_count(dataset) == 3


def test_a_page_larger_than_one_transaction_is_written_in_parts_with_its_tally(dataset: DynamoStore) -> None:
    # Given a holder with a page of 250 new records (DynamoDB takes 100 items per transaction)
    dataset.acquire_lease(KEY, PROVIDER, "A", T0, TTL)
    page = [_record(f"r{i:03d}", 1) for i in range(250)]
    tally = RunTally("run-1", SyncCounts(inserted=250, pages=1))
    # When it stores the page
    dataset.write_records(
        KEY, page, generation=None, now=T0, owner="A", inserted={r.record_id for r, _ in page}, tally=tally
    )
    # Then every record is stored and counted, and the run's tally is stored with the page
    state = dataset.get_state(KEY)
    assert state is not None
    assert len(_versions(dataset)) == 250
    assert state.record_count == 250
    assert state.run_tally == tally


def test_the_sweep_counts_its_deletions_and_reports_what_remains(dataset: DynamoStore) -> None:
    # Given two records from an old pass and one from the current pass
    dataset.acquire_lease(KEY, PROVIDER, "A", T0, TTL)
    dataset.write_records(
        KEY, [_record("old1", 1), _record("old2", 1)], generation="p1", now=T0, owner="A", inserted={"old1", "old2"}
    )
    dataset.write_records(KEY, [_record("new", 1)], generation="p2", now=T0, owner="A", inserted={"new"})
    # When the holder sweeps after pass p2
    deleted, remaining = dataset.sweep_unseen_records(KEY, "p2", owner="A")
    # Then the unseen ones are gone and the count already says so
    assert (deleted, remaining) == (2, 1)
    assert _versions(dataset) == {"new": 1}
    assert _record_count(dataset) == 1


def test_a_purge_takes_the_lease_so_the_running_sync_stores_nothing_more(dataset: DynamoStore) -> None:
    # Given a holder mid-sync
    dataset.acquire_lease(KEY, PROVIDER, "A", T0, TTL)
    dataset.write_records(KEY, [_record("r1", 1)], generation=None, now=T0, owner="A", inserted={"r1"})
    # When a purge has taken the lease (its first step) and the holder writes its next page
    dataset._take_for_purge(KEY)
    with pytest.raises(LeaseLostError):
        dataset.write_records(KEY, [_record("r2", 1)], generation=None, now=T0 + 1, owner="A", inserted={"r2"})
    # Then nothing of that page is stored, and the purge then removes everything
    assert _versions(dataset) == {"r1": 1}
    assert dataset.delete_dataset(KEY) is True
    assert dataset.get_state(KEY) is None
    assert dataset.read_dataset_page(KEY, 10, None, consistent=True).records == []


def test_a_dataset_made_again_after_a_purge_is_a_new_incarnation(dataset: DynamoStore) -> None:
    # Given a dataset that a holder held when it was purged and made again (a PUT with reset_data)
    before = dataset.acquire_lease(KEY, PROVIDER, "A", T0, TTL)
    dataset.delete_dataset(KEY)
    dataset.ensure_dataset(KEY, PROVIDER)
    # When the holder writes its next page
    with pytest.raises(LeaseLostError):
        dataset.write_records(KEY, [_record("r1", 1)], generation=None, now=T0 + 1, owner="A", inserted={"r1"})
    # Then it stored nothing, and the new state item says it is not the one the holder took
    after = dataset.get_state(KEY)
    assert after is not None
    assert before.incarnation is not None
    assert after.incarnation != before.incarnation
    assert after.record_count == 0
    assert _versions(dataset) == {}


def test_a_lease_or_claim_write_that_meets_a_page_write_in_flight_is_told_a_sync_runs(
    dataset: DynamoStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the state item is inside a holder's page transaction (DynamoDB refuses plain writes to it meanwhile)
    conflict = ClientError({"Error": {"Code": "TransactionConflictException", "Message": "busy"}}, "UpdateItem")

    def in_flight(*_: object, **__: object) -> None:
        raise UpdateError("Failed to update item", conflict)

    monkeypatch.setattr(StateItem, "update", in_flight)
    # When a reader tries to take the lease, and another to claim a background sync
    # Then they hear what is true (a sync runs), not an internal error
    with pytest.raises(SyncInProgressError):
        dataset.acquire_lease(KEY, PROVIDER, "reader", T0, TTL)
    with pytest.raises(ClaimNotWonError):
        dataset.claim_queue(KEY, PROVIDER, "job-1", T0, cooldown_seconds=0, claim_ttl_seconds=900)
