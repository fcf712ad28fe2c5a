"""What one sync costs in DynamoDB calls: ``python -m bench.run --only sync-cost``.

A worker "Lambda" (one warm container) runs queued syncs, one after another, against moto: background
and scheduled jobs of one-page datasets (the case the target is about), and three-page ones. Every
AWS call inside the worker's handling of a job is counted by
operation and table; the queueing (the schedule's claim and the SQS send) is the tick's cost and
is not counted here. The first sync of a container also pays its in-process caches (the KMS data
key, the shared limits it has not seen yet), so it is shown apart from the steady state.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
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
from local.counting_provider import CountingProvider
from local.offline import use_in_process_aws

SYNCS = 20
DATA_TYPE = "recovery"
RECORDS = 7
SECONDS_BETWEEN_SYNCS = 2.0
REGION = "us-east-1"
QUEUE_NAME = "smart-sync-jobs"


@contextmanager
def _worker(settings: Settings) -> Iterator[tuple[Container, Any, str, CountingProvider]]:
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        queue_url = str(sqs.create_queue(QueueName=QUEUE_NAME)["QueueUrl"])
        kms = boto3.client("kms", region_name=REGION)
        key_id = str(kms.create_key(Description="smart-sync bench credentials")["KeyMetadata"]["KeyId"])
        keyed = replace(settings, kms_key_id=key_id, queue_url=queue_url)
        provider = CountingProvider(DemoProvider("demo"))
        registry = ProviderRegistry({"demo": provider})
        container = build_container(keyed, clock=FakeClock(), registry=registry)
        set_container(container)
        create_tables()
        try:
            yield container, sqs, queue_url, provider
        finally:
            set_container(None)


@dataclass(frozen=True)
class Scenario:
    name: str
    trigger: Trigger
    page_size: int
    """The demo provider's page size: at least RECORDS makes a one-page sync."""


SCENARIOS = (
    Scenario("background job, one page", Trigger.BACKGROUND, RECORDS + 1),
    Scenario("scheduled job, one page", Trigger.SCHEDULE, RECORDS + 1),
    Scenario("background job, three pages", Trigger.BACKGROUND, 3),
)


def _queue_one(container: Container, client: Client, user_id: str, scenario: Scenario) -> None:
    """A connection (through the API) with one dataset, and a queued sync of it."""
    token = issue_token(container.settings, user_id, container.clock.now())
    body = {
        "provider": "demo",
        "credentials": {"token": "secret-demo-token"},
        "settings": {"records": RECORDS, "page_size": scenario.page_size},
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
    container.coordinator.queue_background(key, "demo", policy, trigger=scenario.trigger, respect_cooldown=False)


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
    """Writes to the limits table outside the sync's final transaction (which also gives its slot back)."""
    return sum(n for name, n in calls.items() if name.startswith(("UpdateItem(limits)", "PutItem(limits)")))


@dataclass
class Measured:
    outcomes: Counter[str] = field(default_factory=Counter)
    first: Counter[str] = field(default_factory=Counter)
    steady: Counter[str] = field(default_factory=Counter)
    upstream: int = 0


def _measure(settings: Settings, scenario: Scenario, syncs: int) -> Measured:
    """``syncs + 1`` syncs by one warm worker; the first (cold in-process caches) is kept apart."""
    measured = Measured()
    with _worker(settings) as (container, sqs, queue_url, provider):
        client = Client(app)
        clock = container.clock
        assert isinstance(clock, FakeClock)
        for index in range(syncs + 1):
            clock.advance(SECONDS_BETWEEN_SYNCS)  # syncs spread in time, as a schedule spreads them
            _queue_one(container, client, f"cost-user-{index}", scenario)
            before = provider.calls
            outcome, stats = _run_one(container, sqs, queue_url)
            measured.outcomes[outcome] += 1
            if index == 0:
                measured.first.update(_dynamodb(stats))
            else:
                measured.steady.update(_dynamodb(stats))
                measured.upstream += provider.calls - before
    return measured


def bench_sync_cost(settings: Settings, results: dict[str, Any], *, syncs: int = SYNCS) -> Table:
    table = Table(f"Sync cost: DynamoDB calls per sync, worker side, mean of {syncs} warm syncs (moto)")
    results["sync_cost"] = {}
    for scenario in SCENARIOS:
        measured = _measure(settings, scenario, syncs)
        per_sync = sum(measured.steady.values()) / syncs
        per_call = _limits_writes(measured.steady) / max(1, measured.upstream)
        one_page = scenario.page_size > RECORDS
        table.add(f"{scenario.name}: DynamoDB calls per sync", f"{per_sync:g}", "<= 8" if one_page else "")
        table.add("  first sync of a cold worker", str(sum(measured.first.values())))
        table.add("  upstream calls per sync", f"{measured.upstream / syncs:g}")
        table.add("  limits-table writes per upstream call", f"{per_call:g}", "<= 1")
        ops = sorted(measured.steady.items(), key=lambda kv: (-kv[1], kv[0]))
        table.add("  by operation (table)", ", ".join(f"{name} {count / syncs:g}" for name, count in ops))
        table.add("  outcomes", json.dumps(dict(measured.outcomes), sort_keys=True))
        results["sync_cost"][scenario.name] = {
            "dynamodb_calls_per_sync": per_sync,
            "first_sync_calls": sum(measured.first.values()),
            "limits_writes_per_upstream_call": per_call,
            "by_operation": {name: count / syncs for name, count in measured.steady.items()},
            "outcomes": dict(measured.outcomes),
        }
        if scenario is SCENARIOS[0]:
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
