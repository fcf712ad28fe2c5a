"""The deploy template must describe the same tables the models use, and the IAM policy must cover them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pynamodb.models import Model

from chalicelib.store.items import ConnectionItem, DatasetItem, LimitItem, RunItem

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = json.loads((ROOT / "infra" / "resources.json").read_text())["Resources"]
POLICY = json.loads((ROOT / ".chalice" / "policy.json").read_text())
CONFIG = json.loads((ROOT / ".chalice" / "config.json").read_text())


def _keys(schema: list[dict[str, str]]) -> dict[str, str]:
    return {k["KeyType"]: k["AttributeName"] for k in schema}


@pytest.mark.parametrize(
    ("resource", "model", "env"),
    [
        ("ConnectionsTable", ConnectionItem, "SMART_SYNC_CONNECTIONS_TABLE"),
        ("DatasetsTable", DatasetItem, "SMART_SYNC_DATASETS_TABLE"),
        ("RunsTable", RunItem, "SMART_SYNC_RUNS_TABLE"),
        ("LimitsTable", LimitItem, "SMART_SYNC_LIMITS_TABLE"),
    ],
)
def test_template_tables_match_the_models(resource: str, model: type[Model], env: str) -> None:
    # Given the model's own schema (what create_table would build locally)
    schema: Any = model._get_schema()
    table = TEMPLATE[resource]["Properties"]
    # Then the deployed table has the same name, keys and indexes
    assert table["TableName"] == CONFIG["environment_variables"][env]
    assert _keys(table["KeySchema"]) == _keys(schema["key_schema"])
    expected_indexes = {
        i["index_name"]: (
            _keys(i["key_schema"]),
            i["projection"]["ProjectionType"],
            sorted(i["projection"].get("NonKeyAttributes", [])),
        )
        for i in schema.get("global_secondary_indexes", [])
    }
    deployed_indexes = {
        i["IndexName"]: (
            _keys(i["KeySchema"]),
            i["Projection"]["ProjectionType"],
            sorted(i["Projection"].get("NonKeyAttributes", [])),
        )
        for i in table.get("GlobalSecondaryIndexes", [])
    }
    assert deployed_indexes == expected_indexes


def test_runs_expire_through_dynamodb_ttl() -> None:
    ttl = TEMPLATE["RunsTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}


def test_worker_reports_partial_batch_failures_and_has_a_dead_letter_queue() -> None:
    events = TEMPLATE["SyncWorker"]["Properties"]["Events"]["SyncWorkerSqsEventSource"]["Properties"]
    assert events["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = TEMPLATE["JobQueue"]["Properties"]
    worker_timeout = CONFIG["lambda_functions"]["sync_worker"]["lambda_timeout"]
    assert queue["VisibilityTimeout"] >= 6 * worker_timeout
    assert 2 <= queue["RedrivePolicy"]["maxReceiveCount"] <= 10


def test_iam_policy_covers_every_table_and_index() -> None:
    resources = {
        r for s in POLICY["Statement"] for r in (s["Resource"] if isinstance(s["Resource"], list) else [s["Resource"]])
    }
    for name in ("CONNECTIONS", "DATASETS", "RUNS", "LIMITS"):
        table = CONFIG["environment_variables"][f"SMART_SYNC_{name}_TABLE"]
        assert f"arn:aws:dynamodb:*:*:table/{table}" in resources
    for index in ("by_user", "by_next_sync"):
        assert f"arn:aws:dynamodb:*:*:table/smart-sync-datasets/index/{index}" in resources
    assert f"arn:aws:sqs:*:*:{CONFIG['environment_variables']['SMART_SYNC_QUEUE_NAME']}" in resources
