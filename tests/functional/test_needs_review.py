"""NEEDS_REVIEW is cleared by new credentials only: no other PUT brings a broken connection back."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import pytest

from chalicelib.domain.model import ConnectionStatus
from tests.functional.conftest import Harness

REASON = "provider 'demo' rejected the credentials 3 times in a row"


def body(response: Any) -> Any:
    return json.loads(response.body)


def _needing_review(harness: Harness) -> None:
    assert harness.put_connection().status_code == 201
    stored = harness.container.store.get_connection("u1", "c1")
    assert stored is not None
    harness.container.store.put_connection(
        replace(stored, status=ConnectionStatus.NEEDS_REVIEW, status_reason=REASON, auth_failures=3)
    )


@pytest.mark.parametrize(
    "change",
    [
        {"settings": {"records": 3}},
        {"status": "ACTIVE"},
        {"status": "PAUSED"},
        {"reset_data": True},
        {"provider_user_id": "someone"},
    ],
)
def test_a_put_without_new_credentials_leaves_the_connection_needing_review(
    harness: Harness, change: dict[str, Any]
) -> None:
    # Given a connection the sync marked NEEDS_REVIEW
    _needing_review(harness)
    # When the user PUTs it with the same credentials and another change
    response = harness.put_connection(**change)
    # Then the PUT is saved, but the connection still needs review, for the same reason
    assert response.status_code == 200
    assert (body(response)["status"], body(response)["status_reason"]) == ("NEEDS_REVIEW", REASON)
    stored = harness.container.store.get_connection("u1", "c1")
    assert stored is not None and stored.status is ConnectionStatus.NEEDS_REVIEW and stored.auth_failures == 3
    # And the schedule leaves it alone
    assert harness.tick()["queued"] == 0


def test_a_put_leaving_the_credentials_out_leaves_the_connection_needing_review(harness: Harness) -> None:
    # Given a connection the sync marked NEEDS_REVIEW
    _needing_review(harness)
    # When the user PUTs it without credentials
    response = harness.client.http.put(
        "/users/u1/connections/c1", headers=harness.headers("u1"), body=json.dumps({"provider": "demo"})
    )
    # Then it still needs review
    assert response.status_code == 200 and body(response)["status"] == "NEEDS_REVIEW"


def test_new_credentials_clear_needs_review(harness: Harness) -> None:
    # Given a connection the sync marked NEEDS_REVIEW
    _needing_review(harness)
    # When the user sends new credentials
    response = harness.put_connection(credentials={"token": "a-new-token"})
    # Then it is ACTIVE again, its reason and count cleared, and due at once
    assert response.status_code == 200
    assert (body(response)["status"], body(response)["status_reason"]) == ("ACTIVE", None)
    stored = harness.container.store.get_connection("u1", "c1")
    assert stored is not None and stored.auth_failures == 0
    assert harness.tick()["queued"] == 3
