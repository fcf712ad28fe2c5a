"""Make moto's DynamoDB writes atomic across threads, as DynamoDB's are per item.

moto evaluates a condition and applies the write in plain Python with no lock,
so two threads can both pass the same condition. Real DynamoDB never allows
that; without this patch a single-flight test would measure moto, not our code.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_LOCK = threading.RLock()
_PATCHED = False
_WRITE_METHODS = ("put_item", "update_item", "delete_item", "transact_write_items", "get_item")


def make_moto_dynamodb_atomic() -> None:
    global _PATCHED
    if _PATCHED:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for name in _WRITE_METHODS:
        original = getattr(DynamoDBBackend, name)

        def locked(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _LOCK:
                return __original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, functools.wraps(original)(locked))
    _PATCHED = True
