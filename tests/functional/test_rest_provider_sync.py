"""The generic REST provider driven by the real engine against a `responses`-faked API."""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import urlsplit

import pytest
import responses
from responses import matchers

from chalicelib.providers import registry_from_config

BASE = "https://api.example.test/v1"
CONFIG = {
    "acme": {
        "type": "rest",
        "base_url": BASE,
        "timeout_seconds": 5,
        "page_size": 2,
        "page_size_param": "limit",
        "auth": {"header": "Authorization", "template": "Bearer {access_token}"},
        "pagination": {"response_field": "next_token", "request_param": "nextToken"},
        "incremental": {"request_param": "since"},
        "data_types": {
            "recovery": {
                "path": "/recovery",
                "records_path": "data.records",
                "id_field": "id",
                "updated_at_field": "updated_at",
                "deleted_field": "deleted",
            }
        },
    }
}
DATA = "/users/u1/connections/acme1/data/recovery?limit=50"


def record(rid: int, updated: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "updated_at": updated, "score": rid * 10, **extra}


def test_two_pages_then_an_incremental_second_run(make_harness: Any) -> None:
    # Given an API with 3 records over two pages, stamped before the sync starts (2026-01-01T00:00Z)
    harness = make_harness(registry=registry_from_config(CONFIG))
    created = harness.put_connection(connection_id="acme1", provider="acme", credentials={"access_token": "tok-123"})
    assert created.status_code == 201, created.body
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        auth = matchers.header_matcher({"Authorization": "Bearer tok-123"})
        api.get(
            f"{BASE}/recovery",
            match=[auth, matchers.query_param_matcher({"limit": "2"})],
            json={
                "data": {"records": [record(1, "2025-12-31T20:00:00Z"), record(2, "2025-12-31T21:00:00Z")]},
                "next_token": "p2",
            },
        )
        api.get(
            f"{BASE}/recovery",
            match=[auth, matchers.query_param_matcher({"limit": "2", "nextToken": "p2"})],
            json={"data": {"records": [record(3, "2025-12-31T22:00:00Z")]}, "next_token": None},
        )
        # When the dataset is read for the first time
        first = json.loads(harness.read(DATA).body)
    # Then both pages were stored
    assert first["metadata"]["sync"]["inserted"] == 3
    assert first["metadata"]["sync"]["pages"] == 2
    assert sorted(r["id"] for r in first["data"]) == ["1", "2", "3"]

    # Given, two hours later, one changed record, one new and one tombstone since the last watermark
    harness.clock.advance(7200)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        api.get(
            f"{BASE}/recovery",
            match=[matchers.query_param_matcher({"limit": "2", "since": "2025-12-31T22:00:00Z"})],
            json={
                "data": {
                    "records": [
                        record(2, "2026-01-01T00:30:00Z", score=99),
                        record(4, "2026-01-01T01:00:00Z"),
                        record(1, "2026-01-01T01:30:00Z", deleted=True),
                    ]
                },
                "next_token": "",
            },
        )
        # When the expired dataset is read again
        second = json.loads(harness.read(DATA).body)
    # Then only the changes were fetched and applied
    sync = second["metadata"]["sync"]
    assert (sync["inserted"], sync["updated"], sync["deleted"], sync["pages"]) == (1, 1, 1, 1)
    assert sorted(r["id"] for r in second["data"]) == ["2", "3", "4"]
    assert second["metadata"]["record_count"] == 3
    by_id = {r["id"]: r["data"] for r in second["data"]}
    assert by_id["2"]["score"] == 99


def test_provider_errors_never_leak_credentials(make_harness: Any) -> None:
    # Given an API that rejects the token
    harness = make_harness(registry=registry_from_config(CONFIG))
    harness.put_connection(connection_id="acme1", provider="acme", credentials={"access_token": "tok-SECRET"})
    with responses.RequestsMock() as api:
        api.get(f"{BASE}/recovery", status=401, json={"error": "bad token tok-SECRET"})
        # When the dataset is read
        response = harness.read(DATA)
    # Then the error says what happened without echoing the secret
    assert response.status_code == 502
    text = response.body.decode() if isinstance(response.body, bytes) else str(response.body)
    assert "401" in text
    assert "tok-SECRET" not in text


def test_a_rest_connection_can_be_paused_without_resending_its_secrets(make_harness: Any) -> None:
    # Given a REST connection with credentials
    harness = make_harness(registry=registry_from_config(CONFIG))
    harness.put_connection(connection_id="acme1", provider="acme", credentials={"access_token": "tok-123"})
    # When it is paused with a body that omits the credentials
    paused = harness.client.http.put(
        "/users/u1/connections/acme1",
        headers=harness.headers(),
        body=json.dumps({"provider": "acme", "status": "PAUSED"}),
    )
    # Then the stored credentials are kept
    assert paused.status_code == 200, paused.body
    assert json.loads(paused.body)["has_credentials"] is True
    stored = harness.container.store.get_connection("u1", "acme1")
    assert stored is not None
    assert harness.container.vault.open(stored.sealed_credentials, "u1", "acme1") == {"access_token": "tok-123"}


def test_credentials_an_http_header_cannot_carry_are_rejected(make_harness: Any) -> None:
    harness = make_harness(registry=registry_from_config(CONFIG))
    response = harness.put_connection(connection_id="acme1", provider="acme", credentials={"access_token": "tök€n"})
    assert response.status_code == 400
    assert "Latin-1" in json.loads(response.body)["error"]["message"]
    assert "tök€n" not in str(response.body)


def test_rest_failures_keep_credentials_out_of_logs_and_history(
    make_harness: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given every log line captured, and a provider that rejects the token and then breaks
    caplog.set_level(logging.DEBUG, logger="chalicelib")
    harness = make_harness(registry=registry_from_config(CONFIG))
    harness.put_connection(connection_id="acme1", provider="acme", credentials={"access_token": "tok-SECRET"})
    with responses.RequestsMock() as api:
        api.get(f"{BASE}/recovery", status=401, json={"error": "bad token tok-SECRET"})
        harness.read(DATA)
    harness.clock.advance(3600)
    with responses.RequestsMock() as api:
        api.get(f"{BASE}/recovery", body=ConnectionError("connection reset while sending tok-SECRET"))
        harness.read(DATA + "&force_refresh=true")
    # Then the secret is in no log line, no run record and no sync status
    runs = harness.read("/users/u1/connections/acme1/runs").body
    status = harness.read("/users/u1/sync-status").body
    assert caplog.records
    assert "tok-SECRET" not in caplog.text
    assert b"tok-SECRET" not in runs
    assert b"tok-SECRET" not in status
    assert b"401" in runs


# --- pagination kinds, hostile answers and bad records through the real engine ---------------------------------

LINKED = {
    "linked": {
        "type": "rest",
        "base_url": BASE,
        "page_size": 2,
        "page_size_param": "per_page",
        "auth": {"header": "X-Api-Key", "template": "{api_key}"},
        "pagination": {"kind": "link_header"},
        "data_types": {"recovery": {"path": "/recovery", "id_field": "id", "updated_at_field": "updated_at"}},
    }
}
LINKED_DATA = "/users/u1/connections/lk1/data/recovery"


def test_link_header_pages_are_all_stored_and_a_bad_record_is_skipped(make_harness: Any) -> None:
    # Given an API paging through Link headers, whose first page holds one record without an id
    harness = make_harness(registry=registry_from_config(LINKED))
    harness.put_connection(connection_id="lk1", provider="linked", credentials={"api_key": "key-123"})
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        key = matchers.header_matcher({"X-Api-Key": "key-123"})
        api.get(
            f"{BASE}/recovery",
            match=[key, matchers.query_param_matcher({"per_page": "2"})],
            json=[record(1, "2025-12-31T20:00:00Z"), {"updated_at": "2025-12-31T20:30:00Z", "note": "no id"}],
            headers={"Link": f'<{BASE}/recovery?per_page=2&page=2>; rel="next", <{BASE}/recovery?page=2>; rel="last"'},
        )
        api.get(
            f"{BASE}/recovery",
            match=[key, matchers.query_param_matcher({"per_page": "2", "page": "2"})],
            json=[record(2, "2025-12-31T21:00:00Z")],
            headers={"Link": f'<{BASE}/recovery?per_page=2&page=1>; rel="first"'},
        )
        # When the dataset is read
        body = json.loads(harness.read(LINKED_DATA).body)
    # Then both pages were stored, the record without an id left out and counted
    assert sorted(r["id"] for r in body["data"]) == ["1", "2"]
    sync = body["metadata"]["sync"]
    assert (sync["inserted"], sync["pages"]) == (2, 2)
    assert sync["skipped"] == 1


def test_a_next_link_off_the_origin_fails_the_sync_and_is_never_called(make_harness: Any) -> None:
    # Given an API whose Link header points the next page at another host
    harness = make_harness(registry=registry_from_config(LINKED))
    harness.put_connection(connection_id="lk1", provider="linked", credentials={"api_key": "key-123"})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        api.get(
            f"{BASE}/recovery",
            json=[record(1, "2025-12-31T20:00:00Z"), record(2, "2025-12-31T20:30:00Z")],
            headers={"Link": '<https://collector.evil.test/v1/recovery?page=2>; rel="next"'},
        )
        stolen = api.get("https://collector.evil.test/v1/recovery", json=[])
        # When the dataset is read
        response = harness.read(LINKED_DATA)
        # Then the other host never saw a call (nor the key), and the sync failed naming the pagination kind
        assert stolen.call_count == 0
        assert all("evil" not in (call.request.url or "") for call in api.calls)
    assert response.status_code == 502
    text = response.body.decode()
    assert "link_header" in text
    assert "evil" not in text


def test_a_redirect_is_never_followed_with_the_key(make_harness: Any) -> None:
    # Given an API that redirects to another host
    harness = make_harness(registry=registry_from_config(LINKED))
    harness.put_connection(connection_id="lk1", provider="linked", credentials={"api_key": "key-123"})
    with responses.RequestsMock(assert_all_requests_are_fired=False) as api:
        api.get(f"{BASE}/recovery", status=307, headers={"Location": "https://collector.evil.test/steal"})
        stolen = api.get("https://collector.evil.test/steal", json=[])
        # When the dataset is read
        response = harness.read(LINKED_DATA)
        # Then the redirect was not followed: the key never left the provider's origin
        assert stolen.call_count == 0
        assert {urlsplit(call.request.url or "").hostname for call in api.calls} == {"api.example.test"}
    assert response.status_code == 502
    assert b"307" in response.body


TRADES = {
    "exchange": {
        "type": "rest",
        "base_url": "https://api.exchange.test",
        # Generous limits: the fake clock stands still while no one waits for a token, so windows are exact
        "limits": {"requests_per_second": 100, "burst": 100},
        "page_size": 2,
        "page_size_param": "limit",
        "pagination": {
            "kind": "time_window",
            "start_param": "startTime",
            "end_param": "endTime",
            "window_seconds": 86_400,
            "initial_lookback_seconds": 2 * 86_400,
            "record_time_field": "time",
        },
        "data_types": {
            "trades": {
                "path": "/api/v3/myTrades",
                "settings_query": {"symbol": "symbol"},
                "updated_at_field": "time",
                "weight": 20,
            }
        },
    }
}


def test_time_windows_walk_the_lookback_then_resume_from_the_watermark(make_harness: Any) -> None:
    # Given an exchange with 24 h windows in ms, two days of lookback, and a connection trading BTCUSDT
    harness = make_harness(registry=registry_from_config(TRADES))
    created = harness.put_connection(
        connection_id="ex1", provider="exchange", credentials={}, settings={"symbol": "BTCUSDT"}
    )
    assert created.status_code == 201, created.body
    now_ms = int(harness.clock.now() * 1000)
    day = 86_400_000
    start = now_ms - 2 * day
    url = "https://api.exchange.test/api/v3/myTrades"

    def window(begin: int, end: int) -> list[Any]:
        return [
            matchers.query_param_matcher(
                {"symbol": "BTCUSDT", "limit": "2", "startTime": str(begin), "endTime": str(end)}
            )
        ]

    def trade(trade_id: int, at: int) -> dict[str, Any]:
        return {"symbol": "BTCUSDT", "id": trade_id, "orderId": 900 + trade_id, "qty": "0.1", "time": at}

    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        # The first day fills a page, so the next window starts just after its newest trade
        api.get(url, match=window(start, start + day), json=[trade(1, start + 1000), trade(2, start + 2000)])
        api.get(url, match=window(start + 2001, start + 2001 + day), json=[trade(3, start + 3000)])
        api.get(url, match=window(start + 2001 + day, now_ms), json=[trade(4, now_ms - 3_600_000)])
        # When the dataset is read for the first time
        first = json.loads(harness.read("/users/u1/connections/ex1/data/trades").body)
    # Then every window was fetched once and every trade stored
    assert sorted(r["id"] for r in first["data"]) == ["1", "2", "3", "4"]
    assert first["metadata"]["sync"]["pages"] == 3

    # Given, two hours later, one new trade
    harness.clock.advance(7200)
    later_ms = int(harness.clock.now() * 1000)
    # The first pass listed everything up to its end: the next one starts there, less the 5-minute look-back
    watermark = now_ms - 300_000
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        api.get(url, match=window(watermark, later_ms), json=[trade(5, later_ms - 60_000)])
        # When the expired dataset is read again
        second = json.loads(harness.read("/users/u1/connections/ex1/data/trades").body)
    # Then one window from where the last listing ended to now was enough
    assert second["metadata"]["sync"]["inserted"] == 1
    assert sorted(r["id"] for r in second["data"]) == ["1", "2", "3", "4", "5"]
