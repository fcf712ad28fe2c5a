"""Two moto costs on every DynamoDB request, taken away without changing a byte that botocore reads.

- ``make_moto_dynamodb_answers_cheap``: moto 5 serializes each DynamoDB answer by walking the
  operation's output shape, value by value (``moto/core/serialize.py`` in the moto package). A DynamoDB answer is
  already JSON in its wire shape (``DynamoResult`` turned every attribute into ``{"S": ...}``), and
  the walk only drops ``None`` members and keys the shape does not know. The fast path drops
  ``None`` members itself and writes the JSON directly; any answer it cannot take as plain JSON
  (bytes, dates, floats outside consumed capacity, whose numbers are all doubles) or that holds a key
  the operation's output does not declare goes to moto's serializer as before.
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
    return value is None or (isinstance(value, str | bool | int) and type(value) in (str, bool, int))


def _doubles(value: Any) -> Any:
    """Every number in ``value`` as a float: consumed capacity's members are all doubles (``0.5``, ``1.0``)."""
    if isinstance(value, dict):
        return {k: _doubles(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_doubles(v) for v in value]
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def fast_answer(handler: Any, result: object) -> tuple[int, dict[str, Any], str] | None:
    """What moto's serializer would answer for this DynamoDB ``result``, or ``None`` if it must say it itself."""
    if not isinstance(result, dict) or result.get("ItemCollectionMetrics") or not _declared(handler, result):
        return None
    capacity = result.get("ConsumedCapacity")
    rest = {k: v for k, v in result.items() if k != "ConsumedCapacity"}
    if not _plain(rest) or not _plain(_ints(capacity)):
        return None
    if capacity is not None:
        rest["ConsumedCapacity"] = _doubles(capacity)
    headers = {"Content-Type": "application/x-amz-json-1.0", **handler.response_headers}
    return 200, headers, json.dumps(without_none(rest))


def _ints(value: Any) -> Any:
    """``value`` with its floats as ints, for ``_plain`` to judge the rest of it."""
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return 0 if type(value) is float else value


def make_moto_dynamodb_answers_cheap() -> None:
    global _ANSWERS_PATCHED
    if _ANSWERS_PATCHED:
        return
    from moto.core.responses import ActionResult
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.serialized

    def serialized(self: Any, action_result: ActionResult) -> Any:
        return fast_answer(self, action_result.result) or original(self, action_result)

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


def _declared(handler: Any, result: dict[str, Any]) -> bool:
    members = _output_members(handler._get_action())
    return members is not None and all(key in members for key in result)


def make_moto_server_routing_cheap() -> None:
    global _ROUTING_PATCHED
    if _ROUTING_PATCHED:
        return
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]
    _ROUTING_PATCHED = True
