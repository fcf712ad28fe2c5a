"""What one sync costs in DynamoDB calls: ``python -m bench.run --only sync-cost``.

A worker "Lambda" (one warm container) runs queued background syncs of one-page datasets, one
after another, against moto. Every AWS call inside the worker's handling of a job is counted by
operation and table; the queueing (the schedule's claim and the SQS send) is the tick's cost and
is not counted here. The first sync of a container also pays its in-process caches (the KMS data
key, the shared limits it has not seen yet), so it is shown apart from the steady state.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import boto3
from chalice.test import Client
from moto import mock_aws

from app import app
from bench.calls import AWS_CALLS, CallStats
from bench.report import Table
from chalicelib.api.auth import issue_token
from chalicelib.container import Container, build_container, set_container
from chalicelib.domain.clock import FakeClock
from chalicelib.domain.config import Settings
from chalicelib.domain.model import DatasetKey, Trigger
from chalicelib.providers import ProviderRegistry
from chalicelib.providers.demo import DemoProvider
from chalicelib.store.items import create_tables
from local.offline import use_in_process_aws

SYNCS = 20
DATA_TYPE = "recovery"
RECORDS_PER_PAGE = 7
SECONDS_BETWEEN_SYNCS = 2.0
REGION = "us-east-1"
QUEUE_NAME = "smart-sync-jobs"


@contextmanager
def _worker(settings: Settings) -> Iterator[tuple[Container, Any, str]]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = str(sqs.create_queue(QueueName=QUEUE_NAME)["QueueUrl"])
        kms = boto3.client("kms", region_name=REGION)
        key_id = str(kms.create_key(Description="smart-sync bench credentials")["KeyMetadata"]["KeyId"])
        keyed = replace(settings, kms_key_id=key_id, queue_url=queue_url)
        registry = ProviderRegistry({"demo": DemoProvider("demo")})
        container = build_container(keyed, clock=FakeClock(), registry=registry)
        set_container(container)
        create_tables()
        try:
            yield container, sqs, queue_url
        finally:
            set_container(None)


def _queue_one(container: Container, client: Client, user_id: str) -> None:
    """A connection (through the API) with one one-page dataset, and a queued background sync of it."""
    token = issue_token(container.settings, user_id, container.clock.now())
    body = {
        "provider": "demo",
        "credentials": {"token": "secret-demo-token"},
        "settings": {"records": RECORDS_PER_PAGE, "page_size": RECORDS_PER_PAGE + 1},
    }
    answer = client.http.put(
        f"/users/{user_id}/connections/c1",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        body=json.dumps(body),
    )
    if answer.status_code not in (200, 201):
        raise RuntimeError(f"PUT connection answered {answer.status_code}: {answer.body!r}")
    key = DatasetKey(user_id, "c1", DATA_TYPE)
    policy = container.policies.policy("demo", DATA_TYPE)
    container.coordinator.queue_background(key, "demo", policy, trigger=Trigger.BACKGROUND, respect_cooldown=False)


def _run_one(container: Container, sqs: Any, queue_url: str) -> tuple[str, CallStats]:
    message = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=1)["Messages"][0]
    with AWS_CALLS.measure() as stats:
        result = container.worker.handle(message["Body"], None)
    sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=message["ReceiptHandle"])
    return result, stats


def _dynamodb(stats: CallStats) -> Counter[str]:
    return Counter(
        {name.removeprefix("dynamodb:"): n for name, n in stats.counts.items() if name.startswith("dynamodb:")}
    )


def _limits_writes(calls: Counter[str]) -> int:
    return sum(
        n for name, n in calls.items() if name.endswith("(limits)") and not name.startswith(("GetItem", "Batch"))
    )


def bench_sync_cost(settings: Settings, results: dict[str, Any], *, syncs: int = SYNCS) -> Table:
    with _worker(settings) as (container, sqs, queue_url):
        client = Client(app)
        outcomes: Counter[str] = Counter()
        first: Counter[str] = Counter()
        steady: Counter[str] = Counter()
        upstream = 0
        clock = container.clock
        assert isinstance(clock, FakeClock)
        for index in range(syncs + 1):
            clock.advance(SECONDS_BETWEEN_SYNCS)  # syncs spread in time, as a schedule spreads them
            _queue_one(container, client, f"cost-user-{index}")
            outcome, stats = _run_one(container, sqs, queue_url)
            outcomes[outcome] += 1
            (first if index == 0 else steady).update(_dynamodb(stats))
            upstream += 1
    per_sync = sum(steady.values()) / syncs
    limit_writes = _limits_writes(steady) / syncs
    table = Table("Sync cost: DynamoDB calls per one-page background sync (worker side, moto)")
    table.add("DynamoDB calls per one-page sync", f"{per_sync:g}", "<= 8")
    table.add("  first sync of a cold container", str(sum(first.values())))
    table.add("  shared-limits writes per upstream call", f"{limit_writes:g}", "<= 1")
    for name, count in sorted(steady.items(), key=lambda kv: (-kv[1], kv[0])):
        table.add(f"  {name}", f"{count / syncs:g}")
    table.add("outcomes", json.dumps(dict(outcomes), sort_keys=True))
    results["sync_cost"] = {
        "dynamodb_calls_per_sync": per_sync,
        "first_sync_calls": sum(first.values()),
        "limits_writes_per_upstream_call": limit_writes,
        "by_operation": {name: count / syncs for name, count in steady.items()},
        "outcomes": dict(outcomes),
        "upstream_calls": upstream,
    }
    print(f"DynamoDB calls per one-page sync: {per_sync:g}")
    return table


def main() -> int:
    use_in_process_aws()
    AWS_CALLS.install()
    results: dict[str, Any] = {}
    settings = Settings(jwt_secret="bench-secret-that-is-long-enough-for-hs256")
    print(bench_sync_cost(settings, results).render())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
