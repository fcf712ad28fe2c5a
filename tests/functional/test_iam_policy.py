"""The explicit IAM policy (autogen_policy is off) must allow every AWS call the service makes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.client
import pytest

from tests.functional.conftest import Harness

POLICY = json.loads((Path(__file__).resolve().parents[2] / ".chalice" / "policy.json").read_text())
# Calls whose IAM permission has another name; a transaction needs the actions inside it.
IMPLIED_ACTIONS = {
    "dynamodb:TransactWriteItems": {"dynamodb:ConditionCheckItem", "dynamodb:PutItem", "dynamodb:UpdateItem"},
    "sqs:SendMessageBatch": {"sqs:SendMessage"},
}
TEST_ONLY = {"sqs:CreateQueue", "sqs:ReceiveMessage", "sqs:DeleteMessage", "dynamodb:CreateTable"}


@pytest.fixture
def recorded_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[set[str]]:
    calls: set[str] = set()
    original = botocore.client.BaseClient._make_api_call

    def record(client: Any, operation: str, params: Any) -> Any:
        calls.add(f"{client.meta.service_model.signing_name}:{operation}")
        return original(client, operation, params)

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", record)
    yield calls


def test_the_policy_allows_every_call_of_a_full_lifecycle(harness: Harness, recorded_calls: set[str]) -> None:
    # Given a user who creates a connection, reads through every tier, forces, syncs in the background,
    # lists status and runs, lets the schedule sync it, and deletes it; and an operator who pauses,
    # resumes and looks at the service status
    harness.put_connection(settings={"records": 12, "page_size": 5})
    harness.read("/users/u1/connections/c1/data/recovery")
    harness.read("/users/u1/connections/c1/data/recovery?limit=5")
    harness.clock.advance(600)
    harness.read("/users/u1/connections/c1/data/recovery")
    harness.deliver(harness.queued_bodies())
    harness.read("/users/u1/connections/c1/data/recovery?force_refresh=true")
    harness.client.http.post("/users/u1/connections/c1/sync", headers=harness.headers(), body='{"wait": true}')
    harness.read("/users/u1/sync-status")
    harness.read("/users/u1/connections/c1/runs")
    harness.clock.advance(3601)
    assert harness.sync_everything_due()["queued"] == 3  # the schedule's tick and its jobs
    harness.operator("POST", "/sync/pause")
    harness.operator("POST", "/sync/resume")
    harness.operator("GET", "/sync/status")
    harness.client.http.delete("/users/u1/connections/c1", headers=harness.headers())
    # Then every call it made is allowed by .chalice/policy.json
    allowed = {action for statement in POLICY["Statement"] for action in statement["Action"]}
    needed: set[str] = set()
    for call in recorded_calls - TEST_ONLY:
        needed |= IMPLIED_ACTIONS.get(call, {call})
    assert "dynamodb:Query" in needed  # the recording works
    assert {"dynamodb:TransactWriteItems", "sqs:SendMessageBatch", "dynamodb:BatchGetItem"} <= recorded_calls
    assert needed - allowed == set()
