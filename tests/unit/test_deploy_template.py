"""The packaged templates (`make package`, one per stage) hold what deploying to production needs.

The templates are the real output of ``chalice package`` merged with infra/resources.json
(``infra/package.py``): `make test` packages them into build/templates first and names that
directory in SMART_SYNC_PACKAGED_TEMPLATES; run alone, these tests package them into a tmp dir.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from chalicelib.domain.config import Settings
from chalicelib.store.items import ConnectionItem, DatasetItem, LimitItem, RunItem
from chalicelib.store.jwt_secret import REPOSITORY_DEV_SECRETS
from infra.package import package, stages

ROOT = Path(__file__).resolve().parents[2]
STAGES = ("dev", "prod")
FUNCTIONS = {"APIHandler": "api_handler", "SyncWorker": "sync_worker", "SyncSchedule": "sync_schedule"}
LOG_GROUPS = {
    "APIHandler": "ApiHandlerLogGroup",
    "SyncWorker": "SyncWorkerLogGroup",
    "SyncSchedule": "SyncScheduleLogGroup",
}
TABLES = {
    "ConnectionsTable": ("SMART_SYNC_CONNECTIONS_TABLE", ConnectionItem, "connections"),
    "DatasetsTable": ("SMART_SYNC_DATASETS_TABLE", DatasetItem, "datasets"),
    "RunsTable": ("SMART_SYNC_RUNS_TABLE", RunItem, "runs"),
    "LimitsTable": ("SMART_SYNC_LIMITS_TABLE", LimitItem, "limits"),
}
PSEUDO = {"AWS::Partition": "aws", "AWS::Region": "us-east-1", "AWS::AccountId": "123456789012"}


class Template:
    """One packaged template, with just enough of CloudFormation's functions to read names and ARNs."""

    def __init__(self, stage: str, raw: dict[str, Any]) -> None:
        self.stage = stage
        self.raw = raw
        self.resources: dict[str, Any] = raw["Resources"]

    def of_type(self, kind: str) -> dict[str, Any]:
        return {name: r for name, r in self.resources.items() if r["Type"] == kind}

    def resolve(self, value: Any) -> Any:
        """Names and ARNs as strings; another resource's ARN stays symbolic, as ``<Name.Arn>``."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if "Ref" in value:
            name = value["Ref"]
            if name in PSEUDO:
                return PSEUDO[name]
            if name in self.raw.get("Parameters", {}):
                return self.raw["Parameters"][name]["Default"]
            return f"<{name}>"
        if "Fn::GetAtt" in value:
            return "<{}.{}>".format(*value["Fn::GetAtt"])
        if "Fn::Sub" in value:
            text = value["Fn::Sub"]
            assert isinstance(text, str), value
            return re.sub(r"\$\{([^}]+)\}", lambda m: str(self.resolve(_sub_ref(m.group(1)))), text)
        return value

    def env(self, function: str) -> dict[str, str]:
        variables: dict[str, str] = self.resources[function]["Properties"]["Environment"]["Variables"]
        return variables

    def statements(self, function: str) -> list[dict[str, Any]]:
        role = self.resources[function]["Properties"]["Role"]["Fn::GetAtt"][0]
        return [
            statement
            for policy in self.resources[role]["Properties"]["Policies"]
            for statement in policy["PolicyDocument"]["Statement"]
        ]

    def grants(self, function: str) -> dict[str, set[str]]:
        """action -> the resolved resources it is allowed on, for one function's role."""
        allowed: dict[str, set[str]] = {}
        for statement in self.statements(function):
            assert statement["Effect"] == "Allow"
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for action in statement["Action"]:
                allowed.setdefault(action, set()).update(self.resolve(r) for r in resources)
        return allowed


def _sub_ref(name: str) -> dict[str, Any]:
    return {"Fn::GetAtt": name.split(".", 1)} if "." in name else {"Ref": name}


@pytest.fixture(scope="session")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Template]:
    given = os.environ.get("SMART_SYNC_PACKAGED_TEMPLATES")
    packaged: dict[str, Template] = {}
    for stage in STAGES:
        if given:
            path = ROOT / given / stage / "sam.json"
        else:
            path = package(stage, tmp_path_factory.mktemp(f"package-{stage}") / "out")
        packaged[stage] = Template(stage, json.loads(path.read_text()))
    return packaged


@pytest.fixture(params=STAGES)
def template(request: pytest.FixtureRequest, templates: dict[str, Template]) -> Template:
    return templates[request.param]


@pytest.fixture
def prod(templates: dict[str, Template]) -> Template:
    return templates["prod"]


def _keys(schema: list[dict[str, str]]) -> dict[str, str]:
    return {k["KeyType"]: k["AttributeName"] for k in schema}


def test_the_stages_packaged_here_are_the_configured_ones() -> None:
    assert tuple(stages()) == STAGES


def test_a_template_is_pinned_to_the_stage_it_was_packaged_for(template: Template) -> None:
    # Then it cannot be deployed under another stage's names
    assert template.raw["Parameters"]["Stage"]["AllowedValues"] == [template.stage]
    assert template.resolve({"Ref": "Stage"}) == template.stage


@pytest.mark.parametrize("resource", sorted(TABLES))
def test_template_tables_match_the_models_and_the_functions_use_them(template: Template, resource: str) -> None:
    # Given the model's own schema (what create_table would build locally)
    env, model, suffix = TABLES[resource]
    schema: Any = model._get_schema()  # type: ignore[attr-defined]
    table = template.resources[resource]["Properties"]
    # Then the deployed table has a stage-prefixed name every function is given, and the model's keys and indexes
    name = template.resolve(table["TableName"])
    assert name == f"smart-sync-{template.stage}-{suffix}"
    assert {template.env(function)[env] for function in FUNCTIONS} == {name}
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


def test_every_table_has_point_in_time_recovery_and_outlives_the_stack(template: Template) -> None:
    tables = template.of_type("AWS::DynamoDB::Table")
    assert set(tables) == set(TABLES)
    for name, table in tables.items():
        assert table["Properties"]["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, name
        assert table["Properties"]["SSESpecification"] == {"SSEEnabled": True}, name
        assert (table.get("DeletionPolicy"), table.get("UpdateReplacePolicy")) == ("Retain", "Retain"), name
    key = template.resources["CredentialsKey"]
    assert (key.get("DeletionPolicy"), key.get("UpdateReplacePolicy")) == ("Retain", "Retain")


def test_runs_expire_through_dynamodb_ttl(template: Template) -> None:
    ttl = template.resources["RunsTable"]["Properties"]["TimeToLiveSpecification"]
    assert ttl == {"AttributeName": "expires_at", "Enabled": True}


def test_the_worker_consumes_the_templates_queue_and_reports_partial_batch_failures(template: Template) -> None:
    worker = template.resources["SyncWorker"]["Properties"]
    events = worker["Events"]["SyncWorkerSqsEventSource"]["Properties"]
    assert template.resolve(events["Queue"]) == "<JobQueue.Arn>"
    assert events["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    queue = template.resources["JobQueue"]["Properties"]
    assert queue["VisibilityTimeout"] >= 6 * worker["Timeout"]
    assert 2 <= queue["RedrivePolicy"]["maxReceiveCount"] <= 10
    assert template.resolve(queue["RedrivePolicy"]["deadLetterTargetArn"]) == "<JobDeadLetterQueue.Arn>"


def test_names_are_stage_prefixed_so_two_stages_share_an_account(templates: dict[str, Template]) -> None:
    named = {
        "AWS::DynamoDB::Table": "TableName",
        "AWS::SQS::Queue": "QueueName",
        "AWS::KMS::Alias": "AliasName",
        "AWS::Serverless::Function": "FunctionName",
        "AWS::Logs::LogGroup": "LogGroupName",
        "AWS::CloudWatch::Alarm": "AlarmName",
        "AWS::Serverless::Api": "Name",
    }
    seen: dict[str, set[str]] = {}
    for stage, template in templates.items():
        names = set()
        for kind, key in named.items():
            resources = template.of_type(kind)
            assert resources, kind
            for resource in resources.values():
                name = template.resolve(resource["Properties"][key])
                assert f"smart-sync-{stage}" in name, (kind, name)
                names.add(name)
        seen[stage] = names
        env = template.env("APIHandler")
        assert env["SMART_SYNC_QUEUE_NAME"] == template.resolve(
            template.resources["JobQueue"]["Properties"]["QueueName"]
        )
        assert env["SMART_SYNC_KMS_KEY_ID"] == template.resolve(
            template.resources["CredentialsKeyAlias"]["Properties"]["AliasName"]
        )
    assert not seen["dev"] & seen["prod"]


def test_every_variable_the_functions_get_is_a_setting(template: Template) -> None:
    # Given the names settings_from_env reads (SMART_SYNC_ + a Settings field)
    known = {f"SMART_SYNC_{f.name.upper()}" for f in fields(Settings)}
    # Then no stage sets a variable the service would ignore
    for function in FUNCTIONS:
        assert set(template.env(function)) - known == set(), function


def test_the_demo_provider_is_offered_by_the_dev_stage_only(templates: dict[str, Template]) -> None:
    for function in FUNCTIONS:
        assert templates["dev"].env(function)["SMART_SYNC_DEMO_PROVIDER"] == "enabled"
        assert "SMART_SYNC_DEMO_PROVIDER" not in templates["prod"].env(function)


def test_prod_reads_its_jwt_secret_from_ssm_and_carries_no_literal_secret(prod: Template) -> None:
    parameter = prod.env("APIHandler")["SMART_SYNC_JWT_SECRET_PARAMETER"]
    assert parameter == "/smart-sync/prod/jwt-secret"
    for function in FUNCTIONS:
        assert "SMART_SYNC_JWT_SECRET" not in prod.env(function)
    assert prod.grants("APIHandler")["ssm:GetParameter"] == {f"arn:aws:ssm:us-east-1:123456789012:parameter{parameter}"}


def test_the_only_literal_secret_in_any_template_is_a_repository_dev_secret(template: Template) -> None:
    # (chalicelib/store/jwt_secret.py refuses those outside the local run)
    for function in FUNCTIONS:
        secret = template.env(function).get("SMART_SYNC_JWT_SECRET")
        assert secret is None or secret in REPOSITORY_DEV_SECRETS


def test_each_function_has_its_own_role(template: Template) -> None:
    roles = {template.resources[f]["Properties"]["Role"]["Fn::GetAtt"][0] for f in FUNCTIONS}
    assert len(roles) == len(FUNCTIONS)
    assert set(template.of_type("AWS::IAM::Role")) == roles


def test_the_api_may_not_consume_or_delete_queue_messages(template: Template) -> None:
    api = template.grants("APIHandler")
    assert {"sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility"}.isdisjoint(api)
    assert api["sqs:SendMessage"] == {"<JobQueue.Arn>"}
    worker = template.grants("SyncWorker")
    assert worker["sqs:ReceiveMessage"] == worker["sqs:DeleteMessage"] == {"<JobQueue.Arn>"}


def test_the_schedule_may_only_claim_due_datasets_and_send_their_jobs(template: Template) -> None:
    schedule = template.grants("SyncSchedule")
    assert schedule == {
        "logs:CreateLogStream": {"<SyncScheduleLogGroup.Arn>"},
        "logs:PutLogEvents": {"<SyncScheduleLogGroup.Arn>"},
        "dynamodb:UpdateItem": {"<DatasetsTable.Arn>", "<LimitsTable.Arn>"},
        "dynamodb:Query": {"<DatasetsTable.Arn>/index/by_next_sync"},
        "dynamodb:GetItem": {"<LimitsTable.Arn>"},
        "dynamodb:BatchGetItem": {"<LimitsTable.Arn>"},
        "sqs:SendMessage": {"<JobQueue.Arn>"},
        "sqs:GetQueueUrl": {"<JobQueue.Arn>"},
    }


def test_only_the_api_deletes_connections_and_only_api_and_worker_open_credentials(template: Template) -> None:
    assert "<ConnectionsTable.Arn>" in template.grants("APIHandler")["dynamodb:DeleteItem"]
    assert "<ConnectionsTable.Arn>" not in template.grants("SyncWorker")["dynamodb:DeleteItem"]
    for function in ("APIHandler", "SyncWorker"):
        grants = template.grants(function)
        assert "<CredentialsKey.Arn>" in grants["kms:Decrypt"]
        assert grants["kms:GenerateDataKey"] == {"<CredentialsKey.Arn>"}
    assert not any(action.startswith("kms:") for action in template.grants("SyncSchedule"))


def test_data_actions_name_the_templates_own_resources_never_a_wildcard(template: Template) -> None:
    for function in FUNCTIONS:
        for statement in template.statements(function):
            resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
            for target in (template.resolve(r) for r in resources):
                assert "*" not in target, (function, target)
                if any(a.startswith(("dynamodb:", "sqs:", "kms:", "logs:")) for a in statement["Action"]):
                    # a table, one of its indexes, the queue, the credentials key, the function's log group
                    assert re.fullmatch(r"<(\w+)\.Arn>(/index/\w+)?", target), (function, target)
                    assert target[1:].split(".")[0] in template.resources


def test_each_function_logs_to_its_own_group_with_retention(template: Template) -> None:
    for function, short in FUNCTIONS.items():
        name = template.resolve(template.resources[function]["Properties"]["FunctionName"])
        assert name == f"smart-sync-{template.stage}-{short}"
        group_id = LOG_GROUPS[function]
        group = template.resources[group_id]
        assert template.resolve(group["Properties"]["LogGroupName"]) == f"/aws/lambda/{name}"
        assert group["Properties"]["RetentionInDays"] == {"Ref": "LogRetentionDays"}
        assert group_id in template.resources[function]["DependsOn"]  # it exists before the first invocation
        grants = template.grants(function)
        assert grants["logs:PutLogEvents"] == grants["logs:CreateLogStream"] == {f"<{group_id}.Arn>"}
    assert template.raw["Parameters"]["LogRetentionDays"]["Default"] == 30


def test_api_gateway_throttles_every_method(template: Template) -> None:
    settings = template.resources["RestAPI"]["Properties"]["MethodSettings"]
    assert settings == [
        {
            "ResourcePath": "/*",
            "HttpMethod": "*",
            "ThrottlingRateLimit": {"Ref": "ApiThrottlingRateLimit"},
            "ThrottlingBurstLimit": {"Ref": "ApiThrottlingBurstLimit"},
        }
    ]
    parameters = template.raw["Parameters"]
    assert 0 < parameters["ApiThrottlingRateLimit"]["Default"] <= parameters["ApiThrottlingBurstLimit"]["Default"]


def _alarm(template: Template, name: str) -> dict[str, Any]:
    alarms = {
        template.resolve(a["Properties"]["AlarmName"]): a["Properties"]
        for a in template.of_type("AWS::CloudWatch::Alarm").values()
    }
    return alarms[f"smart-sync-{template.stage}-{name}"]


def test_alarms_watch_the_dead_letter_queue_worker_errors_and_the_tick(template: Template) -> None:
    dlq = _alarm(template, "dlq-not-empty")
    assert (dlq["Namespace"], dlq["MetricName"]) == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
    assert template.resolve(dlq["Dimensions"][0]["Value"]) == "<JobDeadLetterQueue.QueueName>"
    assert (dlq["Threshold"], dlq["ComparisonOperator"]) == (0, "GreaterThanThreshold")
    errors = _alarm(template, "worker-errors")
    assert (errors["Namespace"], errors["MetricName"]) == ("AWS/Lambda", "Errors")
    assert errors["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "SyncWorker"}}]
    tick = _alarm(template, "no-tick")
    stats = {m["Id"]: m["MetricStat"] for m in tick["Metrics"] if "MetricStat" in m}
    assert stats["invocations"]["Metric"]["MetricName"] == "Invocations"
    assert stats["invocations"]["Metric"]["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": "SyncSchedule"}}]
    assert {s["Period"] for s in stats.values()} == {300}  # no completed tick in 5 minutes
    assert (tick["Threshold"], tick["ComparisonOperator"], tick["TreatMissingData"]) == (
        1,
        "LessThanThreshold",
        "breaching",
    )


@pytest.mark.parametrize(
    ("alarm", "metric", "source"),
    [
        ("provider-circuit-open", "ProviderCircuitOpened", "chalicelib/sync/pacing.py"),
        ("upstream-429-rate", "UpstreamRateLimited", "chalicelib/providers/rest.py"),
    ],
)
def test_log_metric_alarms_count_lines_the_code_writes(
    template: Template, alarm: str, metric: str, source: str
) -> None:
    # Given the alarm on a metric the template derives from log lines
    watched = _alarm(template, alarm)
    assert (template.resolve(watched["Namespace"]), watched["MetricName"]) == (f"SmartSync/{template.stage}", metric)
    filters = [
        f["Properties"]
        for f in template.of_type("AWS::Logs::MetricFilter").values()
        if f["Properties"]["MetricTransformations"][0]["MetricName"] == metric
    ]
    # Then both functions that run syncs (API reads, the worker) feed it
    assert {f["LogGroupName"]["Ref"] for f in filters} == {"ApiHandlerLogGroup", "SyncWorkerLogGroup"}
    # And the filter's quoted term is text the code puts in its log lines
    for f in filters:
        term = re.fullmatch(r'"([^"]+)"', f["FilterPattern"])
        assert term is not None
        assert term.group(1) in (ROOT / source).read_text()


def test_alarms_notify_the_optional_topic(template: Template) -> None:
    alarms = template.of_type("AWS::CloudWatch::Alarm")
    assert len(alarms) == 5
    notify = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for alarm in alarms.values():
        assert alarm["Properties"]["AlarmActions"] == notify
    assert template.raw["Parameters"]["AlarmTopicArn"]["Default"] == ""
