"""Each function's IAM policy (autogen_policy is off) must allow every AWS call that function makes, on that resource.

The policies are ``.chalice/policy-<function>.json``; they name the template's resources
(``Fn::GetAtt``/``Fn::Sub``), which chalice copies into each function's role in the packaged template.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import botocore.client
import chalice.test as chalice_test
import pytest

from tests.functional.conftest import TEST_KMS_ALIAS, Harness

CHALICE_DIR = Path(__file__).resolve().parents[2] / ".chalice"
FUNCTIONS = ("api_handler", "sync_worker", "sync_schedule")
# A transaction needs the actions inside it (recorded one by one below), a batch send the single one.
TRANSACTION_ACTIONS = {
    "ConditionCheck": "ConditionCheckItem",
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
}
RENAMED = {"sqs:SendMessageBatch": "sqs:SendMessage"}

Grant = tuple[str, str]
"""(IAM action, resource as the policy names it: ``<Logical.Arn>`` or ``<Logical.Arn>/index/name``)."""


def policy_grants(function: str) -> set[Grant]:
    document = json.loads((CHALICE_DIR / f"policy-{function}.json").read_text())
    grants: set[Grant] = set()
    for statement in document["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        for resource in resources:
            if "Fn::GetAtt" in resource:
                named = "<{}.{}>".format(*resource["Fn::GetAtt"])
            else:
                named = resource["Fn::Sub"].replace("${", "<").replace("}", ">")
            grants |= {(action, named) for action in statement["Action"]}
    return grants


class Recorder:
    """Every AWS call made while a function's handler runs, as the grants it needs."""

    def __init__(self, harness: Harness) -> None:
        settings = harness.settings
        self.tables = {
            settings.connections_table: "ConnectionsTable",
            settings.datasets_table: "DatasetsTable",
            settings.runs_table: "RunsTable",
            settings.limits_table: "LimitsTable",
        }
        self.queue = settings.queue_name
        self.running: str | None = None
        self.needed: dict[str, set[Grant]] = {function: set() for function in FUNCTIONS}

    def table(self, name: str, index: str | None = None) -> str:
        arn = f"<{self.tables[name]}.Arn>"
        return f"{arn}/index/{index}" if index else arn

    def record(self, service: str, operation: str, params: dict[str, Any]) -> None:
        if self.running is None:
            return  # the test's own calls (creating the queue, reading it)
        needed = self.needed[self.running]
        action = RENAMED.get(f"{service}:{operation}", f"{service}:{operation}")
        if service == "dynamodb" and operation == "TransactWriteItems":
            for item in params["TransactItems"]:
                for kind, write in item.items():
                    needed.add((f"dynamodb:{TRANSACTION_ACTIONS[kind]}", self.table(write["TableName"])))
        elif service == "dynamodb" and "RequestItems" in params:
            needed |= {(action, self.table(name)) for name in params["RequestItems"]}
        elif service == "dynamodb":
            needed.add((action, self.table(params["TableName"], params.get("IndexName"))))
        elif service == "sqs":
            queue = params.get("QueueName") or params["QueueUrl"].rsplit("/", 1)[-1]
            assert queue == self.queue
            needed.add((action, "<JobQueue.Arn>"))
        elif service == "kms":
            assert params.get("KeyId", TEST_KMS_ALIAS) == TEST_KMS_ALIAS
            needed.add((action, "<CredentialsKey.Arn>"))
        else:
            needed.add((action, "?"))


@pytest.fixture
def recorder(harness: Harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    recorder = Recorder(harness)
    make_api_call = botocore.client.BaseClient._make_api_call
    request = chalice_test.TestHTTPClient.request
    invoke = chalice_test.TestLambdaClient.invoke

    def recording_call(client: Any, operation: str, params: Any) -> Any:
        recorder.record(client.meta.service_model.signing_name, operation, params)
        return make_api_call(client, operation, params)

    def as_function(function: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        recorder.running = function
        try:
            return call(*args, **kwargs)
        finally:
            recorder.running = None

    monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", recording_call)
    monkeypatch.setattr(
        chalice_test.TestHTTPClient, "request", lambda self, *a, **k: as_function("api_handler", request, self, *a, **k)
    )
    monkeypatch.setattr(
        chalice_test.TestLambdaClient,
        "invoke",
        lambda self, name, *a, **k: as_function(name, invoke, self, name, *a, **k),
    )
    yield recorder


def test_each_function_is_allowed_every_call_it_makes_in_a_full_lifecycle(harness: Harness, recorder: Recorder) -> None:
    # Given a user who creates a connection, reads through every tier, forces, syncs in the background,
    # lists status and runs, lets the schedule sync it, and deletes it; and an operator who pauses,
    # resumes, looks at the service status and runs a tick by hand
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
    harness.clock.advance(3601)
    harness.operator("POST", "/sync/run")
    harness.client.http.delete("/users/u1/connections/c1", headers=harness.headers())
    harness.deliver(harness.queued_bodies())  # the jobs of a deleted connection
    # Then the recording saw each function at work
    assert ("dynamodb:Query", "<DatasetsTable.Arn>/index/by_next_sync") in recorder.needed["sync_schedule"]
    assert ("dynamodb:PutItem", "<RunsTable.Arn>") in recorder.needed["sync_worker"]
    assert ("kms:GenerateDataKey", "<CredentialsKey.Arn>") in recorder.needed["api_handler"]
    # And each function's own policy allows every call it made, on the resource it made it on
    for function in FUNCTIONS:
        assert recorder.needed[function] - policy_grants(function) == set(), function


def test_the_api_may_not_take_jobs_off_the_queue_and_the_schedule_touches_no_credentials() -> None:
    api = {action for action, _ in policy_grants("api_handler")}
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}.isdisjoint(api)
    worker = policy_grants("sync_worker")
    # Lambda's SQS event source receives and deletes with the worker's role
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"):
        assert (action, "<JobQueue.Arn>") in worker
    schedule = policy_grants("sync_schedule")
    assert not {resource for _, resource in schedule} & {
        "<CredentialsKey.Arn>",
        "<ConnectionsTable.Arn>",
        "<RunsTable.Arn>",
    }
