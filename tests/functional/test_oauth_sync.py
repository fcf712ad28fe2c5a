"""An OAuth2 `rest` provider synced end to end: refresh before expiry, once after a 401, never a loop,
and no secret anywhere a person or a log pipeline could read it.

The API and token endpoint are `responses` fakes shaped on WHOOP's (``POST /oauth/oauth2/token``
with ``grant_type=refresh_token``, a rotated refresh token and ``expires_in`` in the answer,
``400 {"error": "invalid_grant"}`` for a spent refresh token).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import boto3
import pytest
import responses
from responses import matchers

from chalicelib.domain.model import ConnectionStatus, DatasetKey
from chalicelib.providers import registry_from_config
from tests.functional.conftest import Harness

API = "https://api.prod.whoop.com/developer"
TOKEN_URL = "https://api.prod.whoop.com/oauth/oauth2/token"
CLIENT_SECRET = "app-client-secret-Zq81"
OLD_ACCESS = "old-access-token-Kd02"
OLD_REFRESH = "old-refresh-token-Hh37"
NEW_ACCESS = "new-access-token-Pp55"
NEW_REFRESH = "new-refresh-token-Wx90"
SECRETS = (CLIENT_SECRET, OLD_ACCESS, OLD_REFRESH, NEW_ACCESS, NEW_REFRESH)
DATA = "/users/u1/connections/w1/data/recovery"

CONFIG = {
    "whoopish": {
        "type": "rest",
        "base_url": API,
        "page_size": 25,
        "page_size_param": "limit",
        "auth": {
            "kind": "oauth2",
            "token_url": TOKEN_URL,
            "client_id_env": "TEST_WHOOP_CLIENT_ID",
            "client_secret_env": "TEST_WHOOP_CLIENT_SECRET",
            "scopes": ["offline", "read:recovery"],
            "refresh_skew_seconds": 300,
        },
        "pagination": {"kind": "body_cursor", "response_field": "next_token", "request_param": "nextToken"},
        "data_types": {
            "recovery": {
                "path": "/v2/recovery",
                "records_path": "records",
                "id_field": "cycle_id",
                "updated_at_field": "updated_at",
                "policy": {"cooldown_seconds": 300, "max_staleness_seconds": 7200, "schedule_every_seconds": 3600},
            }
        },
    }
}

RECOVERY_PAGE = {
    "records": [
        {
            "cycle_id": 93845,
            "sleep_id": "ecfc6a15-4661-442f-a9a4-f160dd7afae8",
            "user_id": 10129,
            "created_at": "2025-12-30T11:25:44.774Z",
            "updated_at": "2025-12-30T14:25:44.774Z",
            "score_state": "SCORED",
            "score": {"recovery_score": 44, "resting_heart_rate": 64, "hrv_rmssd_milli": 31.8},
        }
    ]
}


@pytest.fixture(autouse=True)
def _app_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    # The app's client id and secret are deployment configuration, never part of a connection.
    monkeypatch.setenv("TEST_WHOOP_CLIENT_ID", "app-client-id")
    monkeypatch.setenv("TEST_WHOOP_CLIENT_SECRET", CLIENT_SECRET)


def connect(harness: Harness, *, expires_in: float) -> None:
    response = harness.put_connection(
        connection_id="w1",
        provider="whoopish",
        credentials={
            "access_token": OLD_ACCESS,
            "refresh_token": OLD_REFRESH,
            "expires_at": harness.clock.now() + expires_in,
        },
        provider_user_id="10129",
    )
    assert response.status_code == 201, response.body


def token_answer() -> dict[str, Any]:
    return {
        "access_token": NEW_ACCESS,
        "refresh_token": NEW_REFRESH,
        "expires_in": 3600,
        "scope": "offline read:recovery",
        "token_type": "bearer",
    }


def bearer(token: str) -> Any:
    return matchers.header_matcher({"Authorization": f"Bearer {token}"})


def test_an_expired_token_is_refreshed_once_and_nothing_secret_leaks_anywhere(
    make_harness: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a connection whose access token expired a minute ago, with every log line captured
    caplog.set_level(logging.DEBUG)
    harness = make_harness(registry=registry_from_config(CONFIG))
    connect(harness, expires_in=-60)
    seen: list[str] = []
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        token_call = api.post(TOKEN_URL, json=token_answer())
        data_call = api.get(f"{API}/v2/recovery", match=[bearer(NEW_ACCESS)], json=RECOVERY_PAGE)

        # When the dataset is read (a full sync) and every user and operator route is asked
        read = harness.read(DATA)
        for path in (
            "/users/u1/connections",
            "/users/u1/connections/w1/runs",
            "/users/u1/sync-status",
        ):
            seen.append(harness.read(path).body.decode())
        seen.append(harness.operator("GET", "/sync/status").body.decode())

    # Then exactly one token call spent the old refresh token, with the app's credentials in the form
    assert token_call.call_count == 1 and data_call.call_count == 1
    form = parse_qs(str(token_call.calls[0].request.body))
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == [OLD_REFRESH]
    assert form["client_secret"] == [CLIENT_SECRET]
    # And the read got the record
    assert read.status_code == 200, read.body
    assert [r["id"] for r in json.loads(read.body)["data"]] == ["93845"]
    seen.append(read.body.decode())
    # And the rotated token was stored (sealed) before use: the next sync needs no refresh
    connection = harness.container.store.get_connection("u1", "w1", consistent=True)
    assert connection is not None and connection.credentials_version >= 2
    opened = harness.container.credentials.open(connection)
    assert opened["refresh_token"] == NEW_REFRESH and opened["access_token"] == NEW_ACCESS
    # And no secret appears in any response, log line, run record or stored item
    seen += [record.getMessage() for record in caplog.records]
    seen += [str(record.exc_info) for record in caplog.records if record.exc_info]
    dynamodb = boto3.client("dynamodb", region_name="us-east-1")
    for table in ("smart-sync-connections", "smart-sync-runs", "smart-sync-datasets", "smart-sync-limits"):
        seen.append(json.dumps(dynamodb.scan(TableName=table)["Items"]))
    everything = "\n".join(seen)
    for secret in SECRETS:
        assert secret not in everything, f"a secret leaked: {secret[:6]}..."


def test_a_401_to_a_token_that_looks_valid_refreshes_once_and_retries(make_harness: Callable[..., Harness]) -> None:
    # Given a token valid for another hour that the provider revoked early
    harness = make_harness(registry=registry_from_config(CONFIG))
    connect(harness, expires_in=3600)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        refused = api.get(f"{API}/v2/recovery", match=[bearer(OLD_ACCESS)], status=401, json={})
        token_call = api.post(TOKEN_URL, json=token_answer())
        accepted = api.get(f"{API}/v2/recovery", match=[bearer(NEW_ACCESS)], json=RECOVERY_PAGE)

        # When the dataset is read
        read = harness.read(DATA)

    # Then the 401 led to one refresh and one retry with the new token
    assert read.status_code == 200, read.body
    assert (refused.call_count, token_call.call_count, accepted.call_count) == (1, 1, 1)


def test_a_second_401_after_a_refresh_is_a_failure_not_a_loop(make_harness: Callable[..., Harness]) -> None:
    # Given a provider that refuses even freshly refreshed tokens
    harness = make_harness(registry=registry_from_config(CONFIG))
    connect(harness, expires_in=3600)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        refused = api.get(f"{API}/v2/recovery", status=401, json={})
        token_call = api.post(TOKEN_URL, json=token_answer())

        # When the dataset is read
        read = harness.read(DATA)

    # Then one refresh, two refused calls, and a clear upstream error (not a 500)
    assert (token_call.call_count, refused.call_count) == (1, 2)
    assert read.status_code == 502, read.body
    assert "credentials rejected" in json.loads(read.body)["error"]["message"]


def test_a_refused_refresh_token_needs_review_at_once_and_leaves_the_schedule(
    make_harness: Callable[..., Harness],
) -> None:
    # Given an expired token whose refresh token the provider no longer accepts
    harness = make_harness(registry=registry_from_config(CONFIG))
    connect(harness, expires_in=-60)
    with responses.RequestsMock(assert_all_requests_are_fired=True) as api:
        token_call = api.post(TOKEN_URL, status=400, json={"error": "invalid_grant"})

        # When the dataset is read, then read again
        first = harness.read(DATA)
        second = harness.read(DATA)

    # Then the token endpoint was asked once: no retry loop, the provider API never called
    assert token_call.call_count == 1
    assert first.status_code == 502, first.body
    # And the connection needs review, saying why, and is off the schedule
    connection = harness.container.store.get_connection("u1", "w1", consistent=True)
    assert connection is not None and connection.status is ConnectionStatus.NEEDS_REVIEW
    assert connection.status_reason is not None and "invalid_grant" in connection.status_reason
    state = harness.container.store.get_state(DatasetKey("u1", "w1", "recovery"))
    assert state is not None and state.next_sync_at is None
    # And the next read says what to do instead of trying again
    assert token_call.call_count == 1
    assert "connect again" in json.loads(second.body)["error"]["message"]
