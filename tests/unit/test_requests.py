"""Typed request parsing at the API edge: JSON bodies become the use cases' values, or a 400."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.api.requests import (
    CONNECTION_FIELDS,
    MAX_CONNECTION_FIELD_BYTES,
    SYNC_FIELDS,
    connection_change,
    no_fields,
    sync_request,
)
from chalicelib.domain.errors import ValidationError
from chalicelib.domain.model import ConnectionStatus
from chalicelib.usecases.connections import KEEP, ConnectionChange
from chalicelib.usecases.manual_sync import SyncRequest
from chalicelib.usecases.query_params import parse_limit


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


@pytest.mark.parametrize(
    ("parse", "body"),
    [
        (connection_change, {"provider": "demo", "credential": {"token": "t"}}),
        (connection_change, {"provider": "demo", "Status": "PAUSED"}),
        (sync_request, {"wait": True, "data_types": ["recovery"]}),
        (sync_request, {"force": True}),
        (no_fields, {"dry_run": True}),
    ],
)
def test_an_unknown_top_level_field_is_a_validation_error(parse: Any, body: Any) -> None:
    # Given a body with a field the route does not know (a typo, or a field of another route)
    # When it is parsed / Then it is refused, naming the field, rather than silently ignored
    with pytest.raises(ValidationError) as caught:
        parse(body)
    assert caught.value.message.startswith("unknown field(s) ")
    unknown = next(name for name in body if name not in (*CONNECTION_FIELDS, *SYNC_FIELDS))
    assert repr(unknown) in caught.value.message


def test_unknown_fields_are_listed_sorted_and_cut_short() -> None:
    # Given many unknown fields, one of them very long
    body = {"provider": "demo", "zeta": 1, "alpha": 2, "x" * 500: 3}
    # Then the message names them in order, each at most 64 characters, and says what is accepted
    with pytest.raises(ValidationError) as caught:
        connection_change(body)
    message = caught.value.message
    assert message.startswith(f"unknown field(s) 'alpha', '{'x' * 64}', 'zeta'; it accepts provider, status")
    assert "x" * 65 not in message


@pytest.mark.parametrize("body", [None, {}])
def test_a_route_without_a_body_accepts_nothing_null_or_an_empty_object(body: Any) -> None:
    no_fields(body)


def test_a_route_without_a_body_refuses_a_non_object() -> None:
    with pytest.raises(ValidationError, match="request body must be a JSON object"):
        no_fields([1])


@pytest.mark.parametrize("raw", ["1", "12", "0012", "1000"])
def test_a_limit_of_ascii_digits_is_accepted(raw: str) -> None:
    assert parse_limit(raw, 100, 1000) == int(raw)


@pytest.mark.parametrize(
    "raw",
    [
        "\uff11\uff12",
        "\u0661\u0662",
        " 12",
        "12 ",
        "+12",
        "-1",
        "1_2",
        "1e2",
        "12.0",
        "0x10",
        "",
        "0",
        "1001",
        "9" * 40,
    ],
)
def test_a_limit_that_is_not_plain_ascii_digits_in_range_is_a_validation_error(raw: str) -> None:
    # Given what int() would accept but no client means (fullwidth or Arabic-Indic digits, signs,
    # spaces, underscores), or a number out of range
    # When it is parsed / Then it is a 400 with the usual message
    with pytest.raises(ValidationError, match="limit must be a whole number from 1 to 1000"):
        parse_limit(raw, 100, 1000)


def test_no_limit_is_the_default() -> None:
    assert parse_limit(None, 100, 1000) == 100
