"""The Lambda side of AWS, played by threads: the SQS event source mapping and the EventBridge schedule.

Shared by the local runner (``local/run.py``, against the moto server) and the benchmarks (``bench/``,
against in-process moto): both hand the app's real handlers the events AWS would.

- ``QueueWorker``: ``concurrency`` pollers, each long-polling the queue for up to 10 messages and
  invoking the handler with a Lambda-shaped SQS event, then deleting what it did not report in
  ``batchItemFailures``; so up to ``concurrency`` batches run at once, as concurrent Lambdas do.
- ``ScheduleTicker`` and ``schedule_loop``: a scheduled event on a fixed rate, as a rate rule sends it.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from local.environment import ACCOUNT_ID, REGION

logger = logging.getLogger(__name__)

Handler = Callable[[dict[str, Any], Any], Any]
"""A chalice-wrapped Lambda handler: ``handler(event_dict, context)``."""

FIRST_TICK_DELAY_SECONDS = 2.0
"""The first tick comes soon after start, so a new user sees the demo datasets refresh on their own."""
RECEIVE_WAIT_SECONDS = 1
"""Each poller's long poll: short enough that a stop is seen within a second, long enough not to spin."""
_RECEIVE_RETRY_SECONDS = 1.0


@dataclass
class LambdaContext:
    """The parts of the Lambda context object that handlers read."""

    function_name: str
    aws_request_id: str
    deadline: float
    memory_limit_in_mb: int = 512
    invoked_function_arn: str = ""
    log_group_name: str = ""
    log_stream_name: str = "local"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self.deadline - time.time()) * 1000))


def lambda_context(function_name: str, timeout_seconds: float, now: float | None = None) -> LambdaContext:
    """A fresh invocation's context: ``timeout_seconds`` left from ``now`` (the wall clock by default)."""
    started = time.time() if now is None else now
    return LambdaContext(
        function_name=function_name,
        aws_request_id=str(uuid.uuid4()),
        deadline=started + timeout_seconds,
        invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{function_name}",
        log_group_name=f"/aws/lambda/{function_name}",
    )


def sqs_lambda_event(messages: list[dict[str, Any]], queue_arn: str) -> dict[str, Any]:
    """The event Lambda's SQS poller would build from ``ReceiveMessage`` results."""
    now_ms = str(int(time.time() * 1000))
    return {
        "Records": [
            {
                "messageId": m["MessageId"],
                "receiptHandle": m["ReceiptHandle"],
                "body": m["Body"],
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": now_ms,
                    "SenderId": ACCOUNT_ID,
                    "ApproximateFirstReceiveTimestamp": now_ms,
                    **m.get("Attributes", {}),
                },
                "messageAttributes": m.get("MessageAttributes", {}),
                "md5OfBody": m.get("MD5OfBody", ""),
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": REGION,
            }
            for m in messages
        ]
    }


def describe_job(body: str) -> str:
    try:
        job = json.loads(body)
        return f"{job['user_id']}/{job['connection_id']}/{job['data_type']} ({job['trigger']}, run {job['run_id']})"
    except (ValueError, KeyError, TypeError):
        return "unreadable job body"


@dataclass
class WorkerStats:
    """What the pollers did, counted across all of them."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    batches: int = 0
    messages: int = 0
    batch_item_failures: int = 0
    handler_errors: list[str] = field(default_factory=list)
    receive_errors: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    """Bodies of the jobs handled and deleted (the smoke test waits on this)."""


class QueueWorker:
    """What the SQS event source mapping does for the worker Lambda, ``concurrency`` batches at a time."""

    def __init__(
        self,
        sqs_client: Callable[[], Any],
        queue_url: str,
        queue_arn: str,
        handler: Handler,
        function_name: str,
        timeout_seconds: float,
        stop: threading.Event,
        *,
        concurrency: int = 1,
        redelivery_seconds: float = 0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("a queue worker needs at least one poller")
        self._sqs_client = sqs_client
        self._queue_url = queue_url
        self._queue_arn = queue_arn
        self._handler = handler
        self._function_name = function_name
        self._timeout_seconds = timeout_seconds
        self._stop = stop
        self._concurrency = concurrency
        self._redelivery_seconds = redelivery_seconds
        self.stats = WorkerStats()
        self.threads: list[threading.Thread] = []

    @property
    def acknowledged(self) -> list[str]:
        with self.stats.lock:
            return list(self.stats.acknowledged)

    def start(self, name: str = "sqs-worker") -> list[threading.Thread]:
        """Start the pollers (daemon threads), each with its own client; they end once ``stop`` is set."""
        # Clients are made here, one after another: creating boto3 clients in several threads at once is unsafe.
        clients = [self._sqs_client() for _ in range(self._concurrency)]
        for index, client in enumerate(clients):
            thread = threading.Thread(target=self.run, args=(client,), name=f"{name}-{index}", daemon=True)
            self.threads.append(thread)
            thread.start()
        return self.threads

    def join(self, timeout: float) -> int:
        """Wait (at most ``timeout`` in all) for the pollers to end; how many are still running."""
        ends_at = time.monotonic() + timeout
        for thread in self.threads:
            thread.join(timeout=max(0.0, ends_at - time.monotonic()))
        return sum(1 for thread in self.threads if thread.is_alive())

    def run(self, sqs: Any) -> None:
        """One poller: receive a batch, deliver it, until ``stop`` is set."""
        while not self._stop.is_set():
            try:
                got = sqs.receive_message(
                    QueueUrl=self._queue_url,
                    MaxNumberOfMessages=10,
                    WaitTimeSeconds=RECEIVE_WAIT_SECONDS,
                    AttributeNames=["All"],
                    MessageAttributeNames=["All"],
                )
            except Exception as exc:
                if self._stop.is_set():
                    return
                with self.stats.lock:
                    self.stats.receive_errors.append(f"{type(exc).__name__}: {exc}")
                logger.warning("worker: receive failed (%s); retrying", exc)
                self._stop.wait(_RECEIVE_RETRY_SECONDS)
                continue
            messages = got.get("Messages", [])
            if messages:
                try:
                    self.deliver(sqs, messages)
                except Exception:  # never let one bad batch end the poller; unacknowledged jobs come back
                    logger.exception("worker: delivering a batch failed")

    def deliver(self, sqs: Any, messages: list[dict[str, Any]]) -> None:
        """One invocation with these messages; delete those it did not report as failed."""
        context = lambda_context(self._function_name, self._timeout_seconds)
        started = time.monotonic()
        try:
            result = self._handler(sqs_lambda_event(messages, self._queue_arn), context)
        except Exception as exc:
            # A raising handler fails the whole batch in Lambda too: every message comes back.
            with self.stats.lock:
                self.stats.handler_errors.append(f"{type(exc).__name__}: {exc}")
            logger.exception(
                "worker: sync_worker raised; all %d job(s) return in %gs", len(messages), self._redelivery_seconds
            )
            return
        elapsed = time.monotonic() - started
        failures = result.get("batchItemFailures", []) if isinstance(result, dict) else []
        failed_ids = {str(f.get("itemIdentifier")) for f in failures if isinstance(f, dict)}
        done = [m for m in messages if m["MessageId"] not in failed_ids]
        not_deleted = self._delete(sqs, done)
        acknowledged = [m["Body"] for m in done if m["MessageId"] not in not_deleted]
        with self.stats.lock:
            self.stats.batches += 1
            self.stats.messages += len(messages)
            self.stats.batch_item_failures += len(failed_ids)
            self.stats.acknowledged.extend(acknowledged)
        if not logger.isEnabledFor(logging.INFO):
            return
        for message in messages:
            what = describe_job(message["Body"])
            if message["MessageId"] in failed_ids:
                receives = message.get("Attributes", {}).get("ApproximateReceiveCount", "1")
                back = f"back in {self._redelivery_seconds:g}s"
                logger.info("worker: retry  %s: reported failed (receive %s); %s", what, receives, back)
            elif message["MessageId"] not in not_deleted:
                logger.info("worker: done   %s (batch of %d, %.1fs)", what, len(messages), elapsed)

    def _delete(self, sqs: Any, messages: list[dict[str, Any]]) -> set[str]:
        """Delete in one call; the ids of the messages that were not deleted (SQS redelivers them)."""
        if not messages:
            return set()
        entries = [{"Id": str(index), "ReceiptHandle": m["ReceiptHandle"]} for index, m in enumerate(messages)]
        try:
            answer = sqs.delete_message_batch(QueueUrl=self._queue_url, Entries=entries)
        except Exception as exc:
            logger.warning("worker: could not delete %d job(s) (%s); SQS will redeliver them", len(messages), exc)
            return {m["MessageId"] for m in messages}
        failed = {messages[int(entry["Id"])]["MessageId"] for entry in answer.get("Failed", [])}
        for message in messages:
            if message["MessageId"] in failed:
                logger.warning("worker: could not delete %s; SQS will redeliver it", describe_job(message["Body"]))
        return failed


def scheduled_event(rule_arn: str, now: float) -> dict[str, Any]:
    """The event EventBridge sends a rate rule's target (what chalice turns into a ``CloudWatchEvent``)."""
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": ACCOUNT_ID,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "region": REGION,
        "resources": [rule_arn],
        "detail": {},
    }


def describe_tick(summary: Any) -> str:
    """One line for a tick's summary: ``tick: 9 due, 7 queued; skipped already_queued 2``."""
    if not isinstance(summary, dict):
        return f"tick: sync_schedule returned {summary!r}"
    skipped = summary.get("skipped") or {}
    if isinstance(skipped, dict) and "service_paused" in skipped:
        return "tick: scheduler paused, nothing queued (POST /sync/resume resumes it)"
    line = f"tick: {summary.get('due', '?')} due, {summary.get('queued', '?')} queued"
    if isinstance(skipped, dict) and skipped:
        line += "; skipped " + ", ".join(f"{reason} {count}" for reason, count in skipped.items())
    return line


class ScheduleTicker:
    """What the EventBridge rule does for the schedule Lambda: one scheduled event per tick."""

    def __init__(self, handler: Handler, function_name: str, rule_arn: str, timeout_seconds: float) -> None:
        self._handler = handler
        self._function_name = function_name
        self._rule_arn = rule_arn
        self._timeout_seconds = timeout_seconds
        self._lock = threading.Lock()
        self.summaries: list[Any] = []
        """What each tick that returned returned (the smoke test waits on this)."""

    def invoke(self) -> Any:
        """One tick through the handler; what it returned (a raising handler raises)."""
        now = time.time()
        context = lambda_context(self._function_name, self._timeout_seconds, now)
        summary = self._handler(scheduled_event(self._rule_arn, now), context)
        with self._lock:
            self.summaries.append(summary)
        return summary

    def fire(self) -> Any:
        """One tick through the handler; logs its line. A raising handler is logged, not raised."""
        try:
            summary = self.invoke()
        except Exception:
            logger.exception("tick: sync_schedule raised; the next tick tries again")
            return None
        logger.info(describe_tick(summary))
        return summary


def schedule_loop(
    stop: threading.Event,
    tick: Callable[[], object],
    interval_seconds: float,
    first_delay_seconds: float = FIRST_TICK_DELAY_SECONDS,
) -> None:
    """Call ``tick`` after ``first_delay_seconds``, then every ``interval_seconds`` until ``stop`` is set.

    A fixed rate, like EventBridge: a slow tick does not push the next ones back, and ticks missed while
    one ran long (or the laptop slept) are dropped, not fired in a burst.
    """
    next_at = time.monotonic() + min(first_delay_seconds, interval_seconds)
    while not stop.wait(max(0.0, next_at - time.monotonic())):
        try:
            tick()
        except Exception:  # never let one tick end the schedule
            logger.exception("tick: failed; the next tick tries again")
        next_at += interval_seconds
        now = time.monotonic()
        if next_at <= now:
            next_at += (math.floor((now - next_at) / interval_seconds) + 1) * interval_seconds
