"""The storage implementation every consumer is handed: DynamoDB through PynamoDB.

Each concern lives in its own module (connections, datasets, records, runs, the schedule index,
the purge, the shared limits); consumers name the few methods they use in their own Protocols.
Everything that must be shared between Lambdas is a conditional write, and a failed condition
becomes a domain error.
"""

from __future__ import annotations

from chalicelib.store.connections import ConnectionStore
from chalicelib.store.datasets import DatasetStore
from chalicelib.store.purge import DatasetPurge
from chalicelib.store.records import RecordStore
from chalicelib.store.runs import RunStore
from chalicelib.store.schedule_index import ScheduleIndex
from chalicelib.store.shared import SharedStore


class DynamoStore(ConnectionStore, DatasetStore, DatasetPurge, RecordStore, RunStore, ScheduleIndex):
    """One Lambda's storage: the concern stores over the same tables, and its shared-limits store."""

    def __init__(self) -> None:
        self.shared = SharedStore()
