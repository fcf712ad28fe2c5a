"""What the in-process benchmarks share: a fresh moto account with the job queue, the worker "Lambdas"
(``local/emulator.py``'s event source mapping and schedule, handed the app's real handlers), the queue's
depth, the schedule's cadence and quota, and a tally of what the service logged.

Used by ``bench/reads.py``, ``bench/fanout.py``, ``bench/tick.py``, ``bench/oauth_storm.py`` and
``bench/whoop_fanout.py``.
"""

from __future__ import annotations

from local.offline import use_in_process_aws

use_in_process_aws()  # before boto3 is imported anywhere

import logging  # noqa: E402
import threading  # noqa: E402
from collections import Counter  # noqa: E402
from collections.abc import Callable, Iterator, Mapping, Sequence  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from dataclasses import replace  # noqa: E402
from typing import Any, cast  # noqa: E402

import boto3  # noqa: E402
from moto import mock_aws  # noqa: E402

from app import JOB_QUEUE_NAME, sync_schedule, sync_worker  # noqa: E402
from bench.report import Table  # noqa: E402
from chalicelib.container import Container, build_container, set_container  # noqa: E402
from chalicelib.domain.config import Settings  # noqa: E402
from chalicelib.domain.planner import TICK_INTERVAL_SECONDS, jobs_allowed, quota_credit  # noqa: E402
from chalicelib.domain.planner import tick_quota as planner_tick_quota  # noqa: E402
from chalicelib.providers import ProviderLimits, ProviderRegistry, registry_from_config  # noqa: E402
from local.emulator import Handler, QueueWorker, ScheduleTicker, WorkerStats  # noqa: E402

REGION = "us-east-1"
# The worker Lambda's timeout in .chalice/config.json: the handler gets a context with this much time.
LAMBDA_TIMEOUT_SECONDS = 300
# Unacknowledged messages come back after this (the deployed queue uses 1800 s; short here so a
# failed job would show up as a delay inside the run instead of never).
VISIBILITY_TIMEOUT_SECONDS = 60


# --- the AWS account ----------------------------------------------------------------------------------


@contextmanager
def fresh_aws(visibility_timeout: int | None = None) -> Iterator[tuple[Any, str]]:
    """A new moto account state with the job queue; yields (sqs client, queue URL)."""
    with mock_aws():
        sqs = boto3.client("sqs", region_name=REGION)
        attributes = {"VisibilityTimeout": str(visibility_timeout)} if visibility_timeout else {}
        queue_url = sqs.create_queue(QueueName=JOB_QUEUE_NAME, Attributes=attributes)["QueueUrl"]
        try:
            yield sqs, str(queue_url)
        finally:
            set_container(None)


def with_kms_key(settings: Settings) -> Settings:
    """A KMS key in the (moto) account to seal the connections' credentials with."""
    kms = boto3.client("kms", region_name=REGION)
    key_id = kms.create_key(Description="smart-sync bench credentials")["KeyMetadata"]["KeyId"]
    return replace(settings, kms_key_id=str(key_id))


def sqs_client() -> Any:
    return boto3.client("sqs", region_name=REGION)


def queue_depth(sqs: Any, queue_url: str) -> dict[str, int]:
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=names)["Attributes"]
    return {name.removeprefix("ApproximateNumberOfMessages") or "visible": int(attributes[name]) for name in names}


# --- the Lambdas --------------------------------------------------------------------------------------


def lambda_container(settings: Settings, clock: Any, config: Mapping[str, Any]) -> Container:
    """What one Lambda builds on a cold start: its own registry (so its own HTTP sessions) and services."""
    registry: ProviderRegistry = registry_from_config(config)
    return build_container(settings, clock=clock, registry=registry)  # its KMS client too, made on first use


def close_providers(containers: Sequence[Container]) -> None:
    for container in containers:
        for name in container.registry.names():
            close = getattr(container.registry.get(name), "close", None)
            if callable(close):
                close()


def bench_worker(
    client: Callable[[], Any],
    queue_url: str,
    queue_arn: str,
    stop: threading.Event,
    concurrency: int,
    handler: Handler | None = None,
) -> QueueWorker:
    """The shared SQS event source mapping (``local/emulator.py``) for ``app.sync_worker``, not yet started."""
    return QueueWorker(
        client,
        queue_url,
        queue_arn,
        handler or cast(Handler, sync_worker),
        function_name="smart-sync-bench-sync_worker",
        timeout_seconds=LAMBDA_TIMEOUT_SECONDS,
        stop=stop,
        concurrency=concurrency,
        redelivery_seconds=VISIBILITY_TIMEOUT_SECONDS,
    )


def fire_schedule() -> dict[str, Any]:
    """The app's ``sync_schedule`` handler, invoked as EventBridge's rate rule would (uses the global container)."""
    ticker = ScheduleTicker(
        cast(Handler, sync_schedule),
        "smart-sync-bench-sync_schedule",
        f"arn:aws:events:{REGION}:123456789012:rule/smart-sync-sync_schedule",
        timeout_seconds=60,
    )
    return cast(dict[str, Any], ticker.invoke())


def add_worker_rows(
    table: Table,
    stats: WorkerStats,
    tally: LogTally,
    depth_after: Mapping[str, int],
    *,
    batches_note: str = "",
    expect_clean: bool = True,
) -> None:
    """The rows every fan-out table ends with: the worker's batches and errors, the queue left behind and the
    service's warnings (``expect_clean``: the last two are targeted at nothing left and no warning)."""
    table.add(
        f"worker batches / messages / batchItemFailures{batches_note}",
        f"{stats.batches} / {stats.messages} / {stats.batch_item_failures}",
    )
    table.add("handler or receive errors", len(stats.handler_errors) + len(stats.receive_errors), "0")
    for error in (stats.handler_errors + stats.receive_errors)[:5]:
        table.add("  error", error)
    table.add(
        "SQS after the run (visible / in flight / delayed)",
        " / ".join(str(v) for v in depth_after.values()),
        "0 / 0 / 0" if expect_clean else "",
    )
    table.add("service warnings logged", tally.warning_count, "0" if expect_clean else "")
    for line in tally.warnings[:5]:
        table.add("  warning", line)


# --- the schedule's cadence ---------------------------------------------------------------------------


def tick_interval(settings: Settings) -> float:
    return float(getattr(settings, "tick_interval_seconds", TICK_INTERVAL_SECONDS))


def tick_quota(settings: Settings, limits: ProviderLimits) -> int:
    """What the tick's own planner lets a first tick queue for one provider (its quota and carried credit)."""
    quota = planner_tick_quota(
        limits.windows, tick_interval_seconds=tick_interval(settings), weight_per_sync=limits.calls_per_sync
    )
    return jobs_allowed(quota_credit(quota.per_tick, None, 1.0))


# --- what the service logged -------------------------------------------------------------------------


class LogTally(logging.Handler):
    """Counts the service's log lines while attached (worker outcomes, retries, warnings)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._tally_lock = threading.Lock()
        self.outcomes: Counter[str] = Counter()
        self.templates: Counter[str] = Counter()
        self.warnings: list[str] = []
        self.warning_count = 0

    def emit(self, record: logging.LogRecord) -> None:
        template = str(record.msg)
        with self._tally_lock:
            self.templates[template.split(":", 1)[0][:60]] += 1
            if template == "job %s handled: %s" and isinstance(record.args, tuple) and len(record.args) == 2:
                self.outcomes[str(record.args[1])] += 1
            if record.levelno >= logging.WARNING:
                self.warning_count += 1
                if len(self.warnings) < 20:
                    self.warnings.append(record.getMessage().splitlines()[0][:160])

    @contextmanager
    def attached(self, logger_name: str = "chalicelib") -> Iterator[LogTally]:
        logger = logging.getLogger(logger_name)
        propagate, level = logger.propagate, logger.level
        logger.addHandler(self)
        logger.propagate = False  # counted and shown in the table, not spilled over the output
        logger.setLevel(logging.INFO)
        try:
            yield self
        finally:
            logger.removeHandler(self)
            logger.propagate, logger.level = propagate, level
