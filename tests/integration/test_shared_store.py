"""``SharedStore`` against moto: two instances (two Lambdas) sharing one limits item.

Calls are counted at botocore (``BaseClient._make_api_call``), which every PynamoDB call and the
store's own ``update_item`` go through, so a hidden read would show.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from botocore.client import BaseClient

from chalicelib.store.dynamo import DynamoStore
from chalicelib.store.items import LimitItem
from chalicelib.store.shared import SharedStore, holder_actions, holder_path, holders_of

PK = "gate#whoop"
COMPANION = "bucket#whoop"

Decide = Callable[[LimitItem | None], tuple[Any, list[Any] | None]]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    """DynamoDB operations made, by name (``GetItem``, ``UpdateItem``, ``BatchGetItem``...)."""
    counted: Counter[str] = Counter()
    original = BaseClient._make_api_call

    def counting(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        counted[operation_name] += 1
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    yield counted


def _count_up(seen: list[LimitItem | None]) -> Decide:
    """A decision that adds one token to the item, noting every item it was asked about."""

    def decide(item: LimitItem | None) -> tuple[float, list[Any] | None]:
        seen.append(item)
        tokens = (item.tokens or 0.0) if item is not None else 0.0
        return tokens + 1, [LimitItem.tokens.set(tokens + 1)]

    return decide


def _take_one(seen: list[LimitItem | None]) -> Decide:
    """A decision that takes one token when there is one, else answers "wait" and writes nothing."""

    def decide(item: LimitItem | None) -> tuple[str, list[Any] | None]:
        seen.append(item)
        tokens = (item.tokens or 0.0) if item is not None else 0.0
        if tokens < 1:
            return "wait", None
        return "taken", [LimitItem.tokens.set(tokens - 1)]

    return decide


def _stored(pk: str = PK) -> LimitItem:
    return LimitItem.get(pk, consistent_read=True)


def _lambdas(store: DynamoStore) -> tuple[SharedStore, SharedStore]:
    return store.shared, SharedStore()


def test_a_write_against_a_stale_version_decides_again_on_the_item_the_failure_returned(
    store: DynamoStore, calls: Counter[str]
) -> None:
    # Given Lambda A wrote version 1, then Lambda B read it and wrote version 2
    a, b = _lambdas(store)
    a.update(PK, _count_up([]))
    b.update(PK, _count_up([]))
    assert _stored().version == 2
    calls.clear()
    # When A, which still knows version 1, counts up again
    seen: list[LimitItem | None] = []
    answer = a.update(PK, _count_up(seen))
    made = Counter(calls)
    # Then its guarded write failed, it decided again on version 2 as the failure returned it, and wrote version 3
    assert [(item.version, item.tokens) if item else None for item in seen] == [(1, 1), (2, 2)]
    assert answer == 3
    assert (_stored().version, _stored().tokens) == (3, 3)
    # And the lost race cost one extra UpdateItem, no read
    assert made == Counter({"UpdateItem": 2})


def test_an_instance_that_wrote_last_decides_from_memory_in_one_call(store: DynamoStore, calls: Counter[str]) -> None:
    # Given Lambda A wrote the item last
    a, _ = _lambdas(store)
    a.update(PK, _count_up([]))
    calls.clear()
    # When A counts up again
    a.update(PK, _count_up([]))
    # Then it wrote without reading first
    assert calls == Counter({"UpdateItem": 1})
    assert _stored().version == 2


def test_nothing_to_write_decided_from_memory_is_confirmed_by_a_fresh_read(
    store: DynamoStore, calls: Counter[str]
) -> None:
    # Given Lambda A knows the item with no token left; Lambda B then put a token back
    a, b = _lambdas(store)
    a.update(PK, lambda item: (None, [LimitItem.tokens.set(0)]))
    b.update(PK, _count_up([]))
    calls.clear()
    # When A tries to take a token
    seen: list[LimitItem | None] = []
    answer = a.update(PK, _take_one(seen))
    # Then its "wait" from memory was checked by a read, which found B's token and took it
    assert [item.tokens if item else None for item in seen] == [0, 1]
    assert answer == "taken"
    assert calls == Counter({"GetItem": 1, "UpdateItem": 1})
    assert (_stored().version, _stored().tokens) == (3, 0)


def test_nothing_to_write_after_a_fresh_read_is_the_answer(store: DynamoStore, calls: Counter[str]) -> None:
    # Given Lambda A knows the item with no token left, and nobody changed it
    a, _ = _lambdas(store)
    a.update(PK, lambda item: (None, [LimitItem.tokens.set(0)]))
    calls.clear()
    # When A tries to take a token
    seen: list[LimitItem | None] = []
    answer = a.update(PK, _take_one(seen))
    # Then it read once to confirm, answered "wait" and wrote nothing
    assert answer == "wait"
    assert len(seen) == 2
    assert calls == Counter({"GetItem": 1})
    assert _stored().version == 1


def test_a_first_look_is_one_read_and_nothing_to_write_needs_no_second(store: DynamoStore, calls: Counter[str]) -> None:
    # Given an item Lambda B never saw, holding no token
    a, b = _lambdas(store)
    a.update(PK, lambda item: (None, [LimitItem.tokens.set(0)]))
    calls.clear()
    # When B tries to take a token
    answer = b.update(PK, _take_one([]))
    # Then its first read was fresh: one GetItem, no second read
    assert answer == "wait"
    assert calls == Counter({"GetItem": 1})


def test_add_never_moves_the_version(store: DynamoStore, calls: Counter[str]) -> None:
    # Given the item at version 1, known to Lambdas A and B
    a, b = _lambdas(store)
    a.update(PK, _count_up([]))
    b.update(PK, lambda item: ("looked", None))
    assert _stored().version == 1
    # When A adds to a counter without a guard
    a.add(PK, [LimitItem.total_syncs.add(1)])
    # Then the counter moved and the version did not
    assert (_stored().version, _stored().total_syncs) == (1, 1)
    # And B, still knowing version 1, writes guarded by it at the first try
    calls.clear()
    b.update(PK, _count_up([]))
    assert calls == Counter({"UpdateItem": 1})
    assert (_stored().version, _stored().total_syncs, _stored().tokens) == (2, 1, 2)


def test_add_on_an_item_never_written_leaves_it_without_a_version(store: DynamoStore) -> None:
    # Given no item yet
    a, _ = _lambdas(store)
    # When a statistic is added to it
    a.add(PK, [LimitItem.total_syncs.add(1)])
    # Then the item exists without a version, and the first guarded write makes it version 1
    added = _stored()
    assert added.version is None
    assert added.total_syncs == 1
    SharedStore().update(PK, _count_up([]))
    assert _stored().version == 1


def test_a_companion_is_read_in_the_same_call_and_peek_sees_it(store: DynamoStore, calls: Counter[str]) -> None:
    # Given a gate item and the legacy item an earlier version kept the same state in
    SharedStore().update(PK, _count_up([]))
    LimitItem(COMPANION, tokens=7.0, updated_at=100.0).save()
    a = store.shared
    calls.clear()
    # When A, which never saw either, updates the gate with the legacy item as companion
    peeked: list[LimitItem | None] = []

    def decide(item: LimitItem | None) -> tuple[None, list[Any] | None]:
        peeked.append(a.peek(COMPANION))
        return None, [LimitItem.tokens.set(5)]

    a.update(PK, decide, companion=COMPANION)
    # Then both were read in one BatchGetItem, then one write; the decision saw the companion
    assert calls == Counter({"BatchGetItem": 1, "UpdateItem": 1})
    assert [item.tokens if item else None for item in peeked] == [7.0]
    assert _stored().version == 2


def test_a_companion_that_does_not_exist_is_peeked_as_none(store: DynamoStore, calls: Counter[str]) -> None:
    # Given neither the gate item nor its companion exists
    a = store.shared
    # When A updates the gate with the companion
    peeked: list[LimitItem | None] = []

    def decide(item: LimitItem | None) -> tuple[None, list[Any] | None]:
        peeked.append(a.peek(COMPANION))
        return None, [LimitItem.tokens.set(5)]

    a.update(PK, decide, companion=COMPANION)
    # Then one BatchGetItem answered both as absent, and the gate was created
    assert peeked == [None]
    assert calls["BatchGetItem"] == 1 and calls["GetItem"] == 0
    assert _stored().version == 1


def test_a_known_item_skips_the_companion_read(store: DynamoStore, calls: Counter[str]) -> None:
    # Given A read the gate and its companion once
    a = store.shared
    LimitItem(COMPANION, tokens=7.0, updated_at=100.0).save()
    a.update(PK, _count_up([]), companion=COMPANION)
    calls.clear()
    # When A updates the gate again
    a.update(PK, _count_up([]), companion=COMPANION)
    # Then no read at all: the gate is known, and the companion is still there to peek
    assert calls == Counter({"UpdateItem": 1})
    peeked = a.peek(COMPANION)
    assert peeked is not None and peeked.tokens == 7.0


def test_peek_is_none_for_an_item_never_seen(store: DynamoStore, calls: Counter[str]) -> None:
    # Given an item that exists but this instance never read
    LimitItem(COMPANION, tokens=7.0).save()
    calls.clear()
    # When it is peeked
    # Then nothing is known and no call was made
    assert store.shared.peek(COMPANION) is None
    assert not calls


def _set_holders(holders: dict[str, float]) -> Decide:
    def decide(item: LimitItem | None) -> tuple[None, list[Any] | None]:
        return None, holder_actions(item, holders)

    return decide


def test_holder_actions_create_the_map_on_a_gate_without_one(store: DynamoStore) -> None:
    # Given a gate item with no holders map yet
    store.shared.update(PK, _count_up([]))
    # When a first holder joins
    store.shared.update(PK, _set_holders({"a": 100.0}))
    # Then the map holds it
    assert holders_of(_stored()) == {"a": 100.0}


def test_holder_actions_touch_only_changed_paths_so_a_release_meanwhile_stays(store: DynamoStore) -> None:
    # Given holders a and b, known to Lambda A
    a, b = _lambdas(store)
    a.update(PK, _set_holders({"a": 100.0, "b": 200.0}))
    known = a.peek(PK)
    # When b's sync ends meanwhile (an unguarded REMOVE of its own path, from Lambda B)...
    b.add(PK, [holder_path("b").remove()])
    # ...and A, deciding on what it knew, drops expired "a" and adds "c" (b unchanged in its view)
    after = {"b": 200.0, "c": 300.0}
    actions = holder_actions(known, after)
    a.update(PK, _set_holders(after))
    # Then only a's and c's paths were written: b's release was not undone
    assert len(actions) == 2
    assert holders_of(_stored()) == {"c": 300.0}


def test_holder_actions_for_unchanged_holders_are_nothing_to_write(store: DynamoStore, calls: Counter[str]) -> None:
    # Given holders a and b, freshly read by Lambda B
    a, b = _lambdas(store)
    a.update(PK, _set_holders({"a": 100.0, "b": 200.0}))
    calls.clear()
    # When B decides the same holders
    b.update(PK, lambda item: (None, holder_actions(item, holders_of(item)) or None))
    # Then there was nothing to write: one read
    assert calls == Counter({"GetItem": 1})
    assert _stored().version == 1
