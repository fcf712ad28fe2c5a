"""Two rules the document states, over HTTP: unknown body fields are a 400, and numbers are ASCII digits."""

from __future__ import annotations

import json
from urllib.parse import quote

import pytest

from tests.functional.conftest import Harness

_CONNECTION = "/users/u1/connections/c1"


def _error(response: object) -> dict[str, str]:
    body = json.loads(response.body)  # type: ignore[attr-defined]
    return body["error"]  # type: ignore[no-any-return]


def test_an_unknown_field_in_a_connection_body_is_a_400_and_nothing_is_stored(harness: Harness) -> None:
    # Given a PUT whose credentials field is misspelt
    body = {"provider": "demo", "credential": {"token": "secret-demo-token"}}
    # When it is sent
    response = harness.client.http.put(_CONNECTION, headers=harness.headers("u1"), body=json.dumps(body))
    # Then it is refused, naming the field, and no connection was created
    assert response.status_code == 400
    assert _error(response) == {
        "code": "bad_request",
        "message": "unknown field(s) 'credential'; it accepts provider, status, reset_data, credentials, settings, "
        "provider_user_id",
    }
    listed = harness.client.http.get("/users/u1/connections", headers=harness.headers("u1"))
    assert json.loads(listed.body) == {"connections": []}


def test_an_unknown_field_in_a_sync_body_is_a_400(harness: Harness) -> None:
    # Given a connection, and a sync body with a field of another API
    assert harness.put_connection().status_code == 201
    body = json.dumps({"wait": True, "force": True})
    # When it is sent / Then it is a 400 and no sync was queued
    response = harness.client.http.post(_CONNECTION + "/sync", headers=harness.headers("u1"), body=body)
    assert response.status_code == 400
    assert _error(response)["message"].startswith("unknown field(s) 'force'")
    assert harness.queued_bodies() == []


@pytest.mark.parametrize("path", ["/sync/run", "/sync/pause", "/sync/resume"])
def test_an_operator_route_refuses_body_fields_but_takes_an_empty_body(harness: Harness, path: str) -> None:
    headers = harness.headers("ops", operator=True)
    # When a field is sent / Then 400
    refused = harness.client.http.post(path, headers=headers, body=json.dumps({"dry_run": True}))
    assert refused.status_code == 400
    assert _error(refused)["message"] == "unknown field(s) 'dry_run'; this route takes no body"
    # When nothing, or {} is sent / Then the route runs
    assert harness.client.http.post(path, headers=headers, body=b"").status_code == 200
    assert harness.client.http.post(path, headers=headers, body=b"{}").status_code == 200


@pytest.mark.parametrize("limit", ["\uff11\uff12", " 12", "+12", "1_2", "12.0"])
@pytest.mark.parametrize("route", ["/data/recovery", "/runs"])
def test_a_limit_that_int_would_take_but_is_not_ascii_digits_is_a_400(harness: Harness, limit: str, route: str) -> None:
    # Given a connection
    assert harness.put_connection().status_code == 201
    # When a page is asked for with a limit Python's int() accepts
    response = harness.read(f"{_CONNECTION}{route}?limit={quote(limit)}")
    # Then it is a 400, not a page of 12
    assert response.status_code == 400, response.body
    assert _error(response)["message"].startswith("limit must be a whole number from 1 to ")


def test_a_limit_of_ascii_digits_pages_the_runs(harness: Harness) -> None:
    assert harness.put_connection().status_code == 201
    response = harness.read(f"{_CONNECTION}/runs?limit=12")
    assert response.status_code == 200
    assert json.loads(response.body) == {"runs": []}
