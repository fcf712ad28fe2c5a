"""moto, minus costs real AWS does not have, so the local run and the benchmarks measure the service, not moto.

Applied by the local runner (``local/aws.py``, to its moto server) and by ``bench.run`` (to in-process
moto) before anything else; every answer, condition and rollback stays moto's own, only the work
around them shrinks:

- ``TransactWriteItems`` deep-copies the whole table once per item it writes, for its rollback
  (1.4 s per item on a 10,000-item table): ``make_moto_transactions_item_scoped`` backs up only
  the items the transaction names;
- every ``SendMessage``, and every message a ``ReceiveMessage`` returns, counts every message on
  the queue three times (10,000 sends: about 15 minutes; one receive from 1,000 messages: 0.3 s):
  ``make_moto_sqs_cheap`` skips those counts inside a send or a receive;
- a ``Query`` on a table's own key sorts every item of the table to pick one partition (40 ms per
  sync with 4,000 items): ``make_moto_partition_queries_cheap`` hands it that partition only;
- every DynamoDB answer goes through moto's generic, model-driven serializer, which walks the
  operation's output shape value by value (25 ms for a Query of 30 records, most of moto's time
  under load): ``make_moto_dynamodb_answers_cheap`` writes the JSON directly when it can
  (``local/moto_json.py``);
- the moto server lists its own package directory on every request, under a lock, to route it:
  ``make_moto_server_routing_cheap`` lists it once.
"""

from __future__ import annotations

import copy
import inspect
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any


def apply_all() -> None:
    """Every patch, in the order that lets ``make_moto_dynamodb_atomic``'s lock cover the transaction one."""
    from local.moto_atomic import make_moto_dynamodb_atomic
    from local.moto_json import make_moto_dynamodb_answers_cheap, make_moto_server_routing_cheap

    make_moto_sqs_cheap()
    make_moto_partition_queries_cheap()
    make_moto_transactions_item_scoped()
    make_moto_dynamodb_atomic()
    make_moto_dynamodb_answers_cheap()
    make_moto_server_routing_cheap()


# --- transactions back up what they touch, not the whole table --------------------------------------

_TRANSACTIONS_PATCHED = False
_IN_TRANSACTION = threading.local()


def make_moto_transactions_item_scoped() -> None:
    """Make moto's ``transact_write_items`` O(items written) instead of O(items x table size).

    moto backs up each table a transaction touches with ``copy.deepcopy(table)``, once per item
    (1.4 s for a 10,000-item table). Here the items the transaction names are backed up instead,
    and restored if it fails; moto's own backup becomes the table itself (its "rollback" assigns it
    back, a no-op). Apply before ``local.moto_atomic.make_moto_dynamodb_atomic`` so that its lock
    also covers the backup and the restore.
    """
    global _TRANSACTIONS_PATCHED
    if _TRANSACTIONS_PATCHED:
        return
    import moto.dynamodb.models as moto_models
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table as MotoTable

    original: Callable[..., Any] = DynamoDBBackend.transact_write_items
    if hasattr(original, "__wrapped__"):
        raise RuntimeError("apply make_moto_transactions_item_scoped before make_moto_dynamodb_atomic")
    real_copy = copy  # what moto's models module imported as ``copy``

    class _CopyModule:
        """What moto's models module sees as ``copy``: whole tables are not copied inside a transaction."""

        @staticmethod
        def deepcopy(value: Any, memo: dict[int, Any] | None = None) -> Any:
            if isinstance(value, MotoTable) and getattr(_IN_TRANSACTION, "active", False):
                return value
            return real_copy.deepcopy(value, memo)

        copy = staticmethod(real_copy.copy)

    def touched(backend: Any, transact_items: Sequence[Mapping[str, Any]]) -> list[tuple[Any, Any, Any, Any]]:
        saved: list[tuple[Any, Any, Any, Any]] = []
        for entry in transact_items:
            try:
                _, op = next(iter(entry.items()))
                table = backend.get_table(op["TableName"])
                if "Key" in op:
                    keys = op["Key"]
                else:
                    names = (table.hash_key_attr, table.range_key_attr)
                    keys = {name: op["Item"][name] for name in names if name is not None}
                hash_key, range_key = backend.get_keys_value(table, keys)
                before = table.get_item(hash_key, range_key)
            except Exception:  # moto itself rejects this entry; nothing of it gets written
                continue
            saved.append((table, hash_key, range_key, copy.deepcopy(before)))
        return saved

    def restore(saved: list[tuple[Any, Any, Any, Any]]) -> None:
        for table, hash_key, range_key, item in reversed(saved):
            if item is None:
                table.delete_item(hash_key, range_key)
            elif range_key is not None:
                table.items[hash_key][range_key] = item
            else:
                table.items[hash_key] = item

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
        saved = touched(self, transact_items)
        _IN_TRANSACTION.active = True
        try:
            return original(self, transact_items)
        except BaseException:
            restore(saved)
            raise
        finally:
            _IN_TRANSACTION.active = False

    setattr(moto_models, "copy", _CopyModule)  # noqa: B010  (a module attribute, not a typed name)
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    _TRANSACTIONS_PATCHED = True


# --- SQS sends and receives do not count the queue -------------------------------------------------

_SQS_PATCHED = False
_SQS_CALL = threading.local()
_QUEUE_COUNTS = (
    "approximate_number_of_messages",
    "approximate_number_of_messages_delayed",
    "approximate_number_of_messages_not_visible",
)


def make_moto_sqs_cheap() -> None:
    """Make moto's ``SendMessage`` O(1) and ``ReceiveMessage`` O(messages) instead of O(messages x ...).

    moto's ``send_message`` reads ``queue.attributes`` for one FIFO setting, and ``receive_message``
    reads it once per message received for the retention period; that property counts every
    message on the queue three times (visible, delayed, in flight). Sending 10,000 jobs takes about
    15 minutes, and one receive from a 1,000-message queue about 0.3 s. While this thread is
    inside a send or a receive, those three counts answer 0 (neither reads them); every other
    caller (``GetQueueAttributes``) gets exact counts.
    """
    global _SQS_PATCHED
    if _SQS_PATCHED:
        return
    from moto.sqs.models import Queue, SQSBackend

    for name in _QUEUE_COUNTS:
        counted: property = getattr(Queue, name)

        def count(self: Any, __counted: property = counted) -> int:
            if getattr(_SQS_CALL, "depth", 0):
                return 0
            return int(__counted.fget(self))  # type: ignore[misc]

        setattr(Queue, name, property(count))

    for name in ("send_message", "send_message_batch", "receive_message"):
        method: Callable[..., Any] = getattr(SQSBackend, name)

        def uncounted(self: Any, *args: Any, __method: Callable[..., Any] = method, **kwargs: Any) -> Any:
            _SQS_CALL.depth = getattr(_SQS_CALL, "depth", 0) + 1
            try:
                return __method(self, *args, **kwargs)
            finally:
                _SQS_CALL.depth -= 1

        setattr(SQSBackend, name, uncounted)
    _SQS_PATCHED = True


# --- a Query on the table's key reads its partition, not the whole table ------------------------------

_QUERIES_PATCHED = False
_PARTITION = threading.local()


def make_moto_partition_queries_cheap() -> None:
    """``Table.query`` without an index filters ``all_items()`` (every item, sorted) by hash key;
    during such a query, ``all_items()`` of that table returns just that partition, sorted the same way."""
    global _QUERIES_PATCHED
    if _QUERIES_PATCHED:
        return
    from moto.dynamodb.models.table import Table

    original_query: Callable[..., Any] = Table.query
    original_all_items: Callable[..., Any] = Table.all_items
    signature = inspect.signature(original_query)

    def query(self: Any, *args: Any, **kwargs: Any) -> Any:
        bound = signature.bind(self, *args, **kwargs)
        hash_key = bound.arguments.get("hash_key")
        if bound.arguments.get("index_name") or hash_key is None:
            return original_query(self, *args, **kwargs)
        _PARTITION.target = (self, hash_key)
        try:
            return original_query(self, *args, **kwargs)
        finally:
            _PARTITION.target = None

    def all_items(self: Any) -> Any:
        target = getattr(_PARTITION, "target", None)
        if target is None or target[0] is not self:
            return original_all_items(self)
        partition = self.items.get(target[1])
        if partition is None:
            return []
        items = list(partition.values()) if self.range_key_attr else [partition]
        return sorted(items, key=lambda x: (x.hash_key, x.range_key) if x.range_key else x.hash_key)

    Table.query = query  # type: ignore[method-assign]
    Table.all_items = all_items  # type: ignore[method-assign]
    _QUERIES_PATCHED = True
