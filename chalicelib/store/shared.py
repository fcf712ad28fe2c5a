"""State every Lambda shares, one item each in the limits table: a provider's gate (breaker, running
syncs, rate windows, statistics), per-connection windows, per-user refresh buckets, the scheduler.

Every change is a read-decide-write guarded by the item's ``version``. The read is skipped when this
instance wrote or read the item last: it decides on what it knows and writes guarded by that version.
When someone else wrote in between, the failed write hands back the item as it is now
(``ReturnValuesOnConditionCheckFailure``) and the decision is made again on it, so a lost race costs
one call, not a read and a write.

Timeline of one shared item (v = version):
  instance A reads v3, decides, writes "version = 3"      -> v4, A remembers v4 (ALL_NEW)
  A decides again on v4 without reading, writes           -> v5
  instance B (knows v3) writes "version = 3": fails       -> the failure returns v5; B decides on it
  B writes "version = 5"                                   -> v6
  A decides "nothing to write" on v5 (a wait): A reads     -> never waits on a stale view
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import ClientError
from pynamodb.attributes import MapAttribute
from pynamodb.expressions.condition import Condition

from chalicelib.domain.errors import StoreBusyError
from chalicelib.domain.limits import Bucket, take
from chalicelib.store.items import LimitItem

T = TypeVar("T")
_ATTEMPTS = 8
CONDITION_FAILED = "ConditionalCheckFailedException"
_UNKNOWN = object()


@dataclass(frozen=True)
class SharedUpdate:
    """An unguarded update of one shared item, to ride in another write's transaction."""

    pk: str
    actions: tuple[Any, ...]


def shared_json(item: LimitItem | None) -> dict[str, Any] | None:
    """The JSON document a shared item holds; ``None`` if it has none."""
    return json.loads(item.data_json) if item is not None and item.data_json else None


def shared_json_write(document: Mapping[str, Any]) -> list[Any]:
    """The update action that stores a shared item's JSON document (compact, the way every writer writes it)."""
    return [LimitItem.data_json.set(json.dumps(document, separators=(",", ":")))]


def holders_of(item: LimitItem | None) -> dict[str, float]:
    """A gate's running syncs: owner -> slot expiry."""
    if item is None or item.holders is None:
        return {}
    raw: dict[str, Any] = item.holders.as_dict()  # type: ignore[no-untyped-call]
    return {str(owner): float(expiry) for owner, expiry in raw.items()}


def holder_path(owner: str) -> Any:
    """The document path of one holder inside a gate's ``holders`` map (for SET and REMOVE)."""
    path: Any = LimitItem.holders
    return path[owner]


def holder_actions(item: LimitItem | None, after: Mapping[str, float]) -> list[Any]:
    """The update actions that turn a gate's holders into ``after`` (one path each, so a release that
    lands meanwhile, which removes only its own path, is never undone)."""
    before = holders_of(item)
    if item is None or item.holders is None:
        return [LimitItem.holders.set(dict(after))]
    actions: list[Any] = [holder_path(owner).remove() for owner in before if owner not in after]
    actions += [holder_path(owner).set(expiry) for owner, expiry in after.items() if before.get(owner) != expiry]
    return actions


def chunks(items: Sequence[str], size: int) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class SharedStore:
    """The limits table. One instance per container (a Lambda): it remembers the items it last saw."""

    def __init__(self) -> None:
        self._known: dict[str, LimitItem | None] = {}
        self._lock = threading.Lock()

    def update(
        self,
        pk: str,
        decide: Callable[[LimitItem | None], tuple[T, list[Any] | None]],
        *,
        attempts: int = _ATTEMPTS,
        companion: str | None = None,
        confirm_no_write: bool | Callable[[T], bool] = True,
    ) -> T:
        """Read-decide-write on one shared item, guarded by its ``version``.

        ``confirm_no_write``: a "nothing to write" decided on the remembered item is confirmed by a read;
        ``False`` (or a predicate of the answer saying so) where that answer can only be a lower bound of
        the truth (a wait for tokens: other writers only take, and a write after the wait that meets a
        newer version decides again).
        ``companion``: another item to read in the same call when this one must be read (``peek`` then
        has it for ``decide``: an item an earlier version kept the same state in).

        ``decide`` gets the item (``None`` if absent) and returns the answer plus the update actions,
        or ``None`` for "nothing to write". Two Lambdas can never both act on the same version.
        """
        with self._lock:
            known = self._known.get(pk, _UNKNOWN)
        fresh = known is _UNKNOWN
        item = self._read(pk, companion) if fresh else known
        assert item is None or isinstance(item, LimitItem)
        for _ in range(attempts):
            result, actions = decide(item)
            if actions is None:
                confirm = confirm_no_write(result) if callable(confirm_no_write) else confirm_no_write
                if fresh or not confirm:
                    return result
                item, fresh = self._read(pk, companion), True  # never answer "wait" or "nothing to do" from memory
                continue
            version = None if item is None or item.version is None else int(item.version)
            unchanged = LimitItem.version.does_not_exist() if version is None else LimitItem.version == version
            written, item = self._write_if(pk, [*actions, LimitItem.version.set((version or 0) + 1)], unchanged)
            fresh = True
            if written:
                return result
        raise StoreBusyError("too many concurrent writers on the same shared limit; try again")

    def take_token(self, bucket_key: str, bucket: Bucket, now: float, *, attempts: int = _ATTEMPTS) -> float | None:
        """Take one token from a shared bucket; ``None`` when granted, else seconds until one is free."""

        def decide(item: LimitItem | None) -> tuple[float | None, list[Any] | None]:
            result = take(bucket, item.tokens if item else None, item.updated_at if item else None, now)
            if not result.granted:
                return result.retry_after_seconds, None
            return None, [LimitItem.tokens.set(result.tokens_after), LimitItem.updated_at.set(now)]

        return self.update(bucket_key, decide, attempts=attempts)

    def update_json(
        self,
        pk: str,
        decide: Callable[[dict[str, Any] | None], tuple[T, dict[str, Any] | None]],
        *,
        attempts: int = _ATTEMPTS,
    ) -> T:
        """``update`` for state kept as one JSON document (the scheduler, refresh buckets)."""

        def on_item(item: LimitItem | None) -> tuple[T, list[Any] | None]:
            result, changed = decide(shared_json(item))
            return result, (None if changed is None else shared_json_write(changed))

        return self.update(pk, on_item, attempts=attempts)

    def add(self, pk: str, actions: list[Any]) -> None:
        """An update that needs no read and no guard (ADD counters, REMOVE one's own holder path).

        It does not move the version: nothing it changes is something a guarded decision relies on
        being unchanged (a released slot only makes room)."""
        self._write_if(pk, actions, None)

    def forget_holder(self, pk: str, owner: str) -> None:
        """Another write (a sync's final transaction) removed ``owner``'s holder path: so does the memory,
        or the next start here would count a slot that is free and read the item to be sure."""
        with self._lock:
            known = self._known.get(pk)
            if isinstance(known, LimitItem) and known.holders is not None:
                remaining = {name: expiry for name, expiry in holders_of(known).items() if name != owner}
                known.holders = MapAttribute(**remaining)  # type: ignore[no-untyped-call]

    def get_json(self, pk: str) -> dict[str, Any] | None:
        return shared_json(self._read(pk))

    def get(self, pk: str) -> LimitItem | None:
        return self._read(pk)

    def get_many(self, pks: Sequence[str]) -> dict[str, LimitItem]:
        """Several shared items in one BatchGetItem (status pages, the tick's breaker check)."""
        found: dict[str, LimitItem] = {}
        for chunk in chunks(list(dict.fromkeys(pks)), 100):
            for item in LimitItem.batch_get(chunk):
                found[item.pk] = item
        return found

    def peek(self, pk: str) -> LimitItem | None:
        """The item as this instance last saw it, without a call (``None`` if never seen or absent)."""
        with self._lock:
            known = self._known.get(pk)
        return known if isinstance(known, LimitItem) else None

    def _read(self, pk: str, companion: str | None = None) -> LimitItem | None:
        if companion is not None:
            found = {item.pk: item for item in LimitItem.batch_get([pk, companion], consistent_read=True)}
            self._remember(companion, found.get(companion))
            self._remember(pk, found.get(pk))
            return found.get(pk)
        try:
            item: LimitItem | None = LimitItem.get(pk, consistent_read=True)
        except LimitItem.DoesNotExist:
            item = None
        self._remember(pk, item)
        return item

    def _remember(self, pk: str, item: LimitItem | None) -> None:
        with self._lock:
            self._known[pk] = item

    def _write_if(self, pk: str, actions: list[Any], condition: Condition | None) -> tuple[bool, LimitItem | None]:
        """One conditional UpdateItem: (written, the item as it is now), the failure's copy when it failed."""
        table = LimitItem._get_connection()
        request = table.get_operation_kwargs(
            pk,
            actions=actions,
            condition=condition,
            return_values="ALL_NEW",
            return_values_on_condition_failure=None if condition is None else "ALL_OLD",
        )
        try:
            answer = table.connection.client.update_item(**request)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != CONDITION_FAILED:
                raise
            raw = exc.response.get("Item")
            current = LimitItem.from_raw_data(raw) if raw else None
            self._remember(pk, current)
            return False, current
        after = LimitItem.from_raw_data(answer["Attributes"])
        self._remember(pk, after)
        return True, after
