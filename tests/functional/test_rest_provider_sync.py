"""The generic REST provider driven by the real engine against a `responses`-faked API."""

from __future__ import annotations

import json
import logging
from typing import Any

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
    # Given an API with 3 records over two pages
    harness = make_harness(registry=registry_from_config(CONFIG))
    created = harness.put_connection(connection_id="acme1", provider="acme", credentials={"access_token": "tok-123"})
    assert created.status_code == 201, created.body
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        auth = matchers.header_matcher({"Authorization": "Bearer tok-123"})
        api.get(
            f"{BASE}/recovery",
            match=[auth, matchers.query_param_matcher({"limit": "2"})],
            json={
                "data": {"records": [record(1, "2026-01-01T00:00:00Z"), record(2, "2026-01-01T01:00:00Z")]},
                "next_token": "p2",
            },
        )
        api.get(
            f"{BASE}/recovery",
            match=[auth, matchers.query_param_matcher({"limit": "2", "nextToken": "p2"})],
            json={"data": {"records": [record(3, "2026-01-01T02:00:00Z")]}, "next_token": None},
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
            match=[matchers.query_param_matcher({"limit": "2", "since": "2026-01-01T02:00:00Z"})],
            json={
                "data": {
                    "records": [
                        record(2, "2026-01-02T00:00:00Z", score=99),
                        record(4, "2026-01-02T01:00:00Z"),
                        record(1, "2026-01-02T02:00:00Z", deleted=True),
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
    assert stored is not None and dict(stored.credentials) == {"access_token": "tok-123"}


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
