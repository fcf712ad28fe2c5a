"""Auth, connections, manual sync, sync-status, runs and input validation through the HTTP API."""

from __future__ import annotations

import json
import logging
from typing import Any

import jwt
import pytest

from chalicelib.api.auth import issue_token
from chalicelib.domain.model import DatasetKey
from tests.functional.conftest import Harness
from tests.functional.test_lifecycle import dataset_items

DATA = "/users/u1/connections/c1/data/recovery"


def body(response: Any) -> dict[str, Any]:
    return json.loads(response.body)


# --- auth -------------------------------------------------------------------


def test_missing_token_is_401(harness: Harness) -> None:
    response = harness.client.http.get("/users/u1/connections")
    assert response.status_code == 401
    assert body(response)["error"]["code"] == "unauthorized"


@pytest.mark.parametrize("header", ["Bearer not-a-jwt", "Basic dTE6cHc=", "Bearer "])
def test_malformed_token_is_401(harness: Harness, header: str) -> None:
    response = harness.client.http.get("/users/u1/connections", headers={"Authorization": header})
    assert response.status_code == 401


def test_forged_token_is_401(harness: Harness) -> None:
    forged = jwt.encode(
        {"sub": "u1", "exp": int(harness.clock.now()) + 60}, "another-secret-entirely-32-bytes!!", "HS256"
    )
    response = harness.client.http.get("/users/u1/connections", headers={"Authorization": f"Bearer {forged}"})
    assert response.status_code == 401


def test_expired_token_is_401(harness: Harness) -> None:
    token = issue_token(harness.settings, "u1", harness.clock.now(), ttl_seconds=60)
    harness.clock.advance(120)
    response = harness.client.http.get("/users/u1/connections", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 401
    assert "expired" in body(response)["error"]["message"]


def test_another_users_data_is_403(harness: Harness) -> None:
    # Given u1's connection
    harness.put_connection()
    # When u2 reads u1's dataset, status and connections
    paths = [DATA, "/users/u1/sync-status", "/users/u1/connections", "/users/u1/connections/c1/runs"]
    # Then every one is forbidden
    for path in paths:
        response = harness.client.http.get(path, headers=harness.headers("u2"))
        assert response.status_code == 403, path
        assert body(response)["error"]["code"] == "forbidden"


def test_operator_token_reaches_any_user(harness: Harness) -> None:
    harness.put_connection()
    response = harness.client.http.get("/users/u1/connections", headers=harness.headers("ops", operator=True))
    assert response.status_code == 200


def test_health_needs_no_token(harness: Harness) -> None:
    assert body(harness.client.http.get("/health")) == {"status": "ok"}


# --- connections --------------------------------------------------------------


def test_connection_lifecycle_never_returns_credentials(harness: Harness) -> None:
    # Given a new connection with credentials
    created = harness.put_connection()
    # Then it is created without echoing the credentials
    assert created.status_code == 201
    assert b"secret-demo-token" not in created.body
    payload = body(created)
    assert "credentials" not in payload
    assert payload["has_credentials"] is True
    assert payload["data_types"] == ["cycle", "recovery", "sleep", "workout"]
    # When it is listed and updated
    listed = harness.client.http.get("/users/u1/connections", headers=harness.headers())
    updated = harness.put_connection(settings={"records": 5})
    # Then the list hides credentials and the update is a 200
    assert "secret-demo-token" not in str(listed.body)
    assert [c["connection_id"] for c in body(listed)["connections"]] == ["c1"]
    assert updated.status_code == 200
    assert body(updated)["settings"] == {"records": 5}


def test_delete_removes_the_connection_its_records_and_state(harness: Harness) -> None:
    # Given a synced dataset
    harness.put_connection(settings={"records": 5})
    assert harness.read(DATA).status_code == 200
    # When the connection is deleted
    deleted = harness.client.http.delete("/users/u1/connections/c1", headers=harness.headers())
    # Then it is gone with everything it cached
    assert deleted.status_code == 204
    assert harness.read(DATA).status_code == 404
    assert harness.container.store.list_states("u1") == []
    assert dataset_items(harness) == []
    again = harness.client.http.delete("/users/u1/connections/c1", headers=harness.headers())
    assert again.status_code == 404


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "body"),
        (json.dumps([1, 2]), "JSON object"),
        (json.dumps({}), "provider is required"),
        (json.dumps({"provider": "nope"}), "unknown provider"),
        (json.dumps({"provider": "demo", "credentials": "x"}), "credentials"),
        (json.dumps({"provider": "demo", "settings": {"failure_rate": 7}}), "failure_rate"),
        (json.dumps({"provider": "demo", "status": "NEEDS_REVIEW"}), "status"),
    ],
)
def test_bad_connection_input_is_a_clear_400(harness: Harness, payload: str, message: str) -> None:
    response = harness.client.http.put("/users/u1/connections/c1", headers=harness.headers(), body=payload)
    assert response.status_code == 400, response.body
    error = body(response)["error"]
    assert error["code"] == "bad_request"
    assert message in error["message"]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/users/u1/connections/nope/data/recovery", 404),
        ("/users/u1/connections/c1/data/unknown-type", 404),
        (DATA + "?limit=0", 400),
        (DATA + "?limit=abc", 400),
        (DATA + "?force_refresh=maybe", 400),
        (DATA + "?next_token=garbage", 400),
        ("/users/u1/connections/c1/runs?limit=-1", 400),
        ("/users/u1/connections/c1/runs?data_type=bogus", 404),
    ],
)
def test_bad_read_input_is_a_clear_error(harness: Harness, path: str, status: int) -> None:
    harness.put_connection(settings={"records": 3})
    response = harness.read(path)
    assert response.status_code == status, response.body
    assert set(body(response)["error"]) == {"code", "message"}


def test_paused_connection_is_not_synced(harness: Harness) -> None:
    harness.put_connection(status="PAUSED")
    response = harness.read(DATA)
    assert response.status_code == 409
    assert body(response)["error"]["code"] == "connection_not_active"


# --- manual sync, status, runs ------------------------------------------------


def test_manual_sync_queues_one_job_per_data_type(harness: Harness) -> None:
    # Given a connection
    harness.put_connection(settings={"records": 5})
    # When a sync of every data type is requested without waiting
    response = harness.client.http.post("/users/u1/connections/c1/sync", headers=harness.headers(), body="{}")
    # Then each data type gets a queued run id, and a repeat reports them as already queued
    payload = body(response)
    assert response.status_code == 202
    assert {s["data_type"] for s in payload["syncs"]} == {"cycle", "recovery", "sleep", "workout"}
    assert all(s["status"] == "queued" and s["run_id"] for s in payload["syncs"])
    repeat = body(harness.client.http.post("/users/u1/connections/c1/sync", headers=harness.headers(), body="{}"))
    assert {s["status"] for s in repeat["syncs"]} == {"already_queued"}
    assert {s["run_id"] for s in repeat["syncs"]} == {s["run_id"] for s in payload["syncs"]}
    # When the worker drains the queue
    jobs = harness.queued_bodies()
    assert len(jobs) == 4
    assert harness.deliver(jobs).payload == {"batchItemFailures": []}
    # Then every dataset is synced and its run is recorded with trigger "force"
    status = body(harness.read("/users/u1/sync-status"))
    datasets = status["connections"][0]["datasets"]
    assert {d["sync_status"] for d in datasets.values()} == {"idle"}
    assert all(d["records_synced"] == 5 for d in datasets.values())
    runs = body(harness.read("/users/u1/connections/c1/runs"))["runs"]
    assert {r["trigger"] for r in runs} == {"force"}
    assert {r["status"] for r in runs} == {"succeeded"}


def test_manual_sync_with_wait_returns_results(harness: Harness) -> None:
    harness.put_connection(settings={"records": 12, "page_size": 5})
    response = harness.client.http.post(
        "/users/u1/connections/c1/sync",
        headers=harness.headers(),
        body=json.dumps({"data_type": "sleep", "wait": True}),
    )
    payload = body(response)
    assert response.status_code == 200
    assert payload["status"] == "completed"
    assert payload["syncs"][0]["inserted"] == 12
    assert payload["syncs"][0]["pages"] == 3


def test_manual_sync_rejects_bad_input(harness: Harness) -> None:
    harness.put_connection()
    url = "/users/u1/connections/c1/sync"
    assert harness.client.http.post(url, headers=harness.headers(), body='{"wait": "yes"}').status_code == 400
    assert harness.client.http.post(url, headers=harness.headers(), body='{"data_type": 3}').status_code == 400
    assert harness.client.http.post(url, headers=harness.headers(), body='{"data_type": "zzz"}').status_code == 404


def test_sync_status_reports_every_dataset(harness: Harness) -> None:
    # Given one synced dataset and three never synced
    harness.put_connection(settings={"records": 4})
    harness.read(DATA)
    harness.clock.advance(400)
    # When the status is read
    payload = body(harness.read("/users/u1/sync-status"))
    # Then it follows seed 004's shape for every data type
    datasets = payload["connections"][0]["datasets"]
    recovery = datasets["recovery"]
    assert recovery["sync_status"] == "idle"
    assert recovery["records_synced"] == 4
    assert recovery["time_since_sync_seconds"] == 400
    assert recovery["needs_sync"] is True
    assert recovery["next_sync_in_seconds"] == 0
    assert recovery["last_error"] is None
    assert datasets["sleep"]["sync_status"] == "never_synced"
    assert datasets["sleep"]["needs_sync"] is True
    assert payload["check_timestamp"].endswith("Z")


def test_runs_expire_after_the_retention_period(harness: Harness) -> None:
    # Given a run recorded today
    harness.put_connection(settings={"records": 2})
    harness.read(DATA)
    assert len(body(harness.read("/users/u1/connections/c1/runs"))["runs"]) == 1
    # When 31 days pass (moto never deletes TTL items)
    harness.clock.advance(31 * 86400)
    # Then the run is no longer listed
    assert body(harness.read("/users/u1/connections/c1/runs"))["runs"] == []


def test_credentials_never_reach_a_log_line(harness: Harness, caplog: pytest.LogCaptureFixture) -> None:
    # Given every log line of the service captured, down to DEBUG for our own code
    caplog.set_level(logging.INFO)
    caplog.set_level(logging.DEBUG, logger="chalicelib")
    # When a connection is created, synced, force-refreshed, failed and listed
    harness.put_connection(settings={"records": 3})
    harness.read(DATA)
    harness.read(DATA + "?force_refresh=true")
    harness.put_connection(settings={"records": 3, "failure_rate": 1})
    harness.read(DATA + "?force_refresh=true")
    harness.client.http.get("/users/u1/connections", headers=harness.headers())
    # Then the secret appears nowhere
    assert caplog.records, "expected the service to log something"
    assert "secret-demo-token" not in caplog.text


def test_one_failing_job_does_not_fail_its_batch(harness: Harness) -> None:
    # Given two queued jobs, one of whose datasets is locked by another worker right now
    harness.put_connection(settings={"records": 3})
    harness.client.http.post("/users/u1/connections/c1/sync", headers=harness.headers(), body="{}")
    jobs = harness.queued_bodies()
    locked = next(j for j in jobs if json.loads(j)["data_type"] == "sleep")
    others = [j for j in jobs if j != locked]
    harness.container.store.acquire_lease(
        DatasetKey("u1", "c1", "sleep"),
        "demo",
        "someone-else",
        harness.clock.now(),
        120,
        job_id=json.loads(locked)["run_id"],
    )
    # When the worker gets them in one batch
    result = harness.deliver([locked, *others])
    # Then only the locked one is reported back for redelivery, and the others synced
    assert len(result.payload["batchItemFailures"]) == 1
    status = body(harness.read("/users/u1/sync-status"))["connections"][0]["datasets"]
    assert status["recovery"]["records_synced"] == 3
    assert status["sleep"]["sync_status"] == "running"


def test_a_malformed_job_is_dropped_not_retried(harness: Harness) -> None:
    result = harness.deliver(["not json", json.dumps({"v": 99})])
    assert result.payload == {"batchItemFailures": []}


def test_a_short_jwt_secret_is_a_configuration_error(make_harness: Any) -> None:
    harness = make_harness(jwt_secret="short")
    response = harness.client.http.get("/users/u1/connections", headers={"Authorization": "Bearer x"})
    assert response.status_code == 500
    assert body(response)["error"]["code"] == "configuration_error"


def test_a_body_without_content_type_is_still_read(harness: Harness) -> None:
    # Given a client that forgets the Content-Type header
    harness.put_connection(settings={"records": 2})
    headers = {"Authorization": harness.headers()["Authorization"]}
    # When it asks for one data type
    response = harness.client.http.post(
        "/users/u1/connections/c1/sync", headers=headers, body=json.dumps({"data_type": "sleep"})
    )
    # Then only that data type is queued, not all four
    assert response.status_code == 202
    assert [s["data_type"] for s in body(response)["syncs"]] == ["sleep"]


@pytest.mark.parametrize("payload", ["[" * 30_000 + "]" * 30_000, "x" * 70_000])
def test_hostile_bodies_are_a_400(harness: Harness, payload: str) -> None:
    response = harness.client.http.put("/users/u1/connections/c1", headers=harness.headers(), body=payload)
    assert response.status_code == 400
    assert body(response)["error"]["code"] == "bad_request"


def test_curl_dash_d_bodies_work(harness: Harness) -> None:
    # Given the Content-Type plain `curl -d` sends
    headers = {**harness.headers(), "Content-Type": "application/x-www-form-urlencoded"}
    body_text = json.dumps({"provider": "demo", "settings": {"records": 2}})
    # When a connection is created that way
    response = harness.client.http.put("/users/u1/connections/c9", headers=headers, body=body_text)
    # Then it is read as JSON
    assert response.status_code == 201, response.body


def test_a_misspelt_demo_setting_is_rejected(harness: Harness) -> None:
    response = harness.put_connection(settings={"latency": 2})
    assert response.status_code == 400
    assert "latency" in body(response)["error"]["message"]
