"""The local run's and the bench's moto speed-up: DynamoDB answers written directly are moto's own, byte for byte."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.core.responses import ActionResult
from moto.dynamodb.responses import DynamoHandler

from local.moto_json import fast_answer, without_none


def _types(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_types(v) for v in value]
    return type(value).__name__


def test_every_answer_the_fast_path_writes_equals_motos_serializer(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given moto answering through both paths, compared on every DynamoDB call
    original = DynamoHandler.serialized
    compared: list[tuple[str, bool]] = []

    def both(self: Any, action_result: ActionResult) -> Any:
        expected = original(self, action_result)
        fast = fast_answer(self, action_result.result)
        if fast is not None:
            got, want = json.loads(fast[2]), json.loads(expected[2])
            same = fast[0] == expected[0] and got == want and _types(got) == _types(want)
            compared.append((self._get_action(), same))
        return expected

    monkeypatch.setattr(DynamoHandler, "serialized", both)
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name="us-east-1")
        # When a table is made and its items written, updated, read, queried and deleted
        dynamodb.create_table(
            TableName="t",
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
        )
        for index in range(3):
            item = {"pk": {"S": "p"}, "sk": {"S": f"r{index}"}, "n": {"N": str(index)}, "l": {"L": [{"BOOL": True}]}}
            dynamodb.put_item(TableName="t", Item=item)
        key = {"pk": {"S": "p"}, "sk": {"S": "r0"}}
        dynamodb.update_item(
            TableName="t",
            Key=key,
            UpdateExpression="SET m = :m",
            ExpressionAttributeValues={":m": {"M": {"x": {"NULL": True}}}},
            ReturnValues="ALL_NEW",
        )
        dynamodb.get_item(TableName="t", Key=key, ConsistentRead=True)
        dynamodb.query(
            TableName="t", KeyConditionExpression="pk = :p", ExpressionAttributeValues={":p": {"S": "p"}}, Limit=2
        )
        dynamodb.transact_write_items(TransactItems=[{"Delete": {"TableName": "t", "Key": key}}])
        dynamodb.describe_table(TableName="t")  # dates: moto's serializer answers

    # Then every answer it wrote itself is the same JSON, down to the types, and the hot reads went the fast way
    assert compared and all(same for _, same in compared), compared
    assert {"GetItem", "Query", "PutItem", "UpdateItem"} <= {action for action, _ in compared}
    assert "DescribeTable" not in {action for action, _ in compared}


def test_none_members_are_dropped_as_motos_serializer_drops_them() -> None:
    assert without_none({"a": None, "b": [{"c": None, "d": 1}]}) == {"b": [{"d": 1}]}
