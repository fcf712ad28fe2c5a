"""A dataset's records: pages for reads (with the state, in one Query), content hashes for change
detection, upserts by upstream id, tombstones, and the sweep of records a full pass did not see."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from chalicelib.domain.model import (
    DatasetKey,
    DatasetState,
    StoredRecord,
)
from chalicelib.domain.upstream import UpstreamRecord
from chalicelib.store.conditions import (
    chunks,
)
from chalicelib.store.convert import (
    encode_next_token,
    get_state_item,
    record_from_item,
    state_from_item,
)
from chalicelib.store.items import (
    RECORD_SORT_PREFIX,
    DatasetItem,
    RecordItem,
    StateItem,
)


@dataclass(frozen=True)
class DatasetPage:
    state: DatasetState | None
    records: list[StoredRecord]
    next_token: str | None


_TRANSACTION_ITEMS = 100  # DynamoDB's limit per TransactWriteItems


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
            for item in DatasetItem.batch_get(chunk, attributes_to_get=["pk", "sk", "kind", "content_hash"]):
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
    ) -> None:
        with DatasetItem.batch_write() as batch:
            for record, digest in records:
                batch.save(
                    RecordItem(
                        key.dataset_id,
                        RECORD_SORT_PREFIX + record.record_id,
                        record_id=record.record_id,
                        data_json=json.dumps(dict(record.data), separators=(",", ":"), default=str),
                        content_hash=digest,
                        upstream_updated_at=record.updated_at,
                        seen_generation=generation,
                        synced_at=now,
                    )
                )

    def delete_records(self, key: DatasetKey, record_ids: Iterable[str]) -> None:
        with DatasetItem.batch_write() as batch:
            for rid in record_ids:
                batch.delete(RecordItem(key.dataset_id, RECORD_SORT_PREFIX + rid))

    def sweep_unseen_records(self, key: DatasetKey, generation: str) -> tuple[int, int]:
        """After a complete full pass: delete records the pass did not see.

        Returns (deleted, remaining); the pass reads every key anyway, so the
        remaining count is exact and corrects any drift from interrupted runs.
        """
        stale: list[DatasetItem] = []
        remaining = 0
        for item in DatasetItem.query(
            key.dataset_id,
            DatasetItem.sk.startswith(RECORD_SORT_PREFIX),
            attributes_to_get=["pk", "sk", "kind", "seen_generation"],
        ):
            if isinstance(item, RecordItem) and item.seen_generation == generation:
                remaining += 1
            else:
                stale.append(item)
        with DatasetItem.batch_write() as batch:
            for item in stale:
                batch.delete(item)
        return len(stale), remaining
