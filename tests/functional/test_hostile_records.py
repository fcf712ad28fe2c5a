"""One record the store cannot hold never fails a dataset; the watermark never runs ahead of the pass."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import responses

from chalicelib.domain.clock import FakeClock, from_iso, to_iso
from chalicelib.domain.model import DatasetKey
from chalicelib.domain.records import MAX_RECORD_ID_BYTES, MAX_RECORD_JSON_BYTES
from chalicelib.domain.upstream import DataTypeSpec, FetchRequest, Page, PolicyDefaults, SkippedRecord, UpstreamRecord
from chalicelib.providers import ProviderRegistry, registry_from_config

DATA = "/users/u1/connections/c1/data/notes"
POLICY = PolicyDefaults(cooldown_seconds=60, max_staleness_seconds=600, schedule_every_seconds=None)


class ScriptedProvider:
    """Answers each fetch with the next scripted page and remembers what it was asked."""

    name = "scripted"

    def __init__(self, pages: list[Page]) -> None:
        self.pages = pages
        self.requests: list[FetchRequest] = []

    def data_types(self) -> Mapping[str, DataTypeSpec]:
        return {"notes": DataTypeSpec("notes", POLICY)}

    def validate_connection(self, credentials: Mapping[str, Any], settings: Mapping[str, Any]) -> None:
        return None

    def fetch_page(self, request: FetchRequest) -> Page:
        self.requests.append(request)
        return self.pages[min(len(self.requests) - 1, len(self.pages) - 1)]


def body(response: Any) -> dict[str, Any]:
    return json.loads(response.body)


def test_records_the_store_cannot_hold_are_skipped_counted_and_named(make_harness: Any) -> None:
    # Given a page with two good records, one too large for a DynamoDB item, one with an oversized id,
    # and one the provider itself could not parse
    page = Page(
        records=[
            UpstreamRecord("good-1", {"n": 1}),
            UpstreamRecord("huge", {"blob": "x" * (MAX_RECORD_JSON_BYTES + 10)}),
            UpstreamRecord("i" * (MAX_RECORD_ID_BYTES + 1), {"n": 3}),
            UpstreamRecord("good-2", {"n": 2}),
        ],
        skipped=[SkippedRecord(reason="missing_id")],
    )
    provider = ScriptedProvider([page])
    harness = make_harness(registry=ProviderRegistry({"scripted": provider}))
    assert harness.put_connection(provider="scripted", credentials={"k": "v"}).status_code == 201

    # When the dataset is read for the first time
    response = harness.read(DATA)

    # Then the good records are served, and the metadata says how many were left out
    assert response.status_code == 200, response.body
    payload = body(response)
    assert sorted(r["id"] for r in payload["data"]) == ["good-1", "good-2"]
    assert payload["metadata"]["skipped_records"] == 3
    assert "left out" in payload["metadata"]["warning"]
    # And the run names each one by reason (ids cut short)
    runs = body(harness.read("/users/u1/connections/c1/runs"))["runs"]
    assert runs[0]["skipped"] == 3
    reasons = sorted(entry.split(":")[0] for entry in runs[0]["skipped_records"])
    assert reasons == ["id_too_long", "missing_id", "record_too_large"]
    assert all(len(entry) < 100 for entry in runs[0]["skipped_records"])


def test_the_incremental_watermark_is_capped_at_the_pass_start_minus_the_lookback(make_harness: Any) -> None:
    # Given a provider whose newest record carries a stamp later than the pass start (edited during the pass)
    harness_clock_start = 1_767_225_600.0
    provider = ScriptedProvider([Page(records=[])])
    harness = make_harness(
        registry=ProviderRegistry({"scripted": provider}),
        clock=FakeClock(harness_clock_start),
        watermark_lookback_seconds=300,
    )
    future_stamp = to_iso(harness_clock_start + 30)
    provider.pages = [Page(records=[UpstreamRecord("a", {"n": 1}, updated_at=future_stamp)])]
    assert harness.put_connection(provider="scripted", credentials={"k": "v"}).status_code == 201

    # When the first (full) pass completes
    assert harness.read(DATA).status_code == 200

    # Then the watermark is not the newest stamp but the pass start minus five minutes
    state = harness.container.store.get_state(DatasetKey("u1", "c1", "notes"))
    assert state is not None and state.watermark is not None
    assert from_iso(state.watermark) == harness_clock_start - 300


class ListsEverything(ScriptedProvider):
    """A provider that ignores ``since`` (no incremental filter): it always lists every record."""

    def data_types(self) -> Mapping[str, DataTypeSpec]:
        return {"notes": DataTypeSpec("notes", POLICY, incremental=False)}


def test_a_provider_without_an_incremental_filter_sees_upstream_deletions_on_the_next_pass(
    make_harness: Any,
) -> None:
    # Given a provider that lists two records, then only one of them (the other deleted upstream)
    provider = ListsEverything(
        [
            Page(records=[UpstreamRecord("a", {"n": 1}, updated_at="2025-01-01T00:00:00Z"), UpstreamRecord("b", {})]),
            Page(records=[UpstreamRecord("a", {"n": 1}, updated_at="2025-01-01T00:00:00Z")]),
        ]
    )
    harness = make_harness(registry=ProviderRegistry({"scripted": provider}))
    assert harness.put_connection(provider="scripted", credentials={"k": "v"}).status_code == 201
    assert harness.read(DATA).status_code == 200

    # When the second pass runs (a forced read, well before the daily full pass)
    second = harness.read(DATA + "?force_refresh=true")

    # Then it was asked without a watermark and the vanished record is gone at once
    assert second.status_code == 200, second.body
    assert provider.requests[1].since is None
    assert [r["id"] for r in body(second)["data"]] == ["a"]
    assert body(second)["metadata"]["sync"]["deleted"] == 1


def test_a_time_window_pass_without_records_still_moves_the_next_start_forward(make_harness: Any) -> None:
    # Given a trades-like API listed in day windows over a three-day look-back, with no trades at all
    config = {
        "trades": {
            "type": "rest",
            "base_url": "https://api.example.test",
            "pagination": {
                "kind": "time_window",
                "start_param": "startTime",
                "end_param": "endTime",
                "window_seconds": 86_400,
                "time_format": "epoch_ms",
                "initial_lookback_seconds": 3 * 86_400,
            },
            "data_types": {
                "fills": {
                    "path": "/fills",
                    "id_field": "id",
                    "updated_at_field": "time",
                    "policy": {"cooldown_seconds": 60, "max_staleness_seconds": 600},
                }
            },
        }
    }
    harness = make_harness(registry=registry_from_config(config))
    assert harness.put_connection(connection_id="t1", provider="trades", credentials={}).status_code == 201
    first_pass_at = harness.clock.now()
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        walk = api.get("https://api.example.test/fills", json=[])
        assert harness.read("/users/u1/connections/t1/data/fills").status_code == 200
    assert walk.call_count == 3  # the whole look-back, one call a day

    # When the next pass runs ten minutes later
    harness.clock.advance(600)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        recent = api.get("https://api.example.test/fills", json=[])
        assert harness.read("/users/u1/connections/t1/data/fills").status_code == 200

    # Then it starts where the last pass's listing ended (less the look-back margin), in one call
    assert recent.call_count == 1
    sent = parse_qs(urlsplit(recent.calls[0].request.url or "").query)
    assert sent["startTime"] == [str(int((first_pass_at - 300) * 1000))]
