"""Ids entering from routes and from SQS job bodies must match the safe alphabet in full."""

from __future__ import annotations

import json

import pytest

from chalicelib.domain.errors import ValidationError
from chalicelib.domain.model import DatasetKey, Trigger, validate_id
from chalicelib.sync.jobs import Job


@pytest.mark.parametrize("value", ["u1\n", "u1\r\n", "\nu1", "u1 ", "u1#c1", "", "x" * 129, "ü1"])
def test_an_id_with_anything_outside_the_alphabet_anywhere_is_refused(value: str) -> None:
    # Given an id with a character outside the alphabet (a trailing newline included), or the wrong length
    # When it is validated
    # Then it is refused with a message naming the field
    with pytest.raises(ValidationError, match="user_id must be"):
        validate_id("user_id", value)


def test_an_id_of_the_alphabet_is_returned_as_is() -> None:
    # Given an id of letters, digits and . _ : @ - at the longest allowed length
    value = "a.b_c:d@e-" + "z" * 118
    # When it is validated
    # Then it comes back unchanged
    assert validate_id("user_id", value) == value


def test_a_job_body_with_a_trailing_newline_in_an_id_is_refused() -> None:
    # Given an SQS job body whose user_id ends in a newline
    valid = json.loads(Job(DatasetKey("u1", "c1", "recovery"), "r1", Trigger.SCHEDULE, 0.0).to_json())
    body = json.dumps({**valid, "user_id": "u1\n"})
    # When the worker parses it
    # Then it is refused as invalid, before any key is built from it
    with pytest.raises(ValidationError, match="user_id must be"):
        Job.from_json(body)
