"""A sync's start on the provider gate against moto (``ProviderGuard.start``): what it writes and when not."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.client import BaseClient

from chalicelib.domain.clock import FakeClock
from chalicelib.domain.config import Settings
from chalicelib.providers import ProviderRegistry
from chalicelib.store.dynamo import DynamoStore
from chalicelib.store.items import LimitItem
from chalicelib.store.shared import holders_of
from chalicelib.sync.pacing import ProviderGuard, gate_key

PROVIDER = "demo"  # the default limits: one shared window of 10 calls a second, burst 10; 10 slots


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counter[str]]:
    counted: Counter[str] = Counter()
    original = BaseClient._make_api_call

    def counting(self: BaseClient, operation_name: str, api_params: dict[str, Any]) -> Any:
        counted[operation_name] += 1
        return original(self, operation_name, api_params)

    monkeypatch.setattr(BaseClient, "_make_api_call", counting)
    yield counted


def _holders() -> dict[str, float]:
    return holders_of(LimitItem.get(gate_key(PROVIDER), consistent_read=True))


def test_a_start_that_must_wait_for_the_windows_holds_no_slot_and_writes_nothing(
    store: DynamoStore, calls: Counter[str]
) -> None:
    # Given worker a started with a first call that took the whole burst
    clock = FakeClock()
    guard = ProviderGuard(store.shared, ProviderRegistry({}), Settings())
    assert guard.start(PROVIDER, "a", clock.now(), weight=10).take is not None
    calls.clear()
    # When worker b starts at the same instant (on another instance: its own guard, no memory of the item)
    b_guard = ProviderGuard(DynamoStore().shared, ProviderRegistry({}), Settings())
    start = b_guard.start(PROVIDER, "b", clock.now())
    # Then b is told to wait for one token, and the gate still shows a alone: b wrote nothing, read once
    # (one BatchGetItem: the gate and the legacy bucket item it may still find, together)
    assert start.waits_for_weight
    assert start.take is not None and start.take.retry_after_seconds == pytest.approx(0.1)
    assert calls == Counter({"BatchGetItem": 1})
    assert list(_holders()) == ["a"]


def test_a_start_once_the_window_refilled_takes_a_slot_and_the_weight_in_one_write(
    store: DynamoStore, calls: Counter[str]
) -> None:
    # Given worker a emptied the window, and a tenth of a second went by
    clock = FakeClock()
    guard = ProviderGuard(store.shared, ProviderRegistry({}), Settings())
    guard.start(PROVIDER, "a", clock.now(), weight=10)
    clock.advance(0.1)
    calls.clear()
    # When worker b starts on the same instance (which remembers the item it wrote)
    start = guard.start(PROVIDER, "b", clock.now())
    # Then b holds a slot and the refilled token, in one UpdateItem and no read
    assert start.slot_wait is None and start.take is not None and start.take.granted
    assert calls == Counter({"UpdateItem": 1})
    assert sorted(_holders()) == ["a", "b"]
