"""Typed request parsing at the API edge: JSON bodies become the use cases' values, or a 400."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.api.requests import MAX_CONNECTION_FIELD_BYTES, connection_change, sync_request
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.model import ConnectionStatus
from chalicelib.usecases.connections import KEEP, ConnectionChange
from chalicelib.usecases.manual_sync import SyncRequest


def test_a_full_connection_body_becomes_its_change() -> None:
    # Given every field a PUT may carry
    body = {
        "provider": "whoop",
        "status": "PAUSED",
        "reset_data": True,
        "credentials": {"access_token": "at"},
        "settings": {"region": "eu"},
        "provider_user_id": 10129,
    }
    # When it is parsed / Then each field is typed (a numeric provider user id becomes text)
    assert connection_change(body) == ConnectionChange(
        provider="whoop",
        status=ConnectionStatus.PAUSED,
        reset_data=True,
        credentials={"access_token": "at"},
        settings={"region": "eu"},
        provider_user_id="10129",
    )


def test_fields_left_out_keep_what_is_stored() -> None:
    change = connection_change({"provider": "demo"})
    assert (change.status, change.reset_data) == (ConnectionStatus.ACTIVE, False)
    assert (change.credentials, change.settings, change.provider_user_id) == (KEEP, KEEP, KEEP)


def test_null_sends_empty_credentials_and_clears_the_provider_user_id() -> None:
    # Given explicit nulls / Then they are values, not "keep"
    change = connection_change({"provider": "demo", "credentials": None, "settings": None, "provider_user_id": None})
    assert (change.credentials, change.settings, change.provider_user_id) == ({}, {}, None)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (None, "provider is required"),
        ([], "request body must be a JSON object"),
        ({"provider": ""}, "provider is required"),
        ({"provider": "demo", "status": "NEEDS_REVIEW"}, "status may be ACTIVE or PAUSED"),
        ({"provider": "demo", "reset_data": "yes"}, "reset_data must be true or false"),
        ({"provider": "demo", "credentials": "token"}, "credentials must be a JSON object"),
        ({"provider": "demo", "settings": [1]}, "settings must be a JSON object"),
        ({"provider": "demo", "provider_user_id": True}, "provider_user_id must be a string or a whole number"),
        ({"provider": "demo", "provider_user_id": "a#b"}, "provider_user_id must be 1-128 characters"),
        (
            {"provider": "demo", "credentials": {"k": "x" * MAX_CONNECTION_FIELD_BYTES}},
            f"credentials must be at most {MAX_CONNECTION_FIELD_BYTES} bytes of JSON",
        ),
    ],
)
def test_a_malformed_connection_body_is_a_validation_error(body: Any, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        connection_change(body)
    assert caught.value.message.startswith(message)


def test_a_sync_body_may_be_empty() -> None:
    assert sync_request(None) == SyncRequest(wait=False, data_type=None)
    assert sync_request({"wait": True, "data_type": "recovery"}) == SyncRequest(wait=True, data_type="recovery")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"wait": "true"}, "wait must be true or false"),
        ({"data_type": 3}, "data_type must be a string"),
        ("now", "request body must be a JSON object"),
    ],
)
def test_a_malformed_sync_body_is_a_validation_error(body: Any, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        sync_request(body)
    assert caught.value.message == message
