"""A dataset's records: pages for reads (with the state, in one Query), content hashes for change
detection, upserts by upstream id, tombstones, and the sweep of records a full pass did not see.

Every record write is a transaction fenced on the dataset's lease (see ``RecordStore.write_records``)."""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pynamodb.exceptions import TransactWriteError
from pynamodb.transactions import TransactWrite

from chalicelib.domain.errors import LeaseLostError
from chalicelib.domain.model import (
    DatasetKey,
    DatasetState,
    RunTally,
    StoredRecord,
)
from chalicelib.domain.upstream import UpstreamRecord
from chalicelib.store.conditions import (
    chunks,
    lease_owned_by,
    state_handle,
)
from chalicelib.store.convert import (
    encode_next_token,
    get_state_item,
    record_from_item,
    state_from_item,
)
from chalicelib.store.items import (
    RECORD_SORT_PREFIX,
    STATE_SORT_KEY,
    DatasetItem,
    RecordItem,
    StateItem,
    shared_connection,
)


@dataclass(frozen=True)
class DatasetPage:
    state: DatasetState | None
    records: list[StoredRecord]
    next_token: str | None


_TRANSACTION_ITEMS = 100  # DynamoDB's limit per TransactWriteItems
_CONFLICT_ATTEMPTS = 3


class RecordStore:
    """A dataset's records: pages for reads, content hashes for change detection, upserts, the sweep."""

    def read_dataset_page(
        self, key: DatasetKey, limit: int, after_sort_key: str | None, *, consistent: bool = False
    ) -> DatasetPage:
        """First page: one Query returns the state item and the records after it.

        ``consistent`` is for the read right after a sync, which must see what it wrote.
        """
        if after_sort_key is None:
            items = list(
                DatasetItem.query(key.dataset_id, limit=limit + 2, page_size=limit + 2, consistent_read=consistent)
            )
            state_item = next((i for i in items if isinstance(i, StateItem)), None)
            record_items = [i for i in items if isinstance(i, RecordItem)]
        else:
            state_item = get_state_item(key, consistent=consistent)
            record_items = [
                i
                for i in DatasetItem.query(
                    key.dataset_id,
                    DatasetItem.sk > after_sort_key,
                    limit=limit + 1,
                    page_size=limit + 1,
                    consistent_read=consistent,
                )
                if isinstance(i, RecordItem)
            ]
        has_more = len(record_items) > limit
        record_items = record_items[:limit]
        next_token = encode_next_token(record_items[-1].sk) if has_more and record_items else None
        return DatasetPage(
            state=state_from_item(state_item) if state_item is not None else None,
            records=[record_from_item(i) for i in record_items],
            next_token=next_token,
        )

    def get_record_hashes(self, key: DatasetKey, record_ids: Iterable[str]) -> dict[str, str]:
        keys = [(key.dataset_id, RECORD_SORT_PREFIX + rid) for rid in set(record_ids)]
        hashes: dict[str, str] = {}
        for chunk in chunks(keys, 100):
            # Consistent: whether a record is new decides ``record_count``, and the holder is its only writer.
            for item in DatasetItem.batch_get(
                chunk, consistent_read=True, attributes_to_get=["pk", "sk", "kind", "content_hash"]
            ):
                if isinstance(item, RecordItem):
                    hashes[item.sk[len(RECORD_SORT_PREFIX) :]] = item.content_hash
        return hashes

    def write_records(
        self,
        key: DatasetKey,
        records: Sequence[tuple[UpstreamRecord, str]],
        *,
        generation: str | None,
        now: float,
        owner: str,
        inserted: Collection[str] = (),
        deleted: Sequence[str] = (),
        tally: RunTally | None = None,
    ) -> None:
        """Store a page (upserts and tombstone deletions) as the lease holder ``owner`` only.

        Each TransactWriteItems carries the records and an update of the state item conditioned on
        the lease, so a holder that lost its lease (taken over, or the dataset purged) writes nothing
        and gets ``LeaseLostError``. The same update counts the records it adds (``inserted``: ids not
        stored before) and removes, so ``record_count`` is exact whatever happens to the run later, and
        stores the run's ``tally`` with the last part of the page.
        """
        writes: list[tuple[DatasetItem, int]] = [
            (_record_item(key, record, digest, generation, now), 0) for record, digest in records
        ]
        writes += [(RecordItem(key.dataset_id, RECORD_SORT_PREFIX + rid), -1) for rid in deleted]
        new_ids = set(inserted)
        parts = _transaction_parts(writes)
        for index, part in enumerate(parts):
            delta = sum(
                -1 if change < 0 else int(item.sk[len(RECORD_SORT_PREFIX) :] in new_ids) for item, change in part
            )
            last = index == len(parts) - 1
            _fenced_write(key, owner, part, delta, tally if last else None)

    def sweep_unseen_records(self, key: DatasetKey, generation: str, *, owner: str) -> tuple[int, int]:
        """After a complete full pass: delete records the pass did not see, as the lease holder only.

        Returns (deleted, remaining); the pass reads every key anyway, so the
        remaining count is exact and corrects any drift from interrupted runs.
        """
        stale: list[tuple[DatasetItem, int]] = []
        remaining = 0
        for item in DatasetItem.query(
            key.dataset_id,
            DatasetItem.sk.startswith(RECORD_SORT_PREFIX),
            attributes_to_get=["pk", "sk", "kind", "seen_generation"],
            consistent_read=True,
        ):
            if isinstance(item, RecordItem) and item.seen_generation == generation:
                remaining += 1
            else:
                stale.append((RecordItem(item.pk, item.sk), -1))
        for part in _transaction_parts(stale):
            _fenced_write(key, owner, part, -len(part), None)
        return len(stale), remaining


_TRANSACTION_BYTES = 3_500_000
"""Under DynamoDB's 4 MB per TransactWriteItems, with room for keys and attribute names."""


def _record_item(
    key: DatasetKey, record: UpstreamRecord, digest: str, generation: str | None, now: float
) -> RecordItem:
    return RecordItem(
        key.dataset_id,
        RECORD_SORT_PREFIX + record.record_id,
        record_id=record.record_id,
        data_json=json.dumps(dict(record.data), separators=(",", ":"), default=str),
        content_hash=digest,
        upstream_updated_at=record.updated_at,
        seen_generation=generation,
        synced_at=now,
    )


def _item_bytes(item: DatasetItem) -> int:
    data = item.data_json if isinstance(item, RecordItem) and item.data_json else ""
    return len(data.encode()) + len(item.sk.encode()) + 512


def _transaction_parts(writes: list[tuple[DatasetItem, int]]) -> list[list[tuple[DatasetItem, int]]]:
    """The writes in groups that each fit one transaction beside the state item's update."""
    parts: list[list[tuple[DatasetItem, int]]] = []
    part: list[tuple[DatasetItem, int]] = []
    size = 0
    for write in writes:
        weight = _item_bytes(write[0])
        if part and (len(part) + 1 >= _TRANSACTION_ITEMS or size + weight > _TRANSACTION_BYTES):
            parts.append(part)
            part, size = [], 0
        part.append(write)
        size += weight
    if part:
        parts.append(part)
    return parts


def _fenced_write(
    key: DatasetKey, owner: str, part: list[tuple[DatasetItem, int]], delta: int, tally: RunTally | None
) -> None:
    """One transaction: the records, and the state item's count and tally, only while ``owner`` holds the lease."""
    actions: list[Any] = []
    if delta:
        actions.append(StateItem.record_count.add(delta))
    if tally is not None:
        actions.append(StateItem.run_tally_json.set(tally.to_json()))
    for attempt in range(_CONFLICT_ATTEMPTS):
        try:
            with TransactWrite(connection=shared_connection()) as transaction:
                if actions:
                    transaction.update(state_handle(key), actions=actions, condition=lease_owned_by(owner))
                else:
                    transaction.condition_check(
                        StateItem, key.dataset_id, STATE_SORT_KEY, condition=lease_owned_by(owner)
                    )
                for item, change in part:
                    if change < 0:
                        transaction.delete(item)
                    else:
                        transaction.save(item)
            return
        except TransactWriteError as exc:
            codes = [reason.code if reason is not None else None for reason in exc.cancellation_reasons or []]
            if "ConditionalCheckFailed" in codes:
                raise LeaseLostError(
                    f"lost the lease on {key.describe()} (taken over, or the dataset was deleted)"
                ) from exc
            if "TransactionConflict" not in codes or attempt + 1 == _CONFLICT_ATTEMPTS:
                raise
