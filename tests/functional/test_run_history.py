"""Run history after a crash: a redelivered job's run resumes and counts across its attempts, a run whose
process died is marked abandoned by the next sync, and ``record_count`` stays exact across a hand-off."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import pytest

from chalicelib.domain.upstream import DataTypeSpec, FetchRequest, Page, UpstreamRecord
from chalicelib.providers import ProviderRegistry
from tests.functional.conftest import Harness, counting_demo


class Crash(BaseException):
    """The process dies: nothing in the engine may catch it."""


def _runs(harness: Harness, data_type: str) -> list[dict[str, Any]]:
    return list(json.loads(harness.read(f"/users/u1/connections/c1/runs?data_type={data_type}").body)["runs"])


def _record_count(harness: Harness, data_type: str) -> int:
    datasets = json.loads(harness.read("/users/u1/sync-status").body)["connections"][0]["datasets"]
    return int(datasets[data_type]["records_synced"])


def test_a_redelivered_job_resumes_its_run_and_its_counts_add_up(make_harness: Any) -> None:
    # Given a queued job whose worker dies fetching the third of three pages, after storing two
    crash = {"armed": True}

    def die_on_page_three(request: FetchRequest) -> None:
        if request.page_token == "20" and crash["armed"]:
            crash["armed"] = False
            raise Crash()

    registry, _ = counting_demo(before_fetch=die_on_page_three)
    harness = make_harness(registry=registry)
    harness.put_connection(settings={"records": 30, "page_size": 10})
    queued = harness.client.http.post(
        "/users/u1/connections/c1/sync", headers=harness.headers(), body=json.dumps({"data_type": "sleep"})
    )
    assert queued.status_code == 202, queued.body
    jobs = harness.queued_bodies()
    with pytest.raises(Crash):
        harness.deliver(jobs)
    # When SQS redelivers the same message after the lease expired
    harness.clock.advance(harness.settings.lease_ttl_seconds + 1)
    assert harness.deliver(jobs).payload == {"batchItemFailures": []}
    # Then it is one run, on its second attempt, resumed from its own checkpoint, counting both attempts
    [run] = _runs(harness, "sleep")
    assert run["status"] == "succeeded"
    assert run["attempt"] == 2
    assert run["resumed_from_checkpoint"] == run["run_id"]
    assert (run["inserted"], run["pages"]) == (30, 3)
    assert _record_count(harness, "sleep") == 30


def test_a_run_whose_process_died_is_marked_abandoned_by_the_next_sync(make_harness: Any) -> None:
    # Given a read's sync that dies on its third page (its run recorded as running at its first checkpoint)
    crash = {"armed": True}

    def die_on_page_three(request: FetchRequest) -> None:
        if request.page_token == "20" and crash["armed"]:
            crash["armed"] = False
            raise Crash()

    registry, _ = counting_demo(before_fetch=die_on_page_three)
    harness = make_harness(registry=registry)
    harness.put_connection(settings={"records": 30, "page_size": 10})
    with pytest.raises(Crash):
        harness.container.reader.read("u1", "c1", "recovery", {})
    [dead] = _runs(harness, "recovery")
    assert dead["status"] == "running"
    # When its lease expires and the next read's sync takes the dataset over
    harness.clock.advance(harness.settings.lease_ttl_seconds + 1)
    answer = harness.read("/users/u1/connections/c1/data/recovery?limit=100")
    assert answer.status_code == 200
    # Then the dead run says abandoned, the new one resumed its pass, and the count is exact
    runs = {r["run_id"]: r for r in _runs(harness, "recovery")}
    assert runs.pop(dead["run_id"])["status"] == "abandoned"
    [after] = runs.values()
    assert after["status"] == "succeeded"
    assert after["resumed_from_checkpoint"] == dead["run_id"]
    assert after["inserted"] == 10
    assert _record_count(harness, "recovery") == 30


class Listing:
    """A provider whose passes list everything but never sweep (``complete_listing=False``): ``record_count``
    grows only by what the runs count, so a hand-off that loses a run's count shows."""

    name = "listing"

    def __init__(self, records: int, before_fetch: Callable[[FetchRequest], None]) -> None:
        self._records = records
        self._before_fetch = before_fetch

    def data_types(self) -> Mapping[str, DataTypeSpec]:
        return {"items": DataTypeSpec("items", incremental=False, complete_listing=False)}

    def validate_connection(self, credentials: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        return None

    def fetch_page(self, request: FetchRequest) -> Page:
        self._before_fetch(request)
        offset = int(request.page_token or 0)
        ids = range(offset, min(offset + 2, self._records))
        more = offset + 2 < self._records
        records = [UpstreamRecord(f"item-{i}", {"n": i}) for i in ids]
        return Page(records=records, next_page_token=str(offset + 2) if more else None)


def test_record_count_is_exact_after_a_handed_off_pass(make_harness: Any) -> None:
    # Given a read whose budget runs out on the second of three pages, so a job finishes the pass
    state: dict[str, Any] = {}

    def slow_second_page(request: FetchRequest) -> None:
        if request.page_token == "2" and "slowed" not in state:
            state["slowed"] = True
            state["harness"].clock.advance(state["harness"].settings.read_budget_seconds + 1)

    harness = make_harness(registry=ProviderRegistry({"listing": Listing(6, slow_second_page)}))
    state["harness"] = harness
    assert harness.put_connection(provider="listing").status_code == 201
    assert harness.read("/users/u1/connections/c1/data/items").status_code in (200, 202)
    # When the worker runs the continuation
    jobs = harness.queued_bodies()
    assert len(jobs) == 1
    assert harness.deliver(jobs).payload == {"batchItemFailures": []}
    # Then the two runs split the inserts, and the dataset counts all six records
    runs = sorted(_runs(harness, "items"), key=lambda r: r["created_at"])
    assert [(r["status"], r["inserted"]) for r in runs] == [("handed_off", 4), ("succeeded", 2)]
    assert _record_count(harness, "items") == 6
