"""Two moto costs on every DynamoDB request, taken away without changing a byte that botocore reads.

- ``make_moto_dynamodb_answers_cheap``: moto 5 serializes each DynamoDB answer by walking the
  operation's output shape, value by value (``moto/core/serialize.py``). A DynamoDB answer is
  already JSON in its wire shape (``DynamoResult`` turned every attribute into ``{"S": ...}``), and
  the walk only drops ``None`` members and keys the shape does not know. The fast path drops
  ``None`` members itself and writes the JSON directly; any answer it cannot take as plain JSON
  (bytes, dates, floats), that holds a key the operation's output does not declare, or that reports
  consumed capacity (doubles) goes to moto's serializer as before.
- ``make_moto_server_routing_cheap``: the moto server routes each request by listing moto's
  package directory (about 150 ``isdir`` calls) under the dispatcher's lock; the list never changes.
"""

from __future__ import annotations

import functools
import json
from typing import Any

_ANSWERS_PATCHED = False
_ROUTING_PATCHED = False


def without_none(value: Any) -> Any:
    """``value`` with every ``None`` member of its objects dropped, as moto's serializer drops them."""
    if isinstance(value, dict):
        return {k: without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_none(v) for v in value]
    return value


def _plain(value: Any) -> bool:
    """Only what JSON writes exactly as moto's serializer would: no floats (it may coerce), no bytes or dates."""
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain(v) for v in value)
    return value is None or isinstance(value, str | bool | int) and type(value) in (str, bool, int)


def make_moto_dynamodb_answers_cheap() -> None:
    global _ANSWERS_PATCHED
    if _ANSWERS_PATCHED:
        return
    from moto.core.responses import ActionResult
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.serialized

    def serialized(self: Any, action_result: ActionResult) -> Any:
        result = action_result.result
        if not isinstance(result, dict) or not _plain(result) or not _declared(self, result):
            return original(self, action_result)
        headers = {"Content-Type": "application/x-amz-json-1.0", **self.response_headers}
        return 200, headers, json.dumps(without_none(result))

    DynamoHandler.serialized = serialized  # type: ignore[method-assign]
    _ANSWERS_PATCHED = True


@functools.cache
def _output_members(action: str) -> frozenset[str] | None:
    """The top-level keys DynamoDB's ``action`` may answer with (``None``: unknown operation)."""
    from moto.core.utils import get_service_model

    try:
        output = get_service_model("dynamodb").operation_model(action).output_shape
    except Exception:
        return None
    return frozenset(output.members) if output is not None else frozenset()


_SERIALIZER_ONLY = frozenset({"ConsumedCapacity", "ItemCollectionMetrics"})
"""Members with numbers the serializer writes as doubles (``5.0``) where moto holds ints."""


def _declared(handler: Any, result: dict[str, Any]) -> bool:
    members = _output_members(handler._get_action())
    return members is not None and all(key in members and key not in _SERIALIZER_ONLY for key in result)


def make_moto_server_routing_cheap() -> None:
    global _ROUTING_PATCHED
    if _ROUTING_PATCHED:
        return
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    _ROUTING_PATCHED = True
